"""--device on bench, validate and predict: where each backend runs, and refusals instead of silent changes."""

import json

import pytest
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.engines import bench as bench_mod
from cfnsr.engines import cuda_available, device_options
from cfnsr.errors import CfnsrError

needs_no_gpu = pytest.mark.skipif(cuda_available(), reason="checks the refusals of a machine without a CUDA GPU")


def test_device_options_per_backend(tmp_path):
    assert device_options(tmp_path / "m.pt", None, "cpu") == {"device": "cpu"}
    assert device_options(tmp_path / "m.onnx", None, "cpu") == {"providers": ["CPUExecutionProvider"]}
    assert device_options(tmp_path / "m.onnx", "openvino", "cpu") == {}
    assert device_options(tmp_path / "m.pt", None, None) == {}  # not asked: the runner's default
    auto = device_options(tmp_path / "m.pt", None, "auto")["device"]
    assert auto == ("cuda" if cuda_available() else "cpu")
    with pytest.raises(CfnsrError, match="OpenVINO backend runs on the CPU"):
        device_options(tmp_path / "m.onnx", "openvino", "cuda")
    with pytest.raises(CfnsrError, match="TensorRT engines run on NVIDIA GPUs only"):
        device_options(tmp_path / "m.engine", None, "cpu")
    with pytest.raises(CfnsrError, match="unknown --device 'gpu'"):
        device_options(tmp_path / "m.pt", None, "gpu")


@needs_no_gpu
def test_cuda_without_a_gpu_is_refused_with_the_fix(fp32_onnx, trained_tiny):
    with pytest.raises(CfnsrError, match="no CUDAExecutionProvider; install onnxruntime-gpu"):
        device_options(fp32_onnx.path, None, "cuda")
    res = CliRunner().invoke(main, ["bench", "--reference", str(trained_tiny), "--device", "cuda", "--iters", "1"])
    assert res.exit_code != 0 and "sees no CUDA GPU" in res.output and "Traceback" not in res.output


def test_bench_records_the_device_of_each_row(fp32_onnx, trained_tiny, tmp_path):
    out = tmp_path / "b.json"
    pytest.importorskip("openvino")
    res = CliRunner().invoke(main, ["bench", str(fp32_onnx.path), str(fp32_onnx.path), "--backend", "onnxruntime",
                                    "--backend", "openvino", "--reference", str(trained_tiny), "--device", "cpu",
                                    "--warmup", "1", "--iters", "2", "--json", str(out)])
    assert res.exit_code == 0, res.output
    report = json.loads(out.read_text())
    assert [r["runs_on"] for r in report["results"]] == ["cpu"] * 3 and report["mixed_devices_note"] is None
    assert "onnxruntime (cpu)" in out.with_suffix(".md").read_text()


def test_mixed_devices_are_said_in_the_report_header(monkeypatch, tmp_path):
    """A GPU artifact against a CPU reference: the ratios compare devices, and the header says so."""
    import numpy as np

    from cfnsr.engines.base import TensorSpec

    class Fake:
        def __init__(self, device):
            self.device, self.backend, self.metadata, self.last_device_ms = device, "fake", {"precision": "fp32"}, None
            self.input_spec = (TensorSpec("video", (None, 2)), TensorSpec("audio", (None, 2)))

        def __enter__(self):
            return self

        def __exit__(self, *a):
            pass

        def __call__(self, video, audio):  # named, as runners are called
            return np.zeros((video.shape[0], 8), np.float32)

    monkeypatch.setattr(bench_mod, "load",
                        lambda path, backend, **o: Fake("cuda" if path.suffix == ".engine" else "cpu"))
    monkeypatch.setattr(bench_mod, "device_options", lambda *a: {})
    entries = [bench_mod.Entry("ref", tmp_path / "m.pt", "torch"), bench_mod.Entry("engine", tmp_path / "m.engine")]
    report = bench_mod.bench(entries, (1,), warmup=0, iters=2, log=lambda *a: None)
    assert report["devices"] == ["cpu", "cuda"] and "compare a GPU with a CPU" in report["mixed_devices_note"]
    assert "**Note: rows run on different devices (cpu and cuda)" in bench_mod.markdown(report)


def test_validate_and_predict_take_device(fp32_onnx, trained_tiny, tiny_cache, synth_raw):
    res = CliRunner().invoke(main, ["validate", str(fp32_onnx.path), "--reference", str(trained_tiny), "--data",
                                    str(tiny_cache.root), "--clips", "8", "--device", "cpu"])
    assert res.exit_code == 0 and "onnxruntime on cpu vs torch on cpu" in res.output, res.output
    clip = synth_raw / "Actor_01" / "01-01-05-02-01-01-01.mp4"
    res = CliRunner().invoke(main, ["predict", str(clip), "--model", str(fp32_onnx.path), "--json", "--device", "cpu"])
    assert res.exit_code == 0, res.output
    assert json.loads(res.output)["device"] == "cpu"
    res = CliRunner().invoke(main, ["predict", str(clip), "--model", str(fp32_onnx.path), "--backend", "openvino",
                                    "--device", "cuda"])
    assert res.exit_code != 0 and "OpenVINO backend runs on the CPU" in res.output
