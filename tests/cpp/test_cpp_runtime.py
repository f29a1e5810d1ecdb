"""The C++ runtime (cpp/): built with CMake, installed, linked by an application through find_package, and
compared with the Python runtime on the same inputs. Error paths are checked through the C interface and the
example program's exit status (the cfnsr_status code).

The toolchain (cmake, a C/C++ compiler, nlohmann-json3-dev) is installed by scripts/setup.sh. Without it these
tests skip, except where CFNSR_REQUIRE_CPP=1 (CI) turns the skip into a failure.
"""

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
from cpptools import CPP, STATUS, generator, rewrite_pt2, step, unavailable
from cpptools import run as _run


def infer(cpp, model, *args) -> tuple[int, dict | None, str]:
    r = _run([cpp.infer, model, *args])
    return r.returncode, (json.loads(r.stdout) if r.returncode == 0 else None), r.stderr


def _save(folder: Path, video, audio) -> list[str]:
    folder.mkdir(parents=True, exist_ok=True)
    np.save(folder / "video.npy", np.ascontiguousarray(video, np.float32))
    np.save(folder / "audio.npy", np.ascontiguousarray(audio, np.float32))
    return ["--video", str(folder / "video.npy"), "--audio", str(folder / "audio.npy")]


@pytest.fixture(scope="module")
def held_out(tiny_cache, trained_tiny):
    """Five held-out clips of the trained model's test actors."""
    from cfnsr.data.splits import Split
    from cfnsr.engines.accuracy import held_out_arrays
    from cfnsr.model.checkpoint import load_checkpoint

    split = Split.from_dict(load_checkpoint(trained_tiny)["split"])
    video, audio, labels = held_out_arrays(tiny_cache, split, 5, log=lambda *a: None)
    return video, audio, labels


def test_cpp_matches_python_runtime(cpp, aoti, tiny_pt2, fp32_onnx, trained_tiny, held_out, tmp_path):
    from cfnsr.engines import load

    video, audio, _ = held_out
    rc, out, err = infer(cpp, tiny_pt2.path, *_save(tmp_path, video, audio), "--threads", "2")
    assert rc == 0, err
    assert out["backend"] == "aoti" and out["device"] == "cpu" and out["batch_range"] == [1, 8]
    logits = np.array(out["logits"])
    assert logits.shape == (5, 8)
    for artifact in (tiny_pt2.path, fp32_onnx.path, trained_tiny):  # same package in Python, ONNX Runtime, torch
        with load(artifact) as runner:
            ref = runner(video, audio)
        np.testing.assert_allclose(logits, ref, atol=1e-4, rtol=0, err_msg=f"C++ vs Python on {artifact.name}")
    p = np.exp(logits - logits.max(1, keepdims=True))
    np.testing.assert_allclose(out["probabilities"], p / p.sum(1, keepdims=True), atol=1e-6)
    assert out["top1"] == [out["labels"][i] for i in logits.argmax(1)]


def test_cpp_batch_one_matches_batch_five(cpp, aoti, tiny_pt2, held_out, tmp_path):
    video, audio, _ = held_out
    _, five, _ = infer(cpp, tiny_pt2.path, *_save(tmp_path / "five", video, audio))
    rc, one, err = infer(cpp, tiny_pt2.path, *_save(tmp_path / "one", video[3:4], audio[3:4]))
    assert rc == 0, err
    np.testing.assert_allclose(one["logits"][0], five["logits"][3], atol=1e-5)


def test_c_interface_checks(cpp, aoti, tiny_pt2):
    r = _run([cpp.c_check, tiny_pt2.path])
    assert r.returncode == 0, r.stdout + r.stderr
    assert "0 failed" in r.stdout and r.stdout.count("\nok ") >= 25


def test_info_reads_package_metadata(cpp, aoti, tiny_pt2, trained_tiny):
    from cfnsr.model.checkpoint import load_checkpoint

    rc, out, err = infer(cpp, tiny_pt2.path, "--info")
    assert rc == 0, err
    assert out["labels"][:2] == ["neutral", "calm"] and out["precision"] == "fp32"
    assert out["metadata"]["preprocess"] == load_checkpoint(trained_tiny)["preprocess"]
    assert out["metadata"]["inputs"][0]["shape"] == ["batch", 3, 20, 64, 64]


def test_cpp_error_paths(cpp, aoti, tiny_pt2, fp32_onnx, held_out, tmp_path):
    video, audio, _ = held_out
    good = _save(tmp_path / "good", video[:2], audio[:2])

    rc, _, err = infer(cpp, tmp_path / "missing.pt2", *good)
    assert rc == STATUS["file_not_found"] and "missing.pt2 does not exist" in err

    rc, _, err = infer(cpp, fp32_onnx.path, *good)
    assert rc == STATUS["backend_unavailable"] and "cfnsr build" in err

    truncated = tmp_path / "truncated.pt2"
    truncated.write_bytes(tiny_pt2.path.read_bytes()[:4096])
    rc, _, err = infer(cpp, truncated, *good)
    assert rc == STATUS["invalid_artifact"] and "truncated.pt2" in err

    not_zip = tmp_path / "renamed.pt2"
    not_zip.write_bytes(fp32_onnx.path.read_bytes())
    rc, _, err = infer(cpp, not_zip, *good)
    assert rc == STATUS["invalid_artifact"] and "not an AOTInductor package" in err

    rc, _, err = infer(cpp, tiny_pt2.path, *_save(tmp_path / "bins", video[:2], audio[:2, :12]))
    assert rc == STATUS["input_size"] and "input 'audio'" in err and "[2, 13, 212]" in err

    rc, _, err = infer(cpp, tiny_pt2.path, *_save(tmp_path / "batch", video[:2], audio[:1]))
    assert rc == STATUS["input_size"] and "audio" in err

    media = rewrite_pt2(tiny_pt2.path, tmp_path / "media.pt2", **{"cfnsr.input_kind": "media"})
    rc, _, err = infer(cpp, media, *good)  # says media, describes features tensors
    assert rc == STATUS["invalid_artifact"] and "no tensor 'frames'" in err
    later = rewrite_pt2(tiny_pt2.path, tmp_path / "stream.pt2", **{"cfnsr.input_kind": "stream"})
    rc, _, err = infer(cpp, later, *good)
    assert rc == STATUS["version_mismatch"] and "input kind 'stream'" in err
    newer = rewrite_pt2(tiny_pt2.path, tmp_path / "newer.pt2", **{"cfnsr.schema": "2", "cfnsr.version": "9.0"})
    rc, _, err = infer(cpp, newer, *good)
    assert rc == STATUS["version_mismatch"] and "schema 2" in err and "cfnsr 9.0" in err

    other_arch = rewrite_pt2(tiny_pt2.path, tmp_path / "arm.pt2", AOTI_MACHINE="aarch64" if os.uname().machine
                              != "aarch64" else "x86_64")
    rc, _, err = infer(cpp, other_arch, *good)
    assert rc == STATUS["version_mismatch"] and "compiled for" in err

    flags = Path("/proc/cpuinfo").read_text() if Path("/proc/cpuinfo").exists() else ""
    if os.uname().machine == "x86_64" and " avx512f" not in flags:
        avx512 = rewrite_pt2(tiny_pt2.path, tmp_path / "avx512.pt2", AOTI_CPU_ISA="AVX512")
        rc, _, err = infer(cpp, avx512, *good)
        assert rc == STATUS["version_mismatch"] and "lacks avx512f" in err

    engine = tmp_path / "model.engine"
    engine.write_bytes(b"not a real plan")
    rc, _, err = infer(cpp, engine, *good)
    assert rc == STATUS["file_not_found"] and "has no sidecar" in err

    from cfnsr.artifact import read_metadata

    sidecar = {"format": "cfnsr-engine", "tensorrt_version": "10.3.0.30", "gpu": "Orin", "compute_capability": "8.7",
               "profile": {"batch": [1, 1, 8]}, "source_onnx": str(fp32_onnx.path),
               "cfnsr": read_metadata(fp32_onnx.path)}
    Path(str(engine) + ".json").write_text(json.dumps({**sidecar, "cfnsr": {**sidecar["cfnsr"], "schema": 3}}))
    rc, _, err = infer(cpp, engine, *good)
    assert rc == STATUS["version_mismatch"] and "schema 3" in err

    Path(str(engine) + ".json").write_text("{not json")
    rc, _, err = infer(cpp, engine, *good)
    assert rc == STATUS["invalid_artifact"] and "not valid JSON" in err

    Path(str(engine) + ".json").write_text(json.dumps(sidecar))
    rc, _, err = infer(cpp, engine, "--info")
    if "tensorrt" not in _run([cpp.c_check, "/nonexistent"]).stdout:
        assert rc == STATUS["backend_unavailable"] and "built without TensorRT" in err

    rc, _, err = infer(cpp, tmp_path / "model.bin")
    assert rc == 64 or rc == STATUS["file_not_found"]


def test_ctest_runs_the_logic_checks(cpp):
    """The C++ logic that needs no artifact and no Python (softmax, open errors, the media building blocks) is a
    CTest target: CI runs it here, and `ctest --test-dir BUILD` runs it anywhere."""
    if shutil.which("ctest") is None:
        pytest.skip("ctest is not installed")
    r = _run(["ctest", "--output-on-failure"], cwd=cpp.build)
    assert r.returncode == 0 and "cfnsr_logic" in r.stdout and "100% tests passed" in r.stdout, r.stdout + r.stderr
    if cpp.media:
        assert "frame_indices: MSAF's i * n / count" in _run([cpp.build / "cfnsr_logic_check"]).stdout


def test_only_the_api_is_exported(cpp):
    if shutil.which("nm") is None:
        pytest.skip("nm is not installed")
    r = _run(["nm", "-D", "--defined-only", "-C", cpp.lib])
    assert r.returncode == 0, r.stderr
    names = [line.split(" ", 2)[-1] for line in r.stdout.splitlines()]
    assert {"cfnsr_open", "cfnsr_run", "cfnsr_last_error", "cfnsr_close"} <= set(names)
    leaked = [n for n in names if n.startswith(("at::", "c10::", "torch::", "nlohmann::", "nvinfer1::"))]
    assert not leaked, f"implementation symbols exported: {leaked[:5]}"


def _tensorrt_include() -> Path | None:
    arch = f"{os.uname().machine}-linux-gnu"
    for root in filter(None, (os.environ.get("TensorRT_ROOT"), "/usr", "/usr/local/tensorrt", "/opt/tensorrt")):
        for inc in (Path(root) / "include", Path(root) / "include" / arch):
            if (inc / "NvInfer.h").is_file():
                return inc
    return None


def _cuda_include() -> Path | None:
    import importlib.util

    candidates = [Path(p) / "include" for p in filter(None, (os.environ.get("CUDA_HOME"), os.environ.get("CUDA_PATH")))]
    candidates.append(Path("/usr/local/cuda/include"))
    spec = importlib.util.find_spec("nvidia")
    for base in (spec.submodule_search_locations if spec else []):  # CUDA runtime headers of the pip wheels
        candidates += sorted(Path(base).glob("*/include"))
    return next((c for c in candidates if (c / "cuda_runtime_api.h").is_file()), None)


def test_tensorrt_backend_compiles():
    """The TensorRT backend against whatever TensorRT headers are here (TensorRT_ROOT), warnings as errors.

    Linking and running need libnvinfer and a GPU; this checks the source against the headers' API."""
    trt, cuda = _tensorrt_include(), _cuda_include()
    if trt is None or cuda is None:
        pytest.skip("no TensorRT headers (NvInfer.h; set TensorRT_ROOT) or CUDA runtime headers here")
    compiler = shutil.which("c++")
    if compiler is None:
        unavailable("no C++ compiler")
    r = _run([compiler, "-std=c++17", "-fsyntax-only", "-Wall", "-Wextra", "-Werror", "-I", CPP / "include",
              "-isystem", trt, "-isystem", cuda, CPP / "src" / "backend_tensorrt.cpp"])
    assert r.returncode == 0, r.stderr[-3000:]


def test_runtime_builds_without_aotinductor(tmp_path):
    """A libtorch without the AOTInductor package loader (JetPack 6.1's torch 2.5.0a0): configure and build still
    pass with CFNSR_WITH_AOTI=AUTO, and say why the backend is missing."""
    missing = [t for t in ("cmake", "cc", "c++") if shutil.which(t) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not found")
    old_torch = tmp_path / "torch-2.5"
    (old_torch / "include" / "torch").mkdir(parents=True)  # headers without aoti_package/model_package_loader.h
    # Without FFmpeg/libsoxr (pkg-config hidden) the media component is left out, with the reason, and the runtime
    # builds all the same.
    r = step(["cmake", "-S", CPP, "-B", tmp_path / "b", *generator(), "-DCFNSR_WITH_AOTI=AUTO",
              "-DCFNSR_WITH_TENSORRT=OFF", "-DCFNSR_WITH_MEDIA=AUTO", "-DCMAKE_DISABLE_FIND_PACKAGE_PkgConfig=ON",
              f"-DCFNSR_TORCH_ROOT={old_torch}", "-DCFNSR_BUILD_EXAMPLES=OFF"], "configure")
    assert "libtorch with AOTInductor headers not found" in r.stdout
    assert "no media component: pkg-config (to find FFmpeg and libsoxr) not found" in r.stdout
    assert any(line.rstrip().endswith("backends:") for line in r.stdout.splitlines() if "cfnsr_runtime" in line)
    step(["cmake", "--build", tmp_path / "b", "-j", "2"], "build")
    assert list((tmp_path / "b").glob("libcfnsr_runtime.so*"))
    assert not list((tmp_path / "b").glob("libcfnsr_media.so*"))
    step(["cmake", "--install", tmp_path / "b", "--prefix", tmp_path / "p"], "install")
    assert not (tmp_path / "p" / "include" / "cfnsr" / "media.h").exists()
    # An application asking for the component is told it is absent; one that does not ask builds.
    app = tmp_path / "app"
    app.mkdir()
    (app / "CMakeLists.txt").write_text(
        "cmake_minimum_required(VERSION 3.18)\nproject(app CXX)\n"
        "find_package(cfnsr_runtime REQUIRED CONFIG OPTIONAL_COMPONENTS media)\n"
        "message(STATUS \"media=${cfnsr_runtime_media_FOUND} runtime=$<TARGET_EXISTS:cfnsr::runtime>\")\n"
        "if(TARGET cfnsr::media)\n  message(FATAL_ERROR \"cfnsr::media should not exist\")\nendif()\n"
        "find_package(cfnsr_runtime CONFIG COMPONENTS media QUIET)\n"
        "message(STATUS \"with media required: found=${cfnsr_runtime_FOUND}\")\n")
    r = step(["cmake", "-S", app, "-B", app / "b", f"-DCMAKE_PREFIX_PATH={tmp_path / 'p'}"], "configure app")
    assert "media=FALSE" in r.stdout and "with media required: found=0" in r.stdout
