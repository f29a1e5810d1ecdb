import pytest
import torch
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.errors import CheckpointError
from cfnsr.model import create_model, load_checkpoint, load_model, save_checkpoint
from cfnsr.model.original import from_original_fused, from_original_unimodal, to_original


def _logits(model, inputs):
    with torch.no_grad():
        return model(*inputs)


def test_save_and_load_model_round_trip(tmp_path, tiny_model, tiny_inputs):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model, metrics={"acc": 0.5})
    # The file is safe to read with weights_only=True (no pickled classes).
    raw = torch.load(path, weights_only=True)
    assert raw["model_config"]["name"] == "cfn-sr-tiny" and raw["metrics"] == {"acc": 0.5}
    loaded = load_model(path)
    assert not loaded.training
    torch.testing.assert_close(_logits(loaded, tiny_inputs), _logits(tiny_model, tiny_inputs), rtol=0, atol=0)


def test_load_model_errors_name_the_file(tmp_path, tiny_model):
    with pytest.raises(CheckpointError, match="missing.pt does not exist"):
        load_model(tmp_path / "missing.pt")
    bad = tmp_path / "corrupt.pt"
    save_checkpoint(bad, tiny_model)
    bad.write_bytes(bad.read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="cannot read checkpoint .*corrupt.pt"):
        load_model(bad)
    plain = tmp_path / "plain.pt"
    torch.save(to_original(tiny_model), plain)
    with pytest.raises(CheckpointError, match="not a cfnsr checkpoint.*import-original --fused"):
        load_model(plain)


def test_checkpoint_that_does_not_match_its_config(tmp_path, tiny_model):
    path = save_checkpoint(tmp_path / "m.pt", tiny_model)
    ckpt = load_checkpoint(path)
    ckpt["model_config"]["planes"] = [64, 64, 128, 256]
    torch.save(ckpt, path)
    with pytest.raises(CheckpointError, match=r"does not match the model configuration 'cfn-sr-tiny': wrong shapes"):
        load_model(path)


def test_checkpoint_is_typed_and_a_malformed_entry_names_the_file(tmp_path, tiny_model):
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.splits import make_split
    from cfnsr.model import Checkpoint

    spec, split = PreprocessSpec.for_model(tiny_model.config), make_split(range(1, 9), "honest", 1, 4)
    path = save_checkpoint(tmp_path / "m.pt", tiny_model, preprocess=spec.to_dict(), split=split.to_dict(), epoch=3)
    ckpt = Checkpoint.load(path)
    assert (ckpt.config, ckpt.preprocess, ckpt.split, ckpt.epoch) == (tiny_model.config, spec, split, 3)
    assert len(ckpt.sha256) == 64 and not ckpt.model().training
    for key, value, expected in (("preprocess", {"frames": 20, "sample_rate": 8000}, "invalid preprocess"),
                                 ("split", {"protocol": "honest"}, "invalid split"),
                                 ("model_config", {"name": "x", "colour": 1}, "invalid model_config")):
        raw = load_checkpoint(path)
        raw[key] = value
        bad = tmp_path / f"bad-{key}.pt"
        torch.save(raw, bad)
        with pytest.raises(CheckpointError, match=f"bad-{key}.pt: {expected}"):
            Checkpoint.load(bad)


def test_import_published_fused_layout(tmp_path, tiny_model, tiny_inputs):
    sd = to_original(tiny_model)
    assert "msaf.0.audio_attention.layers.0.self_attn.in_proj_weight" in sd
    assert "video_model_blocks.0.3.0.conv1.weight" in sd and "audio_model_blocks.0.0.weight" in sd and "fc.weight" in sd
    # DataParallel-prefixed files are accepted too.
    path = tmp_path / "fold_1_msaf_ravdess_best.pth"
    torch.save({f"module.{k}": v for k, v in sd.items()}, path)
    imported = from_original_fused(path, tiny_model.config)
    torch.testing.assert_close(_logits(imported, tiny_inputs), _logits(tiny_model, tiny_inputs), rtol=0, atol=0)


def test_import_published_fused_reports_every_problem(tiny_model):
    sd = to_original(tiny_model)
    del sd["fc.bias"]
    sd["msaf.0.extra.weight"] = torch.zeros(1)
    sd["audio_model_blocks.0.0.weight"] = torch.zeros(3, 3, 3)
    with pytest.raises(CheckpointError) as err:
        from_original_fused(sd, tiny_model.config)
    msg = str(err.value)
    assert "missing keys (1): fc.bias" in msg
    assert "unexpected keys (1): msaf.0.extra.weight" in msg
    assert "wrong shapes (1): audio_model_blocks.0.0.weight: file (3, 3, 3), model (32, 13, 7)" in msg


def _unimodal_state_dicts(model):
    sd = model.state_dict()
    video = {k[len("video."):]: v for k, v in sd.items() if k.startswith("video.")}
    video["fc.weight"], video["fc.bias"] = torch.zeros(8, model.config.video_features), torch.zeros(8)
    audio = {k[len("audio."):]: v for k, v in sd.items() if k.startswith("audio.")}
    audio["fc1.weight"], audio["fc1.bias"] = torch.zeros(8, model.config.audio_features), torch.zeros(8)
    return video, audio


def test_import_published_unimodal(tmp_path, tiny_model):
    video, audio = _unimodal_state_dicts(tiny_model)
    torch.save(video, tmp_path / "fold_1_resnext50_best.pth")
    torch.save(audio, tmp_path / "fold_1_mfccNet_best.pth")
    model = from_original_unimodal(tmp_path / "fold_1_resnext50_best.pth", tmp_path / "fold_1_mfccNet_best.pth",
                                   tiny_model.config)
    for k, v in tiny_model.state_dict().items():
        if k.startswith(("video.", "audio.")):
            assert torch.equal(model.state_dict()[k], v), k
    del video["layer4.0.conv1.weight"]
    with pytest.raises(CheckpointError, match="missing keys \\(1\\): layer4.0.conv1.weight"):
        from_original_unimodal(video, audio, tiny_model.config)


def test_cli_import_original_and_refuses_to_overwrite(tmp_path, tiny_model, tiny_inputs):
    src = tmp_path / "fold_1_msaf_ravdess_best.pth"
    torch.save(to_original(tiny_model), src)
    out = tmp_path / "model.pt"
    runner = CliRunner()
    res = runner.invoke(main, ["import-original", "--fused", str(src), "--config", "cfn-sr-tiny", "-o", str(out)])
    assert res.exit_code == 0, res.output
    ckpt = load_checkpoint(out)
    assert ckpt["preprocess"]["msaf_compat"] is True and ckpt["preprocess"]["channel_order"] == "bgr"
    torch.testing.assert_close(_logits(load_model(out), tiny_inputs), _logits(tiny_model, tiny_inputs))
    before = out.read_bytes()
    res = runner.invoke(main, ["import-original", "--fused", str(src), "--config", "cfn-sr-tiny", "-o", str(out)])
    assert res.exit_code != 0 and "already exists; pass --force" in res.output
    assert out.read_bytes() == before
    res = runner.invoke(main, ["import-original", "--fused", str(src), "-o", str(tmp_path / "x.pt")])
    assert res.exit_code != 0 and "does not match the published CFN-SR layout for configuration 'cfn-sr'" in res.output
    assert not (tmp_path / "x.pt").exists()
    res = runner.invoke(main, ["import-original", "--fused", str(src), "--video", str(src),
                               "-o", str(tmp_path / "y.pt")])
    assert res.exit_code == 2 and "either --fused, or both --video and --audio" in res.output


def test_paper_checkpoint_import_round_trip():
    model = create_model("cfn-sr").eval()
    imported = from_original_fused(to_original(model))
    for k, v in model.state_dict().items():
        assert torch.equal(imported.state_dict()[k], v)
