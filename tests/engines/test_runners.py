import json
import shutil

import numpy as np
import pytest
import torch
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.engines import InputError, load
from cfnsr.engines.runners import OnnxRuntimeRunner, OpenVinoRunner, TorchRunner
from cfnsr.errors import ArtifactError, CfnsrError
from cfnsr.model import load_model
from cfnsr.model.summary import example_inputs


def _inputs(batch=3):
    from cfnsr.model import get_config

    v, a = example_inputs(get_config("cfn-sr-tiny"), batch, torch.Generator().manual_seed(11))
    return v.numpy(), a.numpy()


@pytest.fixture(scope="module")
def clips(tiny_cache):
    """Three held-out clips as model inputs (real features: logits of the size the tolerances are meant for)."""
    from cfnsr.data.dataset import CacheDataset

    ds = CacheDataset(tiny_cache, [1])
    items = [ds[i] for i in (0, 17, 41)]
    return np.stack([v.numpy() for v, _, _ in items]), np.stack([a.numpy() for _, a, _ in items])


@pytest.fixture(scope="module")
def reference(trained_tiny, clips):
    video, audio = clips
    with torch.no_grad():
        return load_model(trained_tiny)(torch.from_numpy(video), torch.from_numpy(audio)).numpy()


def test_load_picks_the_runner_from_the_file(trained_tiny, fp32_onnx):
    assert isinstance(load(trained_tiny), TorchRunner)
    assert isinstance(load(fp32_onnx.path), OnnxRuntimeRunner)
    assert isinstance(load(fp32_onnx.path, "openvino"), OpenVinoRunner)
    with pytest.raises(CfnsrError, match="backend tensorrt cannot run a .onnx file"):
        load(fp32_onnx.path, "tensorrt")


@pytest.mark.parametrize("backend, tol", [("torch", 0.0), ("onnxruntime", 1e-4), ("openvino", 1e-3)])
def test_runners_reproduce_torch_logits(backend, tol, trained_tiny, fp32_onnx, reference, clips):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'cfnsr[openvino]')")
    path = trained_tiny if backend == "torch" else fp32_onnx.path
    video, audio = clips
    with load(path, backend) as runner:
        assert runner.labels[4] == "angry" and runner.preprocess["frames"] == 20
        got = runner(video, audio)
    assert got.shape == (3, 8)
    assert np.abs(got - reference).max() <= tol


@pytest.mark.parametrize("backend", ["onnxruntime", "openvino"])
def test_int8_runners_agree_with_torch(backend, int8_onnx, tiny_cache, trained_tiny):
    if backend == "openvino":
        pytest.importorskip("openvino", reason="OpenVINO is not installed (pip install 'cfnsr[openvino]')")
    from cfnsr.engines.validate import validate

    result = validate(int8_onnx.path, trained_tiny, tiny_cache.root, backend=backend, log=lambda *a: None)
    assert result.passed and result.agreement >= 0.95


def test_inputs_are_checked_with_clear_messages(fp32_onnx):
    video, audio = _inputs(2)
    with load(fp32_onnx.path) as r:
        with pytest.raises(InputError, match=r"input 'video': got shape \(2, 3, 20, 32, 32\), "
                                             r"expected float32\[N, 3, 20, 64, 64\]"):
            r(video[..., :32, :32], audio)
        with pytest.raises(InputError, match="input 'audio': got dtype float64, expected float32"):
            r(video, audio.astype(np.float64))
        with pytest.raises(InputError, match="batch sizes 2 and 1"):
            r(video, audio[:1])


def test_inputs_are_named_as_the_artifact_names_them(fp32_onnx):
    from cfnsr.artifact import input_kind
    from cfnsr.errors import ArtifactError

    video, audio = _inputs(2)
    with load(fp32_onnx.path) as r:
        assert r.kind == "features"
        np.testing.assert_array_equal(r(audio=audio, video=video), r(video, audio))
        with pytest.raises(InputError, match="takes inputs video, audio; unknown: frames; missing: video"):
            r(frames=video, audio=audio)
        with pytest.raises(InputError, match="'video' given twice"):
            r(video, video=video, audio=audio)
    assert input_kind({}) == "features" and input_kind({"input_kind": "media"}) == "media"
    with pytest.raises(ArtifactError, match="m.onnx: input kind 'stream'"):
        input_kind({"input_kind": "stream"}, "m.onnx")


def test_a_malformed_preprocess_entry_fails_where_the_artifact_is_opened(fp32_onnx, tmp_path):
    import onnx

    from cfnsr.engines.recognizer import Recognizer
    from cfnsr.errors import ArtifactError
    from cfnsr.export.onnx_graph import set_metadata

    graph = onnx.load(str(fp32_onnx.path))
    set_metadata(graph, preprocess={"frames": 20, "hop_length": -1})
    bad = tmp_path / "bad.onnx"
    onnx.save(graph, str(bad))
    for open_it in (lambda: load(bad).activate(), lambda: Recognizer(bad, device="cpu")):
        with pytest.raises(ArtifactError, match="bad.onnx: its cfnsr.preprocess entry is not a valid"):
            open_it()


def test_corrupt_and_misnamed_artifacts(tmp_path, fp32_onnx, trained_tiny):
    cut = tmp_path / "cut.onnx"
    cut.write_bytes(fp32_onnx.path.read_bytes()[:5000])
    with pytest.raises(ArtifactError, match="cut.onnx"):
        with load(cut):
            pass
    fake = tmp_path / "model.onnx"
    shutil.copy(trained_tiny, fake)
    with pytest.raises(ArtifactError, match="does not look like a .onnx file"):
        load(fake)
    with pytest.raises(ArtifactError, match="unknown artifact type '.bin'"):
        (tmp_path / "x.bin").write_bytes(b"1")
        load(tmp_path / "x.bin")
    with pytest.raises(ArtifactError, match="missing.engine does not exist"):
        load(tmp_path / "missing.engine")


def test_engine_sidecar_mismatch_is_refused(tmp_path):
    from cfnsr.engines.tensorrt import check_compatible, read_sidecar

    side = {"format": "cfnsr-engine", "tensorrt_version": "10.3.0", "gpu": "Orin", "compute_capability": "8.7",
            "source_onnx": "m.int8.onnx", "version_compatible": False, "hardware_compatible": False}
    here = {"gpu": "NVIDIA H100 80GB HBM3", "compute_capability": "9.0"}
    with pytest.raises(ArtifactError) as err:
        check_compatible(side, tmp_path / "m.engine", "11.4.0", here)
    msg = str(err.value)
    assert "built with TensorRT 10.3.0, this is TensorRT 11.4.0" in msg
    assert "built for Orin (compute 8.7), this GPU is NVIDIA H100 80GB HBM3 (compute 9.0)" in msg
    assert "cfnsr build m.int8.onnx" in msg
    check_compatible({**side, "tensorrt_version": "11.4.0", "gpu": here["gpu"], "compute_capability": "9.0"},
                     tmp_path / "m.engine", "11.4.0", here)  # a match passes
    engine = tmp_path / "m.engine"
    engine.write_bytes(b"plan")
    with pytest.raises(ArtifactError, match="has no sidecar m.engine.json"):
        read_sidecar(engine)
    (tmp_path / "m.engine.json").write_text("{")
    with pytest.raises(ArtifactError, match="not valid JSON"):
        read_sidecar(engine)


def test_validate_cli(fp32_onnx, trained_tiny, tiny_cache, tmp_path):
    runner = CliRunner()
    out = tmp_path / "v.json"
    res = runner.invoke(main, ["validate", str(fp32_onnx.path), "--reference", str(trained_tiny), "--data",
                               str(tiny_cache.root), "--clips", "16", "--json", str(out)])
    assert res.exit_code == 0, res.output
    v = json.loads(out.read_text())
    assert v["passed"] and v["agreement"] == 1.0 and v["max_abs_logit"] <= 1e-3 and v["clips"] == 16
    res = runner.invoke(main, ["validate", str(fp32_onnx.path), "--reference", str(trained_tiny), "--data",
                               str(tiny_cache.root), "--clips", "16", "--max-abs-logit", "1e-9"])
    assert res.exit_code == 3 and "failed the fp32 gate" in res.output
    # An artifact checked against a different checkpoint is refused.
    other = tmp_path / "other.pt"
    from cfnsr.model import create_model, save_checkpoint

    save_checkpoint(other, create_model("cfn-sr-tiny"))
    res = runner.invoke(main, ["validate", str(fp32_onnx.path), "--reference", str(other), "--data",
                               str(tiny_cache.root)])
    assert res.exit_code == 1 and "exported from another checkpoint" in res.output


def test_bench_reports(fp32_onnx, trained_tiny, tmp_path):
    out = tmp_path / "bench.json"
    res = CliRunner().invoke(main, ["bench", str(fp32_onnx.path), "--reference", str(trained_tiny), "--batch", "1,2",
                                    "--iters", "3", "--warmup", "1", "--threads", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert report["baseline"].startswith("best.pt") and report["threads"] == 2
    assert {"processor", "cpu_count", "python"} <= set(report["machine"])
    rows = report["results"]
    assert [(r["backend"], r["batch"]) for r in rows] == [("torch", 1), ("torch", 2), ("onnxruntime", 1),
                                                          ("onnxruntime", 2)]
    for r in rows:
        assert {"mean_ms", "p50_ms", "p90_ms", "p99_ms", "min_ms", "throughput_clips_s", "speedup_vs_first"} <= set(r)
        assert r["min_ms"] <= r["p50_ms"] <= r["p99_ms"] and r["runs"] == 3
        base = next(b for b in rows if b["batch"] == r["batch"])
        assert r["speedup_vs_first"] == pytest.approx(base["mean_ms"] / r["mean_ms"])
    assert rows[2]["agreement_vs_first"] == 1.0
    assert (tmp_path / "bench.md").read_text().startswith("# cfnsr bench")
    assert (tmp_path / "bench.png").read_bytes()[:4] == b"\x89PNG"


def test_predict_returns_the_clips_emotion(synth_raw, trained_tiny, fp32_onnx):
    """One strong-intensity clip per emotion from test actors 1 and 2 (never trained on), through the CLI."""
    from cfnsr.artifact import EMOTIONS
    from cfnsr.data.ravdess import parse_name

    clips = [f"Actor_0{1 + e % 2}/01-01-0{e + 1}-0{1 if e == 0 else 2}-0{1 + e % 2}-01-0{1 + e % 2}.mp4"
             for e in range(8)]
    for model in (trained_tiny, fp32_onnx.path):
        correct = 0
        for clip in clips:
            res = CliRunner().invoke(main, ["predict", str(synth_raw / clip), "--model", str(model), "--json"])
            assert res.exit_code == 0, res.output
            r = json.loads(res.output)
            assert r["crop"] == "landmarks" and len(r["probabilities"]) == 8
            assert abs(sum(r["probabilities"].values()) - 1) < 1e-6
            assert r["emotion"] == max(r["probabilities"], key=r["probabilities"].get)
            correct += r["emotion"] == EMOTIONS[parse_name(clip).label]
        assert correct >= 7, (model, correct)


def test_predict_errors_say_what_was_tried(tmp_path, fp32_onnx, video_without_audio):
    from cfnsr.data.synth import AUDIO_RATE, FPS, HEIGHT, WIDTH, write_clip

    lone = tmp_path / "clip.mp4"  # speech but no face, and no landmark file
    t = np.arange(int(3.3 * AUDIO_RATE)) / AUDIO_RATE
    write_clip(lone, [np.full((HEIGHT, WIDTH, 3), 90, np.uint8)] * int(3.3 * FPS),
               (0.3 * np.sin(2 * np.pi * 200 * t)).astype(np.float32))
    res = CliRunner().invoke(main, ["predict", str(lone), "--model", str(fp32_onnx.path)])
    assert res.exit_code == 1
    assert "no face found" in res.output and "landmark file (none found)" in res.output and "Haar" in res.output
    res = CliRunner().invoke(main, ["predict", str(lone), "--model", str(fp32_onnx.path), "--allow-center-crop"])
    assert res.exit_code == 0 and "face: center" in res.output
    res = CliRunner().invoke(main, ["predict", str(video_without_audio), "--model", str(fp32_onnx.path),
                                    "--allow-center-crop"])
    assert res.exit_code == 1 and "has no audio track" in res.output


@pytest.mark.tensorrt
def test_tensorrt_build_and_run_matches_torch(fp32_onnx, trained_tiny, reference, clips, tmp_path):
    from cfnsr.export.engine import BuildOptions, build_engine

    engine = build_engine(fp32_onnx.path, tmp_path / "m.engine",
                          BuildOptions(batch=(1, 2, 4), timing_cache_dir=tmp_path / "tc"), log=lambda *a: None)
    side = json.loads((tmp_path / "m.engine.json").read_text())
    assert side["precision"] == "fp32" and side["profile"]["batch"] == [1, 2, 4]
    assert len(list((tmp_path / "tc").glob("timing-*.cache"))) == 1
    video, audio = clips
    with load(engine) as r:  # plain: Polygraphy's TrtRunner
        got = r(video, audio)
        assert r.last_device_ms is None
    assert np.abs(got - reference).max() < 1e-2
    for graph in (False, True):  # own session: CUDA events on the runner's stream, optional graph replay
        with load(engine, cuda_graph=graph, device_timing=True) as r:
            got = r(video, audio)
            assert r.last_device_ms is not None and r.last_device_ms > 0
        assert np.abs(got - reference).max() < 1e-2
