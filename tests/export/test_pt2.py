"""``cfnsr export --format pt2``: the AOTInductor package of the C++ runtime's libtorch backend."""

import json

import numpy as np
import pytest

from cfnsr.errors import CfnsrError
from cfnsr.export.formats import resolve
from cfnsr.export.pipeline import ExportOptions, export
from cfnsr.model.checkpoint import load_checkpoint


def test_pt2_is_fp32_only():
    assert resolve("pt2", "fp32") == ["pt2"]
    for precision in ("fp16", "int8"):
        with pytest.raises(CfnsrError, match="pt2 is fp32 only"):
            resolve("pt2", precision)


def test_options_a_format_or_precision_does_not_take_are_refused(trained_tiny, tmp_path):
    """The formats table says which options each format takes; anything else is refused in one place, never
    ignored."""
    cases = [
        (ExportOptions("fp32", tmp_path / "m.onnx", fmt="onnx", max_batch=16),
         "--max-batch does not apply to --format onnx"),
        (ExportOptions("fp32", tmp_path / "m.pt2", fmt="pt2", check_trt=False),
         "--no-trt-check does not apply to --format pt2"),
        (ExportOptions("fp32", tmp_path / "m.pt2", fmt="pt2", calib_method="minmax"), "--calib-method does not apply"),
        (ExportOptions("fp16", tmp_path / "m.onnx", fmt="onnx", int8_scope="no-stem"),
         "--int8-scope applies to --precision int8 only"),
    ]
    for opts, message in cases:
        with pytest.raises(CfnsrError, match=message):
            export(trained_tiny, opts, log=lambda *a: None)
    assert not list(tmp_path.iterdir())  # nothing written


def test_pt2_refuses_cuda_without_gpu(trained_tiny, tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("a GPU is visible")
    with pytest.raises(CfnsrError, match="no CUDA GPU is visible"):
        export(trained_tiny, ExportOptions("fp32", tmp_path / "m.pt2", fmt="pt2", device="cuda"), log=lambda *a: None)


def test_pt2_export_gated_and_reported(tiny_pt2, fp32_onnx):
    assert tiny_pt2.passed and tiny_pt2.path.suffix == ".pt2"
    assert fp32_onnx.path.with_suffix(".pt2") == tiny_pt2.path  # side by side: each keeps its own report
    assert json.loads(fp32_onnx.path.with_name("m.fp32.report.json").read_text())["format"] == "onnx"
    report = json.loads(tiny_pt2.path.with_name("m.fp32.pt2.report.json").read_text())
    assert report["format"] == "pt2" and report["device"] == "cpu" and report["max_batch"] == 8
    gate = report["gate"]
    assert gate["reference_accuracy"] is not None, "the gate ran on held-out clips, not random inputs"
    assert gate["agreement"] == 1.0 and gate["max_abs_logit"] <= 1e-4
    assert "pt2" in tiny_pt2.path.with_name("m.fp32.pt2.report.md").read_text()
    assert tiny_pt2.path.stat().st_mode & 0o044, "the package is readable by others, like any file open() writes"


def test_pt2_refuses_overwrite(tiny_pt2, trained_tiny):
    before = tiny_pt2.path.stat().st_mtime_ns
    with pytest.raises(CfnsrError, match="already exists"):
        export(trained_tiny, ExportOptions("fp32", tiny_pt2.path, fmt="pt2"), log=lambda *a: None)
    assert tiny_pt2.path.stat().st_mtime_ns == before


def test_aoti_runner_reads_metadata_and_matches_torch(tiny_pt2, trained_tiny, tiny_inputs):
    from cfnsr.engines import InputError, load
    from cfnsr.model.checkpoint import load_checkpoint

    video, audio = (t.numpy() for t in tiny_inputs)
    with load(tiny_pt2.path) as aoti, load(trained_tiny) as ref:
        assert aoti.backend == "aoti"
        assert aoti.metadata["schema"] == 1 and aoti.metadata["max_batch"] == 8
        assert aoti.preprocess == load_checkpoint(trained_tiny)["preprocess"]
        assert aoti.labels[0] == "neutral"
        np.testing.assert_allclose(aoti(video, audio), ref(video, audio), atol=1e-4)
        with pytest.raises(InputError, match="maximum batch 8"):
            aoti(np.repeat(video[:1], 9, 0), np.repeat(audio[:1], 9, 0))
        with pytest.raises(InputError, match="'audio'"):
            aoti(video, audio[:, :5])


def test_pt2_sniffed_as_zip(tmp_path):
    from cfnsr.engines import load
    from cfnsr.errors import ArtifactError

    bad = tmp_path / "model.pt2"
    bad.write_bytes(b"\x08not a zip")
    with pytest.raises(ArtifactError, match="does not look like a .pt2"):
        load(bad)


def test_run_isolated_matches_in_process(tiny_pt2, tiny_inputs):
    """The fresh-process path the gate takes for CUDA packages gives the in-process logits."""
    from cfnsr.engines import load
    from cfnsr.errors import ArtifactError
    from cfnsr.export.pt2 import run_isolated

    video, audio = (t.numpy() for t in tiny_inputs)
    with load(tiny_pt2.path) as aoti:
        isolated = run_isolated(tiny_pt2.path, {"video": video, "audio": audio}, batch=2)
        np.testing.assert_allclose(isolated, aoti(video, audio), rtol=1e-5, atol=1e-4)
    with pytest.raises(ArtifactError, match="fresh process failed"):
        run_isolated(tiny_pt2.path.with_name("missing.pt2"), {"video": video, "audio": audio})


def test_media_pt2_package_matches_the_media_onnx(trained_tiny, media_pt2, media_onnx):
    """--inputs media works for AOTInductor packages too: same inputs, same logits as the media ONNX file. The
    package takes at most 2 clips; its gate ran 4 through it in batches of 2."""
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.engines import load
    from cfnsr.export.frontend import media_example_inputs

    assert media_pt2.passed, media_pt2.report["gate"]
    assert media_pt2.report["max_batch"] == 2
    spec = PreprocessSpec.from_dict(load_checkpoint(trained_tiny)["preprocess"])
    frames, pcm = (t.numpy() for t in media_example_inputs(spec, 2))
    with load(media_pt2.path) as pkg, load(media_onnx.path) as ort:
        assert [s.name for s in pkg.input_spec] == ["frames", "pcm"]
        np.testing.assert_allclose(pkg(frames, pcm), ort(frames, pcm), rtol=1e-4, atol=1e-3)
        np.testing.assert_allclose(pkg(pcm=pcm, frames=frames), ort(frames=frames, pcm=pcm), rtol=1e-4, atol=1e-3)
    # The fresh-process path (CUDA packages' gate) keeps each input's dtype: uint8 crops stay uint8.
    from cfnsr.export.pt2 import run_isolated

    with load(media_pt2.path) as pkg:
        np.testing.assert_allclose(run_isolated(media_pt2.path, {"frames": frames, "pcm": pcm}, batch=2),
                                   pkg(frames=frames, pcm=pcm), rtol=1e-5, atol=1e-4)
