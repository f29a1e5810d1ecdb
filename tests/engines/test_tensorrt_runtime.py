"""The TensorRT runtime through the real cfnsr code, on the Polygraphy/TensorRT stand-in (tests/engines/trt_standin.py).

The stand-in reuses one host buffer per output as Polygraphy does, checks shapes against the profile, refuses plans
of another TensorRT or GPU, and computes logits with ONNX Runtime from the ONNX file the plan was built from: every
number compared here is ONNX Runtime's or PyTorch's, never the stand-in's own.
"""

import importlib.util
import json
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from cfnsr.cli import main
from cfnsr.engines import accuracy, load
from cfnsr.engines import bench as bench_mod
from cfnsr.engines import tensorrt as trt_runtime
from cfnsr.engines.runners import OnnxRuntimeRunner
from cfnsr.errors import ArtifactError, CfnsrError
from cfnsr.export.engine import BuildOptions, build_engine

sys.path.insert(0, str(Path(__file__).parent))
from trt_standin import Machine, PolygraphyException, StandIn  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def standin(monkeypatch):
    """The stand-in installed, on a machine whose torch has no CUDA (the plain Polygraphy path)."""
    s = StandIn(Machine()).install(monkeypatch)
    monkeypatch.setattr(trt_runtime, "_cuda_torch", lambda: None)
    return s


def _build(onnx_path, out, **opts):
    return build_engine(onnx_path, out, BuildOptions(batch=(1, 4, 8), **opts), log=lambda *a: None)


@pytest.fixture
def engine(standin, fp32_onnx, tmp_path):
    return _build(fp32_onnx.path, tmp_path / "m.fp32.engine")


@pytest.fixture(scope="module")
def clips(tiny_cache):
    from cfnsr.data.features import to_model_inputs

    stems = [c.stem for c in tiny_cache.select(None)][:11]
    pairs = [to_model_inputs(np.asarray(tiny_cache.frames(s)), tiny_cache.mfcc(s), tiny_cache.spec) for s in stems]
    return np.stack([v for v, _ in pairs]), np.stack([a for _, a in pairs])


def _onnx_logits(onnx_path, video, audio):
    with OnnxRuntimeRunner(onnx_path) as r:
        return np.concatenate([r(video[i:i + 1], audio[i:i + 1]) for i in range(len(video))])


def test_the_plan_carries_what_the_sidecar_says(engine, fp32_onnx, standin):
    side = json.loads(engine.with_name(engine.name + ".json").read_text())
    plan = StandIn.read_plan(engine.read_bytes())
    assert (side["tensorrt_version"], side["gpu"], side["compute_capability"]) == (
        plan["tensorrt_version"], plan["gpu"], plan["compute_capability"]) == ("10.3.0.30", "Orin (nvgpu)", "8.7")
    assert side["source_onnx_sha256"] == plan["onnx_sha256"] and plan["onnx"] == str(fp32_onnx.path.resolve())
    assert side["profile"]["batch"] == [1, 4, 8] and plan["profile"]["video"]["max"][0] == 8
    assert side["hardware_compatible"] is plan["hardware_compatible"] is False


def test_layer_info_off_builds_layer_names_only(standin, fp32_onnx, tmp_path):
    """Defect 2: without --layer-info the plan must not be DETAILED (Polygraphy's CreateConfig default)."""
    plain = StandIn.read_plan(_build(fp32_onnx.path, tmp_path / "a.engine").read_bytes())
    detailed = StandIn.read_plan(_build(fp32_onnx.path, tmp_path / "b.engine", layer_info=True).read_bytes())
    assert plain["profiling_verbosity"] == "LAYER_NAMES_ONLY" and detailed["profiling_verbosity"] == "DETAILED"


def test_real_polygraphy_config_gets_layer_names_only(monkeypatch):
    """The same against Polygraphy's own CreateConfig object (only the stand-in's tensorrt enums are used)."""
    pytest.importorskip("polygraphy")
    from cfnsr.export import engine as engine_mod

    monkeypatch.setitem(sys.modules, "tensorrt", StandIn().modules()["tensorrt"])
    import tensorrt as trt

    shapes = {"video": (3, 20, 64, 64), "audio": (13, 212)}
    cfg = engine_mod.config_loader(shapes, BuildOptions())
    assert type(cfg).__module__.startswith("polygraphy.")
    assert cfg.profiling_verbosity == trt.ProfilingVerbosity.LAYER_NAMES_ONLY
    assert engine_mod.config_loader(shapes, BuildOptions(layer_info=True)).profiling_verbosity == (
        trt.ProfilingVerbosity.DETAILED)


def test_the_standin_reuses_its_output_buffer_as_polygraphy_does(engine, standin, clips):
    """Guards the test below: a stand-in that returned fresh arrays would let an aliasing bug pass."""
    video, audio = clips
    eng = standin.EngineFromBytes(engine.read_bytes())()
    runner = standin.TrtRunner(eng)
    with pytest.raises(PolygraphyException, match="Must be activated prior to calling infer"):
        runner.infer({"video": video[:2], "audio": audio[:2]})
    with runner:
        first = runner.infer({"video": video[:4], "audio": audio[:4]})["logits"]
        second = runner.infer({"video": video[4:6], "audio": audio[4:6]})["logits"]
        assert np.shares_memory(first, second)
        with pytest.raises(PolygraphyException, match="failed to set shape to"):
            runner.infer({"video": video[:9], "audio": audio[:9]})  # the profile's max is 8


def test_validate_over_several_batches_gets_every_batchs_logits(engine, fp32_onnx, clips, standin):
    """Defect 1: batches of 4, 4 and a short 3, stacked: each must be its own batch's logits, not views of the last."""
    video, audio = clips
    with load(engine) as r:
        assert r.backend == "tensorrt" and r.timing == "wall clock"
        got = accuracy.batched(r, video, audio, batch=4)
    (runner,) = standin.runners
    assert runner.calls == 3 and standin.engines[0].runs == [4, 4, 3]
    np.testing.assert_allclose(got, _onnx_logits(fp32_onnx.path, video, audio), atol=1e-4)


def test_validate_cli_on_an_engine(engine, trained_tiny, tiny_cache, standin, tmp_path):
    out = tmp_path / "v.json"
    res = CliRunner().invoke(main, ["validate", str(engine), "--reference", str(trained_tiny), "--data",
                                    str(tiny_cache.root), "--clips", "12", "--json", str(out)])
    assert res.exit_code == 0, res.output
    v = json.loads(out.read_text())
    assert v["passed"] and v["clips"] == 12 and v["agreement"] == 1.0 and v["max_abs_logit"] <= 1e-3
    assert standin.engines[-1].runs == [8, 4]  # accuracy.batched's 8, then the short last batch


def test_runner_checks_activation_and_the_profile(engine, clips, standin):
    video, audio = clips
    r = load(engine)
    with pytest.raises(CfnsrError, match="is not active"):
        r(video[:1], audio[:1])
    with r:
        with pytest.raises(CfnsrError, match=r"batch 9 is outside the engine's profile 1\.\.8"):
            r(np.concatenate([video, video])[:9], np.concatenate([audio, audio])[:9])


def test_bench_without_cuda_torch_times_polygraphys_runner(engine, standin, tmp_path):
    """Defect 6: no CUDA torch -> Polygraphy's runner, wall clock, and the report says so (no bogus advice)."""
    report = bench_mod.bench([bench_mod.Entry("engine", engine)], batches=(1, 3), warmup=1, iters=2,
                             log=lambda *a: None)
    assert [r["timing"] for r in report["results"]] == ["wall clock"] * 2
    assert all("device" not in r for r in report["results"]) and standin.engines[0].runs[-1] == 3
    assert "timed by wall clock around Polygraphy's TrtRunner.infer" in bench_mod.markdown(report)
    res = CliRunner().invoke(main, ["bench", str(engine), "--warmup", "1", "--iters", "2", "--json",
                                    str(tmp_path / "b.json")])
    assert res.exit_code == 0, res.output
    with pytest.raises(CfnsrError) as err:
        with load(engine, cuda_graph=True):
            pass
    assert "needs torch with CUDA" in str(err.value) and "cuda_graph=False" in str(err.value)
    assert "--cuda-graph" not in str(err.value)  # no such option exists
    with pytest.raises(CfnsrError, match="device_timing=False"):
        with load(engine, device_timing=True):
            pass


def test_predict_on_an_engine_matches_onnx(engine, fp32_onnx, synth_raw, standin):
    clip = synth_raw / "Actor_01" / "01-01-05-02-01-01-01.mp4"
    got = CliRunner().invoke(main, ["predict", str(clip), "--model", str(engine), "--json"])
    ref = CliRunner().invoke(main, ["predict", str(clip), "--model", str(fp32_onnx.path), "--json"])
    assert got.exit_code == 0 and ref.exit_code == 0, got.output + ref.output
    g, r = json.loads(got.output), json.loads(ref.output)
    assert g["emotion"] == r["emotion"]
    assert max(abs(g["probabilities"][k] - v) for k, v in r["probabilities"].items()) < 1e-4


def test_another_tensorrt_or_gpu_is_refused_before_deserialising(engine, monkeypatch):
    StandIn(Machine(trt_version="10.16.0")).install(monkeypatch)
    with pytest.raises(ArtifactError, match=r"built with TensorRT 10\.3\.0\.30, this is TensorRT 10\.16\.0"):
        load(engine).activate()
    StandIn(Machine(gpu="NVIDIA GeForce RTX 3090", compute_capability=(8, 6))).install(monkeypatch)
    with pytest.raises(ArtifactError, match=r"built for Orin \(nvgpu\) \(compute 8\.7\), this GPU is NVIDIA GeForce"):
        load(engine).activate()


def test_a_sidecar_that_lies_about_its_plan_is_caught_by_tensorrt(engine, monkeypatch):
    """The sidecar edited to claim this machine's TensorRT: cfnsr's check passes, TensorRT's own refusal is shown."""
    side_path = engine.with_name(engine.name + ".json")
    side = json.loads(side_path.read_text())
    side_path.write_text(json.dumps({**side, "tensorrt_version": "10.16.0"}))
    StandIn(Machine(trt_version="10.16.0")).install(monkeypatch)
    with pytest.raises(ArtifactError, match="could not deserialise .*expecting library version 10.16.0 got 10.3"):
        load(engine).activate()


def test_hardware_compatible_engines_need_ampere(standin, fp32_onnx, clips, tmp_path, monkeypatch):
    """Defect 5: a pre-Ampere GPU gets one line naming its compute capability, not "corrupt or truncated"."""
    eng = _build(fp32_onnx.path, tmp_path / "hw.engine", hardware_compatible=True)
    video, audio = clips
    StandIn(Machine(gpu="NVIDIA GeForce RTX 3090", compute_capability=(8, 6))).install(monkeypatch)
    with load(eng) as r:  # another Ampere GPU: runs
        np.testing.assert_allclose(r(video[:2], audio[:2]), _onnx_logits(fp32_onnx.path, video[:2], audio[:2]),
                                   atol=1e-4)
    StandIn(Machine(gpu="Tesla T4", compute_capability=(7, 5))).install(monkeypatch)
    with pytest.raises(ArtifactError) as err:
        load(eng).activate()
    msg = str(err.value)
    assert "runs on Ampere and newer GPUs only" in msg and "Tesla T4 (compute 7.5)" in msg
    assert "corrupt" not in msg and "without --hardware-compatible" in msg and "\n" not in msg


def test_cuda_graphs_get_one_context_per_batch_size(engine, fp32_onnx, clips, standin, monkeypatch):
    """Defect 3: graphs for batch 4, 2, 3 replayed in any order give each batch's own logits (a graph whose context
    changed shape after its capture replays stale kernels: NaN in the stand-in)."""
    monkeypatch.setattr(trt_runtime, "_cuda_torch", lambda: standin.cuda_torch)
    video, audio = clips
    ref = _onnx_logits(fp32_onnx.path, video, audio)
    with load(engine, cuda_graph=True) as r:
        assert r.timing == "CUDA events"
        for n, start in ((4, 0), (2, 4), (4, 1), (3, 7), (2, 0), (3, 2)):
            got = r(video[start:start + n], audio[start:start + n])
            assert r.last_device_ms is not None
            np.testing.assert_allclose(got, ref[start:start + n], atol=1e-4, err_msg=f"batch {n} from {start}")
        session = r.session
        contexts = [ctx for ctx, _ in session.graphs.values()]
        assert sorted(session.graphs) == [2, 3, 4] and len({id(c) for c in contexts}) == 3
        assert standin.cuda_torch.graphs_captured == 3
        assert {c.device_memory for c in contexts} == {session.scratch.data_ptr()}  # one shared scratch block
    with load(engine, device_timing=True) as r:  # events without graphs: one context, its shape follows the batch
        for n in (4, 1, 3):
            np.testing.assert_allclose(r(video[:n], audio[:n]), ref[:n], atol=1e-4)
            assert r.last_device_ms is not None


def _target_check():
    spec = importlib.util.spec_from_file_location("target_check", ROOT / "scripts" / "target_check.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod


def test_target_check_finds_polygraphy_beside_its_python_and_notes_a_missing_one(tmp_path, monkeypatch):
    """Defect 7: a PYTHON=venv/bin/python run has no venv on PATH; a missing tool is a note, not a crash."""
    tc = _target_check()
    venv = tmp_path / "venv" / "bin"
    venv.mkdir(parents=True)
    (venv / "python").write_text("")
    tool = venv / "polygraphy"
    tool.write_text("#!/bin/sh\necho \"polygraphy $@\"\n")
    tool.chmod(0o755)
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    assert tc.find_tool("polygraphy", str(venv / "python")) == str(tool)
    notes = {"notes": []}
    assert tc.polygraphy_layers(tmp_path / "m.engine", tmp_path / "layers.txt", lambda k, t: notes[k].append(t),
                                python=str(venv / "python"))
    assert "polygraphy inspect model" in (tmp_path / "layers.txt").read_text()
    tool.unlink()
    assert not tc.polygraphy_layers(tmp_path / "m.engine", tmp_path / "l2.txt", lambda k, t: notes[k].append(t),
                                    python=str(venv / "python"))
    assert "the polygraphy tool is neither beside" in notes["notes"][0]


def test_target_check_writes_its_report_whatever_stops_it(tmp_path, monkeypatch):
    tc = _target_check()

    def boom(root, demo, out, report):
        report["skipped"].append("TensorRT engines: not importable")
        raise FileNotFoundError("polygraphy")

    monkeypatch.setattr(tc, "run_checks", boom)
    monkeypatch.setenv("OUT", str(tmp_path / "out"))
    monkeypatch.setattr(sys, "argv", ["target_check.py", str(tmp_path / "demo")])
    assert tc.main() == 1
    md = (tmp_path / "out" / "target_check.md").read_text()
    assert "skipped: TensorRT engines: not importable" in md and "stopped early: FileNotFoundError" in md
    assert json.loads((tmp_path / "out" / "target_check.json").read_text())["failed_early"] is True


@pytest.mark.parametrize("facts,expected", [
    ({"polygraphy": "0.49.20", "tensorrt": "11.1.0"}, "Polygraphy 0.49.20 is older than 0.49.22: it cannot build "
                                                      "engines with TensorRT 11.1.0"),
    ({"polygraphy": "0.49.13"}, "pip install 'polygraphy>=0.49.22'"),
])
def test_cfnsr_info_flags_a_polygraphy_below_the_floor(facts, expected):
    """Defect 4: Polygraphy <= 0.49.20 reads IBuilderConfig.int8_calibrator, which TensorRT 11 removed."""
    from cfnsr import sysinfo

    (line,) = sysinfo.diagnose(facts)
    assert expected in line
    assert sysinfo.diagnose({"polygraphy": "0.49.22"}) == sysinfo.diagnose({"polygraphy": "0.53.6"}) == []


def test_the_polygraphy_floor_is_what_the_package_requires():
    import importlib.metadata as md
    import re

    from cfnsr import sysinfo

    pins = set(re.findall(r'"(polygraphy[^"]*)"', (ROOT / "pyproject.toml").read_text()))
    assert pins == {f"polygraphy>={sysinfo.POLYGRAPHY_FLOOR}"}
    for name in ("jetpack6.txt", "jetpack7.txt", "desktop-cu12.txt"):
        assert f"polygraphy>={sysinfo.POLYGRAPHY_FLOOR}" in (ROOT / "constraints" / name).read_text().splitlines()
    try:
        installed = md.version("polygraphy")
    except md.PackageNotFoundError:
        return
    assert sysinfo.target_facts()["polygraphy"] == installed


def test_auto_search_on_tensorrt_through_polygraphy(standin, trained_tiny, tiny_cache, tmp_path):
    """`export --precision auto --backend tensorrt` through cfnsr's real TensorRT probe on the stand-in: each candidate
    is built (strongly typed, fixed batch profile) and run with Polygraphy's TrtRunner; the per-layer profile comes
    from the IProfiler set on the runner's context of a DETAILED build. The stand-in's cost model halves every int8
    layer, so its profile says int8 pays everywhere; whole-graph timings (ONNX Runtime under the stand-in) decide."""
    from cfnsr.export import auto as auto_mod
    from cfnsr.export.pipeline import ExportOptions, export

    profiled = []
    real = auto_mod.ProbeLatency.estimated_savings

    def savings(self):
        out = real(self)
        profiled.append(out)
        return out

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto_mod.ProbeLatency, "estimated_savings", savings)
        res = export(trained_tiny, ExportOptions("auto", tmp_path / "m.auto.onnx", fmt="onnx", data=tiny_cache.root,
                                                 calib_clips=32, device="cuda", auto_backend="tensorrt",
                                                 auto_budget=8, progress=False), log=lambda *a: None)
    assert res.passed
    rep = json.loads((tmp_path / "m.auto.search.json").read_text())
    assert rep["backend_name"] == "tensorrt" and rep["device"] == "cuda"
    assert "float type fp16" in rep["backend"] and rep["accuracy_runs_on"] == "onnxruntime (CPU)"
    # every searchable group got a saving from the profile, and int8 paid in each (the cost model halves int8)
    (est,) = profiled
    assert set(est) == set(rep["searchable_groups"])
    assert all(e["int8_ms"] < e["float_ms"] for e in est.values())
    builds = [e.header for e in standin.engines]
    verbosity = {h["profiling_verbosity"] for h in builds}
    assert verbosity == {"DETAILED", "LAYER_NAMES_ONLY"}  # one profile build each for int8 and float; the rest timed
    assert all(h["profile"]["video"]["min"][0] == h["profile"]["video"]["max"][0] == 1 for h in builds)
    assert not any(r.is_active for r in standin.runners)  # every runner was deactivated
    from cfnsr.artifact import read_metadata

    meta = read_metadata(res.path)
    assert meta["auto"]["backend"] == "tensorrt"
    assert set(meta["precision_map"].values()) <= {"int8", "fp16"}


def test_the_standin_has_the_surface_of_the_installed_polygraphy():
    """What cfnsr calls through the stand-in exists in the real Polygraphy (the pip release the venv has): every name
    the stand-in offers, every keyword cfnsr passes, and the runner behaviour the TensorRT probe relies on (the context
    is made on activate; infer executes and synchronises the stream, so an IProfiler has reported when it returns)."""
    import inspect

    pytest.importorskip("polygraphy")
    from polygraphy.backend import trt as real

    offered = StandIn().modules()["polygraphy.backend.trt"]
    names = [n for n in vars(offered) if not n.startswith("_")]
    assert {"EngineFromNetwork", "EngineBytesFromNetwork", "EngineFromBytes", "TrtRunner"} <= set(names)
    assert [n for n in names if not hasattr(real, n)] == []

    def params(cls):
        return {p for c in cls.__mro__ if "__init__" in vars(c) for p in inspect.signature(c.__init__).parameters}

    used = {  # what cfnsr/export/engine.py, cfnsr/engines/tensorrt.py and cfnsr/export/latency_trt.py pass
        real.NetworkFromOnnxPath: {"path", "strongly_typed"},
        real.CreateConfig: {"profiles", "memory_pool_limits", "profiling_verbosity", "version_compatible",
                            "hardware_compatibility_level"},
        real.EngineBytesFromNetwork: {"network", "config"},
        real.EngineFromNetwork: {"network", "config"},
        real.EngineFromBytes: {"serialized_engine"},
        real.TrtRunner: {"engine"},
    }
    assert {cls.__name__: sorted(kw - params(cls)) for cls, kw in used.items() if kw - params(cls)} == {}
    activate, infer = inspect.getsource(real.TrtRunner.activate_impl), inspect.getsource(real.TrtRunner.infer_impl)
    assert "self.context = " in activate
    run = inspect.getsource(real.TrtRunner._infer_impl) if "self._infer_impl(" in infer else infer  # 0.5x / 0.49
    assert run.index("execute_async_v3(") < run.rindex("self.stream.synchronize()")
