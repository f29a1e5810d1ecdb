"""`cfnsr export --precision auto` end to end on the trained tiny model: the real search on ONNX Runtime, resuming
from its state, and the mixed artifact's metadata through every runner, validate, bench and the TensorRT probe."""

import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner

from cfnsr.artifact import read_metadata
from cfnsr.cli import main
from cfnsr.export import auto
from cfnsr.export.groups import all_groups

# int8 pays in these groups and costs in the others: the stub latency that makes the mixed artifact deterministic
PAYS = {"audio", "attention", "fusion", "stage4.reduce", "stage4.expand", "stage4.downsample"}


def _opts(path, cache, **kw):
    from cfnsr.export.pipeline import ExportOptions

    return ExportOptions("auto", path, fmt="onnx", data=cache.root, calib_clips=48, calib_method="percentile",
                         progress=False, **kw)


@pytest.fixture(scope="module")
def auto_onnx(trained_tiny, tiny_cache, export_dir):
    """The real search: ONNX Runtime's profiler and whole-graph timings on this CPU, 1 thread, budget 8."""
    from cfnsr.export.pipeline import export

    return export(trained_tiny, _opts(export_dir / "m.auto.onnx", tiny_cache, auto_backend="onnxruntime",
                                      auto_threads=1, auto_budget=8), log=lambda *a: None)


class StubLatency:
    """Known costs in place of the backend (the accuracy side, the gate and the artifact stay real)."""

    def __init__(self, probe, builder):
        self.searchable = builder.searchable()

    def _ms(self, int8):
        return 10 + sum((0.5 if g in PAYS else 2.0) if g in int8 else 1.0 for g in self.searchable)

    def estimated_savings(self):
        return {g: {"int8_ms": 0.5 if g in PAYS else 2.0, "float_ms": 1.0} for g in self.searchable}

    def time(self, configs, runs):
        return [[self._ms(c)] * runs for c in configs]


@pytest.fixture(scope="module")
def mixed_onnx(trained_tiny, tiny_cache, export_dir):
    from cfnsr.export.pipeline import export

    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(auto, "ProbeLatency", StubLatency)
        return export(trained_tiny, _opts(export_dir / "m.mixed.onnx", tiny_cache, auto_backend="onnxruntime",
                                          auto_budget=14), log=lambda *a: None)


def test_real_search_on_onnxruntime(auto_onnx, trained_tiny):
    from cfnsr.model.checkpoint import Checkpoint

    res = auto_onnx
    assert res.passed and res.path.name == "m.auto.onnx"
    meta = read_metadata(res.path)
    a = res.report["auto"]
    assert meta["precision"] == a["precision"] in ("mixed", "fp32")
    assert set(meta["precision_map"]) == set(all_groups()) and set(meta["precision_map"].values()) <= {"int8", "fp32"}
    assert meta["auto"] == {"backend": "onnxruntime", "device": "cpu", "batch": 1, "threads": 1}
    split = Checkpoint.load(trained_tiny).split
    assert a["validation_actors"] == sorted(split.val) and not set(a["validation_actors"]) & set(split.test)
    names = [c["name"] for c in a["candidates"]]
    assert {"float", "int8 all", "int8 no-stem", "int8 no-grouped", "int8 no-stem-grouped",
            "int8 audio-fusion"} <= set(names) and len(names) <= 8
    # point 5 in this run: a mix replaces the float graph only when at least 1% faster (and measurably so: a sign
    # test over its rounds), and then it is within 3% of the fastest candidate that passes
    ratio = a["decision_ratio_to_float"]
    assert set(ratio) == set(a["final_p50_ms"]) and a["fastest_plain_passing"] in ratio
    if a["chosen"] == "float":
        assert min(ratio.values()) >= 0.99 or "measurably" in a["note"]
    else:
        assert ratio[a["chosen"]] < 0.99 and ratio[a["chosen"]] <= 1.03 * min(ratio.values())
    for c in a["candidates"]:
        assert len(c["latency_ms"]) == 5 and c["p50_ms"] > 0 and 0 <= c["accuracy"]["agreement"] <= 1
    # reports beside the output: state, JSON, Markdown with a reason per group, PNG
    stem = res.path.with_name("m.auto")
    state = json.loads(stem.with_name("m.auto.state.json").read_text())
    assert set(state["candidates"]) == {auto.config_key(c["int8"]) for c in a["candidates"]}
    md = stem.with_name("m.auto.search.md").read_text()
    assert "grouped 3x3x3, stage 2:" in md and "per-layer profile" in md
    assert stem.with_name("m.auto.search.png").read_bytes()[:4] == b"\x89PNG"
    # the per-layer profile found the layers: every searchable group got a time in both graphs
    est = state["estimates"]
    assert all(est[g]["float_ms"] > 0 and est[g]["int8_ms"] > 0 for g in a["searchable_groups"])
    assert res.report["gate"]["precision"] == a["precision"]  # the usual gate, on the test actors


def test_rerun_with_the_same_inputs_measures_nothing(auto_onnx, trained_tiny, tiny_cache, monkeypatch):
    from cfnsr.export.pipeline import export

    def refuse(*a, **k):
        raise AssertionError("measured again")

    for cls, name in ((auto.ValidationAccuracy, "evaluate"), (auto.ValidationAccuracy, "error_shares"),
                      (auto.ProbeLatency, "time"), (auto.ProbeLatency, "estimated_savings")):
        monkeypatch.setattr(cls, name, refuse)
    logs = []
    again = export(trained_tiny, _opts(auto_onnx.path, tiny_cache, auto_backend="onnxruntime", auto_threads=1,
                                       auto_budget=8, force=True), log=logs.append)
    assert any("resuming the search" in str(m) for m in logs)
    assert read_metadata(again.path)["precision_map"] == auto_onnx.report["auto"]["precision_map"]


def test_mixed_artifact_through_every_runner(mixed_onnx, fp32_onnx, trained_tiny, tiny_cache, tmp_path):
    from cfnsr.engines import load
    from cfnsr.engines.validate import validate

    res = mixed_onnx
    meta = read_metadata(res.path)
    assert res.passed and meta["precision"] == "mixed"
    pmap = meta["precision_map"]
    int8 = {g for g, p in pmap.items() if p == "int8"}
    assert int8 and int8 <= PAYS and pmap["stem"] == "fp32" and pmap["classifier"] == "fp32"
    # the graph is what the map says: Q/DQ in front of layers of the int8 groups only, and of each of them
    from cfnsr.export.groups import grouping

    of = grouping(onnx.shape_inference.infer_shapes(onnx.load(fp32_onnx.path))).of_node
    g = onnx.load(res.path)
    producer = {o: n for n in g.graph.node for o in n.output}
    dq_fed = {n.name for n in g.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")
              and any(producer.get(i) is not None and producer[i].op_type == "DequantizeLinear" for i in n.input)}
    assert {of[n] for n in dq_fed} == int8
    video = np.random.default_rng(0).standard_normal((2, 3, 20, 64, 64), dtype=np.float32)
    audio = np.random.default_rng(1).standard_normal((2, 13, 212), dtype=np.float32)
    outs = {}
    for backend in ("onnxruntime", "openvino"):
        pytest.importorskip(backend)
        with load(res.path, backend) as r:
            assert r.metadata["precision"] == "mixed" and r.metadata["precision_map"] == pmap
            outs[backend] = r(video, audio)
    assert (outs["onnxruntime"].argmax(1) == outs["openvino"].argmax(1)).all()
    gate = validate(res.path, trained_tiny, tiny_cache.root, clips=30, log=lambda *a: None)
    assert gate.precision == "mixed" and gate.thresholds == {"min_agreement": 0.95, "max_accuracy_drop_points": 1.0}
    out = tmp_path / "bench.json"
    r = CliRunner().invoke(main, ["bench", str(res.path), "--backend", "onnxruntime", "--iters", "2", "--warmup", "0",
                                  "--json", str(out)])
    assert r.exit_code == 0, r.output
    assert json.loads(out.read_text())["results"][0]["precision"] == "mixed"
    assert res.report["auto"]["chosen"] in {c["name"] for c in res.report["auto"]["candidates"]}


def test_bench_says_why_a_reduced_row_is_slower_than_float():
    from cfnsr.engines.bench import markdown, slower_than_float

    def row(label, precision, ms, backend="onnxruntime", measured_for=None):
        return {"label": label, "precision": precision, "mean_ms": ms, "backend": backend, "runs_on": "cpu",
                "batch": 1, "threads": 2, "measured_for": measured_for}

    rows = [row("fp32", "fp32", 10.0), row("int8", "int8", 30.0), row("fp16", "fp16", 9.0),
            row("auto", "mixed", 12.0, measured_for={"backend": "openvino", "device": "cpu", "batch": 1,
                                                     "threads": 2}),
            row("ov int8", "int8", 5.0, backend="openvino")]
    assert slower_than_float(rows[2], rows) is None and slower_than_float(rows[4], rows) is None  # faster / no fp32
    s = slower_than_float(rows[1], rows)
    assert s["float"] == "fp32" and s["ratio"] == 3.0 and "--precision auto --backend onnxruntime" in s["reason"]
    a = slower_than_float(rows[3], rows)
    assert "backend openvino (here onnxruntime)" in a["reason"]
    rows[1]["slower_than_float"] = s
    report = {"machine": {"processor": "x", "cpu_count": 2, "platform": "p"}, "threads": 2, "warmup": 0, "iters": 1,
              "baseline": "fp32", "results": [{**r, "p50_ms": 1, "p90_ms": 1, "p99_ms": 1, "min_ms": 1,
                                               "throughput_clips_s": 1, "speedup_vs_first": 1} for r in rows]}
    assert "**int8** (batch 1) is x3.00 the time of fp32" in markdown(report)


def test_auto_options_are_checked(trained_tiny, tiny_cache, tmp_path):
    runner = CliRunner()
    base = ["export", str(trained_tiny), "-o", str(tmp_path / "m.onnx")]
    r = runner.invoke(main, [*base, "--budget", "5"])
    assert r.exit_code != 0 and "--budget applies to --precision auto only" in r.output
    r = runner.invoke(main, [*base, "--precision", "auto"])
    assert r.exit_code != 0 and "needs RAVDESS clips" in r.output
    r = runner.invoke(main, [*base, "--precision", "auto", "--calib-data", str(tiny_cache.root), "--int8-scope",
                             "no-stem"])
    assert r.exit_code != 0 and "auto chooses the layer groups itself" in r.output
    r = runner.invoke(main, [*base, "--precision", "auto", "--calib-data", str(tiny_cache.root), "--backend",
                             "openvino", "--device", "cuda"])
    assert r.exit_code != 0 and "OpenVINO backend runs on the CPU" in r.output and "Traceback" not in r.output
    r = runner.invoke(main, [*base, "--precision", "auto", "--calib-data", str(tiny_cache.root), "--budget", "3",
                             "--backend", "onnxruntime"])
    assert r.exit_code != 0 and "--budget 3 is too small" in r.output
    assert not (tmp_path / "m.onnx").exists()


def test_tensorrt_probe_uses_the_documented_profiler(monkeypatch, tmp_path):
    """The TensorRT probe against stand-ins that behave as documented: ``IProfiler.report_layer_time`` is called
    once per layer for each execution of a context whose ``profiler`` is set (NvInferRuntime.h, TensorRT 10.x)."""
    import sys
    import types

    from cfnsr.export import latency_trt

    fake = types.ModuleType("tensorrt")

    class IProfiler:
        def __init__(self):
            pass

    fake.IProfiler = IProfiler
    monkeypatch.setitem(sys.modules, "tensorrt", fake)

    class Context:
        profiler = None

    class Runner:
        layers = {"node_Conv_1 + node_Relu_2": 0.5, "node_MatMul_3": 0.25}

        def __init__(self, engine):
            self.context, self.active, self.calls = Context(), False, 0

        def activate(self):
            self.active = True

        def deactivate(self):
            self.active = False

        def infer(self, feeds):
            assert self.active and feeds["video"].shape[0] == 2
            self.calls += 1
            for name, ms in self.layers.items():
                if self.context.profiler is not None:
                    self.context.profiler.report_layer_time(name, ms * self.calls)

    made = []
    monkeypatch.setattr(latency_trt, "_build", lambda path, batch, detailed: made.append((batch, detailed)) or "plan")
    poly = types.SimpleNamespace(TrtRunner=lambda engine: made.append(Runner(engine)) or made[-1])
    monkeypatch.setattr(latency_trt, "require", lambda name, *a, **k: fake if name == "tensorrt" else poly)
    monkeypatch.setattr(latency_trt, "example_inputs", lambda path, batch: {"video": np.zeros((batch, 1))})
    probe = latency_trt.TensorRTProbe(batch=2, device="cuda")
    times = probe.layer_times(tmp_path / "m.onnx", runs=2)
    # the warm-up call (1x) is not counted; calls 2 and 3 are averaged
    assert times == {"node_Conv_1 + node_Relu_2": 1.25, "node_MatMul_3": 0.625}
    assert made[0] == (2, True) and not made[1].active
    with pytest.raises(Exception, match="TensorRT runs on NVIDIA GPUs only"):
        latency_trt.TensorRTProbe(device="cpu")


def test_profiles_are_attributed_to_layers():
    from onnx import helper

    from cfnsr.export.latency import attribute_to_layers

    nodes = [helper.make_node("QuantizeLinear", ["x", "s", "z"], ["xq"], name="x_QuantizeLinear"),
             helper.make_node("DequantizeLinear", ["xq", "s", "z"], ["xd"], name="x_DequantizeLinear"),
             helper.make_node("Conv", ["xd", "w"], ["c"], name="node_Conv_1"),
             helper.make_node("Relu", ["c"], ["r"], name="node_Relu_2"),
             helper.make_node("MatMul", ["r", "m"], ["y"], name="node_MatMul_3")]
    model = helper.make_model(helper.make_graph(nodes, "g", [], []))
    times = {"x_QuantizeLinear": 0.1, "node_Conv_1 + node_Relu_2": 1.0, "node_Relu_2": 0.2,
             "node_MatMul_3_token_7": 0.5, "r": 0.05, "unrelated": 9.0}
    got = attribute_to_layers(model, times, {"node_Conv_1", "node_MatMul_3"})
    assert got == pytest.approx({"node_Conv_1": 1.35, "node_MatMul_3": 0.5})


def test_interleaved_timing_warms_a_short_graph_after_each_switch(monkeypatch, tmp_path):
    """A graph faster than SWITCH_WARMUP_MS runs once untimed before each timed run (its caches went cold while the
    others ran); a slower one is timed straight away; rounds interleave the graphs."""
    import time as time_mod

    from cfnsr.export import latency

    calls = []

    class Probe(latency.LatencyProbe):
        def _open(self, path):
            def run():
                calls.append(path.name)
                if path.name == "slow":
                    time_mod.sleep(0.03)
            return latency._Session(run)

    monkeypatch.setattr(latency, "SWITCH_WARMUP_MS", 15.0)
    times = Probe().time([tmp_path / "fast", tmp_path / "slow"], runs=3)
    assert {p: len(t) for p, t in times.items()} == {str(tmp_path / "fast"): 3, str(tmp_path / "slow"): 3}
    assert min(times[str(tmp_path / "slow")]) >= 30
    # the first run of each, then per round: fast untimed, fast timed, slow timed
    assert calls == ["fast", "slow"] + ["fast", "fast", "slow"] * 3


def test_onnxruntime_probe_sessions_do_not_spin():
    """Interleaved ONNX Runtime sessions with spinning workers slow each other (latency.py's docstring)."""
    pytest.importorskip("onnxruntime")
    from cfnsr.export.latency import OnnxRuntimeProbe

    opts = OnnxRuntimeProbe(threads=2)._options()
    assert opts.get_session_config_entry("session.intra_op.allow_spinning") == "0"
    assert opts.get_session_config_entry("session.inter_op.allow_spinning") == "0"
    assert opts.intra_op_num_threads == 2
