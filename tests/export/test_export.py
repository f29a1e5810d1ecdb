import json

import numpy as np
import onnx
import pytest
import torch
from click.testing import CliRunner

from cfnsr.artifact import EMOTIONS, read_metadata
from cfnsr.cli import main
from cfnsr.engines import load
from cfnsr.engines.accuracy import GateThresholds
from cfnsr.errors import CfnsrError, CheckpointError, DataError, MissingDependencyError
from cfnsr.export import readiness
from cfnsr.export.pipeline import ExportOptions, export
from cfnsr.model import load_checkpoint, load_model
from cfnsr.model.summary import example_inputs

QUIET = dict(log=lambda *a: None)


def test_fp32_parity_and_dynamic_batch(fp32_onnx, trained_tiny):
    model = load_model(trained_tiny)
    session = load(fp32_onnx.path).activate()
    for batch in (1, 4):
        video, audio = example_inputs(model.config, batch, torch.Generator().manual_seed(batch))
        with torch.no_grad():
            ref = model(video, audio).numpy()
        got = session(video.numpy(), audio.numpy())
        assert got.shape == (batch, 8)
        # Logits of random inputs reach |250|: an absolute 1e-4 there is below float32's accumulated rounding
        # (AVX-512 and AVX2 kernels differ by ~1e-4), so the bound is relative to the logits' scale.
        assert np.abs(got - ref).max() <= 1e-4 * max(1.0, float(np.abs(ref).max()))
    assert fp32_onnx.passed and fp32_onnx.report["gate"]["agreement"] == 1.0
    assert fp32_onnx.report["tensorrt_readiness"]["ok"]


def test_metadata_round_trips(fp32_onnx, trained_tiny):
    meta = read_metadata(fp32_onnx.path)
    ckpt = load_checkpoint(trained_tiny)
    assert meta["precision"] == "fp32" and meta["labels"] == list(EMOTIONS)
    assert meta["preprocess"] == ckpt["preprocess"]
    import hashlib

    assert meta["source_sha256"] == hashlib.sha256(trained_tiny.read_bytes()).hexdigest()
    video = next(i for i in meta["inputs"] if i["name"] == "video")
    assert video["shape"][1:] == [3, 20, 64, 64] and isinstance(video["shape"][0], str) and video["dtype"] == "float32"
    assert {"version", "inputs", "labels", "precision", "preprocess", "source_sha256"} <= set(meta)
    # The export report sits beside the file.
    report = json.loads(fp32_onnx.path.with_name("m.fp32.report.json").read_text())
    assert report["sha256"] == fp32_onnx.report["sha256"]


def test_fp16_graph_and_agreement(trained_tiny, tiny_cache, export_dir):
    res = export(trained_tiny, ExportOptions("fp16", export_dir / "m.fp16.onnx", fmt="onnx", data=tiny_cache.root,
                                             progress=False), **QUIET)
    assert res.passed and res.report["gate"]["agreement"] >= 0.99
    g = onnx.shape_inference.infer_shapes(onnx.load(res.path))
    types = {v.name: v.type.tensor_type.elem_type for v in list(g.graph.value_info) + list(g.graph.input)
             + list(g.graph.output)}
    F32, F16 = onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16
    assert types["video"] == F32 and types["audio"] == F32 and types["logits"] == F32  # fp32 I/O
    convs = [n for n in g.graph.node if n.op_type == "Conv"]
    assert convs and all(types[n.output[0]] == F16 for n in convs)  # the bulk runs in fp16
    for n in g.graph.node:
        if n.op_type in ("LayerNormalization", "Softmax", "ReduceMean"):
            assert types[n.input[0]] == F32 and types[n.output[0]] == F32, n.name
    assert read_metadata(res.path)["precision"] == "fp16"
    assert readiness.check(g).ok


def test_int8_passes_the_gate_on_held_out_actors(int8_onnx, trained_tiny):
    assert int8_onnx.passed, int8_onnx.report["gate"]
    gate = int8_onnx.report["gate"]
    assert gate["clips"] == 120 and gate["agreement"] >= 0.95 and gate["accuracy_drop_points"] <= 1.0
    meta = read_metadata(int8_onnx.path)
    split = load_checkpoint(trained_tiny)["split"]
    assert meta["calibration"]["method"] == "percentile" and meta["calibration"]["clips"] == 48
    assert set(meta["calibration"]["actors"]) <= set(split["train"])  # never the evaluation actors
    g = onnx.load(int8_onnx.path)
    assert readiness.check(g).ok
    zps = [n for n in g.graph.node if n.op_type in ("QuantizeLinear", "DequantizeLinear")]
    assert len(zps) > 50


def _weight_quantized(graph):
    """{node name: whether its weight input comes from a DequantizeLinear} for Conv/MatMul/Gemm."""
    producers = {o: n for n in graph.graph.node for o in n.output}
    inits = {i.name for i in graph.graph.initializer}
    out = {}
    for n in graph.graph.node:
        if n.op_type in ("Conv", "Gemm", "MatMul"):
            w = producers.get(n.input[1])
            if n.op_type == "MatMul" and w is not None and w.op_type != "DequantizeLinear" and n.input[1] not in inits:
                continue  # activation x activation matmul (attention)
            out[n.name] = w is not None and w.op_type == "DequantizeLinear"
    return out


def _gemv_layers(graph):
    """The Gemm/MatMul layers that int8 cannot speed up: one output column, or one row per sample."""
    inits = {i.name: i for i in graph.graph.initializer}
    out = set()
    for n in graph.graph.node:
        if n.op_type in ("Gemm", "MatMul") and n.input[1] in inits:
            dims = inits[n.input[1]].dims
            trans_b = any(a.name == "transB" and a.i for a in n.attribute)
            cols = dims[0] if (n.op_type == "Gemm" and trans_b) else dims[-1]
            if cols == 1 or n.op_type == "Gemm":  # both Gemms of CFN-SR read (B, features): one row per sample
                out.add(n.name)
    return out


@pytest.mark.parametrize("high_precision", ["fp32", "fp16"])
@pytest.mark.parametrize("scope", ["all", "no-stem", "no-grouped", "no-stem-grouped", "audio-fusion"])
def test_int8_scope_places_qdq_where_it_promises(scope, high_precision, fp32_onnx):
    from cfnsr.export.int8 import quantizable_nodes, quantize
    from cfnsr.export.onnx_graph import reachable_from

    graph = onnx.load(fp32_onnx.path)
    ranges = {t: (-4.0, 4.0) for n in graph.graph.node for t in list(n.input) + list(n.output)}
    q, placement = quantize(graph, ranges, scope, high_precision=high_precision)
    quantized = _weight_quantized(q)
    convs = [n for n in graph.graph.node if n.op_type == "Conv"]
    stem = next(n.name for n in convs if n.input[0] == "video")
    grouped = {n.name for n in convs if any(a.name == "group" and a.i > 1 for a in n.attribute)}
    video_only = reachable_from(graph, "video") - reachable_from(graph, "audio")
    assert len(grouped) == 4  # one per ResNeXt stage in cfn-sr-tiny
    gemv = _gemv_layers(graph)
    assert len(gemv) == 3  # the summary projection, the attention-weight column and the classifier
    expect_skipped = gemv | {
        "all": set(),
        "no-stem": {stem},
        "no-grouped": grouped,
        "no-stem-grouped": grouped | {stem},
        "audio-fusion": {n for n in quantized if n in video_only},
    }[scope]
    skipped = {n for n, is_q in quantized.items() if not is_q}
    assert skipped == expect_skipped
    assert set(placement.quantize) == set(quantized) - expect_skipped
    if scope == "audio-fusion":
        assert any(n not in video_only and q for n, q in quantized.items())  # audio/fusion still int8
    keep, skip = quantizable_nodes(graph, scope)
    assert set(skip) >= expect_skipped and set(keep) == set(placement.quantize)
    # Placed for TensorRT: the fusion lint passes, no layer output is quantized or cast, no Cast after a DQ.
    lint = readiness.fusion_lint(q)
    assert not lint.problems, lint.problems
    assert set(lint.fused_int8) == set(placement.quantize)
    producers = {o: n for n in q.graph.node for o in n.output}
    for n in q.graph.node:
        if n.op_type in ("QuantizeLinear", "Cast") and n.input[0] in producers:
            assert producers[n.input[0]].name not in placement.quantize or (
                n.op_type == "QuantizeLinear" and n.input[0] in placement.residual.values()), n.name
        if n.op_type == "Cast":
            assert producers.get(n.input[0]) is None or producers[n.input[0]].op_type != "DequantizeLinear", n.name
    assert readiness.check(q).ok
    if high_precision == "fp16":
        assert max(o.version for o in q.opset_import if o.domain in ("", "ai.onnx")) == 19
        scales = {i.name: i.data_type for i in q.graph.initializer}
        conv_dqs = [producers[n.input[1]] for n in q.graph.node if n.name in placement.quantize]
        assert all(scales[d.input[1]] == onnx.TensorProto.FLOAT16 for d in conv_dqs)


def test_residual_adds_fuse_into_the_main_branch_conv(fp32_onnx):
    """Each bottleneck's Add: the main branch's last Conv feeds it directly (fused), the shortcut through Q/DQ."""
    from cfnsr.export.int8 import quantize

    graph = onnx.load(fp32_onnx.path)
    ranges = {t: (-4.0, 4.0) for n in graph.graph.node for t in list(n.input) + list(n.output)}
    q, placement = quantize(graph, ranges, "all")
    assert len(placement.residual) == 4  # one bottleneck per stage in cfn-sr-tiny, each with a projection shortcut
    producers = {o: n for n in q.graph.node for o in n.output}
    weights = {n.name: producers[n.input[1]].input[0] for n in q.graph.node if n.op_type == "Conv"}
    for add_name, shortcut in placement.residual.items():
        add = next(n for n in q.graph.node if n.name == add_name)
        kinds = sorted(producers[i].op_type for i in add.input)
        assert kinds == ["Conv", "DequantizeLinear"], kinds
        main = next(producers[i] for i in add.input if producers[i].op_type == "Conv")
        assert "conv3" in weights[main.name] or "conv3" in main.name or main.name not in placement.residual
        assert producers[shortcut].op_type == "Conv" and producers[shortcut].name != main.name


def test_calibration_cache_reuse_and_invalidation(fp32_onnx, tiny_cache, trained_tiny, tmp_path):
    from cfnsr.export.calibrate import calibrate, select_clips

    split = load_checkpoint(trained_tiny)["split"]
    clips = select_clips(tiny_cache, split["train"], 8, forbidden_actors=split["val"] + split["test"])
    args = (fp32_onnx.path, "sha-a", tiny_cache)
    r1, i1 = calibrate(*args, clips, "minmax", tmp_path, progress=False)
    r2, i2 = calibrate(*args, clips, "minmax", tmp_path, progress=False)
    assert not i1["cache_hit"] and i2["cache_hit"] and r1 == r2
    _, i3 = calibrate(*args, clips[:7], "minmax", tmp_path, progress=False)  # another clip list
    _, i4 = calibrate(fp32_onnx.path, "sha-b", tiny_cache, clips, "minmax", tmp_path, progress=False)  # another model
    _, i5 = calibrate(*args, clips, "entropy", tmp_path, progress=False, entropy_bins=256)  # another method
    assert not (i3["cache_hit"] or i4["cache_hit"] or i5["cache_hit"])
    assert len({i["cache_file"] for i in (i1, i3, i4, i5)}) == 4
    # A damaged cache file is recomputed, not trusted.
    from pathlib import Path

    Path(i1["cache_file"]).write_text("{not json")
    r6, i6 = calibrate(*args, clips, "minmax", tmp_path, progress=False)
    assert not i6["cache_hit"] and r6 == r1
    # Entropy and percentile give narrower activation ranges than min/max somewhere.
    r_ent = json.loads(Path(i5["cache_file"]).read_text())["ranges"]
    assert any(r_ent[k][1] < r1[k][1] * 0.99 for k in r1)


def test_calibration_never_uses_evaluation_actors(tiny_cache, trained_tiny):
    from cfnsr.export.calibrate import select_clips

    split = load_checkpoint(trained_tiny)["split"]
    clips = select_clips(tiny_cache, split["train"], 1000, forbidden_actors=split["val"] + split["test"])
    assert {c.actor for c in clips} == set(split["train"]) and len(clips) == 240
    few = select_clips(tiny_cache, split["train"], 32)
    cells = {(c.label, c.actor) for c in few}
    assert len(cells) == 32  # stratified: every emotion x actor cell once before any repeats
    with pytest.raises(CfnsrError, match=r"calibration actors \[1\] are evaluation actors"):
        select_clips(tiny_cache, [1, 5], 8, forbidden_actors=[1, 2])


def test_readiness_catches_unsupported_ops_and_infinities(fp32_onnx):
    g = onnx.load(fp32_onnx.path)
    g.graph.node.append(onnx.helper.make_node("DynamicQuantizeLinear", ["audio"], ["dq", "dqs", "dqz"],
                                              name="planted_dql"))
    g.graph.initializer.append(onnx.numpy_helper.from_array(np.array([0.0, -np.inf], np.float32), "planted_mask"))
    r = readiness.check(g)
    assert not r.ok
    text = str(r)
    assert "op DynamicQuantizeLinear is not supported by TensorRT's ONNX parser: nodes planted_dql" in text
    assert "constant 'planted_mask' holds -inf" in text
    # A Q/DQ with a non-zero zero point is refused too.
    g2 = onnx.load(fp32_onnx.path)
    g2.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(0.1, np.float32), "s"),
                                 onnx.numpy_helper.from_array(np.array(3, np.int8), "zp")])
    g2.graph.node.append(onnx.helper.make_node("QuantizeLinear", ["audio", "s", "zp"], ["q"], name="bad_q"))
    assert "bad_q: zero point is not 0" in str(readiness.check(g2))


def test_bad_inputs_give_clear_errors_and_keep_files(tmp_path, trained_tiny, tiny_cache):
    with pytest.raises(CheckpointError, match="nope.pt does not exist"):
        export(tmp_path / "nope.pt", ExportOptions("fp32", tmp_path / "x.onnx", fmt="onnx"), **QUIET)
    with pytest.raises(DataError, match="is not a finished cfnsr feature cache"):
        export(trained_tiny, ExportOptions("int8", tmp_path / "x.onnx", fmt="onnx", data=tmp_path), **QUIET)
    with pytest.raises(CfnsrError, match="needs RAVDESS clips to calibrate on"):
        export(trained_tiny, ExportOptions("int8", tmp_path / "x.onnx", fmt="onnx"), **QUIET)
    existing = tmp_path / "keep.onnx"
    existing.write_bytes(b"precious")
    with pytest.raises(CfnsrError, match="already exists; pass --force"):
        export(trained_tiny, ExportOptions("fp32", existing, fmt="onnx"), **QUIET)
    assert existing.read_bytes() == b"precious"
    with pytest.raises(MissingDependencyError, match="--format engine needs TensorRT.*cfnsr build MODEL.onnx"):
        export(trained_tiny, ExportOptions("fp32", tmp_path / "e.onnx", fmt="engine"), **QUIET)
    assert not (tmp_path / "e.onnx").exists() and not (tmp_path / "x.onnx").exists()


def test_failed_gate_keeps_a_failed_file_and_explains(trained_tiny, tiny_cache, tmp_path):
    out = tmp_path / "m.int8.onnx"
    res = CliRunner().invoke(main, ["export", str(trained_tiny), "--precision", "int8", "--calib-data",
                                    str(tiny_cache.root), "--calib-clips", "16", "--calib-method", "minmax",
                                    "--gate-clips", "16", "--max-abs-logit", "1e-6", "-o", str(out)])
    assert res.exit_code == 3, res.output
    assert not out.exists() and (tmp_path / "m.int8.FAILED.onnx").exists()
    assert "accuracy gate failed" in res.output and "--int8-scope no-stem" in res.output
    report = json.loads((tmp_path / "m.int8.FAILED.report.json").read_text())
    div = report["gate"]["divergence"]
    assert div and all("tensor" in d and "sqnr_db" in d for d in div)
    assert "Layers where int8 departs from fp32 first" in (tmp_path / "m.int8.FAILED.report.md").read_text()


@pytest.mark.slow
def test_paper_size_export_all_precisions(tmp_path):
    """The paper configuration (26.3M parameters, 30x224x224) at fp32, fp16 and int8 on this CPU.

    Seeded random weights (no paper-size model can be trained here), so the gate thresholds are parity-only for
    int8; what is checked is that every precision exports, runs, and is TensorRT-ready at full size.
    """
    from cfnsr.data.cache import preprocess
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.splits import make_split
    from cfnsr.data.synth import generate
    from cfnsr.model import create_model, save_checkpoint

    spec = PreprocessSpec()
    generate(tmp_path / "raw", actors=2, seed=0, workers=2, progress=False)
    preprocess(tmp_path / "raw", tmp_path / "cache", spec, workers=2, progress=False, log=lambda *a: None)
    torch.manual_seed(0)
    model = create_model("cfn-sr").eval()
    split = make_split([1, 2], "msaf", fold=1, folds=2)
    ckpt = save_checkpoint(tmp_path / "paper.pt", model, preprocess=spec.to_dict(), split=split.to_dict())
    for precision in ("fp32", "fp16", "int8"):
        opts = ExportOptions(precision, tmp_path / f"paper.{precision}.onnx", fmt="onnx", data=tmp_path / "cache",
                             calib_clips=4, gate_clips=4, progress=False,
                             thresholds=GateThresholds(min_agreement=0.0, max_accuracy_drop_points=100.0)
                             if precision == "int8" else {})
        res = export(ckpt, opts, **QUIET)
        assert res.passed, res.report["gate"]
        assert res.report["tensorrt_readiness"]["ok"]
        assert read_metadata(res.path)["precision"] == precision


def test_fusion_lint_violations_fail_the_export_unless_no_trt_check(trained_tiny, tmp_path, monkeypatch):
    """A graph TensorRT would not fuse is refused with the node named; --no-trt-check writes it and reports why."""
    from cfnsr.export import pipeline

    real = pipeline.export_fp32

    def half_quantized_stem(model, path):
        g = real(model, path)
        stem = next(n for n in g.graph.node if n.op_type == "Conv" and n.input[0] == "video")
        g.graph.initializer.extend([onnx.numpy_helper.from_array(np.array(0.05, np.float32), "s"),
                                    onnx.numpy_helper.from_array(np.array(0, np.int8), "zp")])
        g.graph.node.insert(0, onnx.helper.make_node("QuantizeLinear", ["video", "s", "zp"], ["vq"], name="Q_video"))
        g.graph.node.insert(1, onnx.helper.make_node("DequantizeLinear", ["vq", "s", "zp"], ["vdq"], name="DQ_video"))
        stem.input[0] = "vdq"
        return g, stem.name

    monkeypatch.setattr(pipeline, "export_fp32", lambda m, p: half_quantized_stem(m, p)[0])
    out = tmp_path / "m.fp32.onnx"
    with pytest.raises(CfnsrError, match=r"not TensorRT-ready:\n.*Conv node_Conv_\w+: its weight input .* is not fed "
                                         r"by a DequantizeLinear.*--no-trt-check"):
        export(trained_tiny, ExportOptions("fp32", out, fmt="onnx", progress=False), **QUIET)
    assert not out.exists()
    # The planted int8 input moves the logits past the fp32 gate's 1e-3, so the gate is opened: this checks the lint.
    opened = GateThresholds(max_abs_logit=100.0, min_agreement=0.0)
    res = export(trained_tiny, ExportOptions("fp32", out, fmt="onnx", progress=False, check_trt=False,
                                             thresholds=opened), **QUIET)
    assert res.path == out and out.exists()
    problems = res.report["tensorrt_readiness"]["problems"]
    assert not res.report["tensorrt_readiness"]["ok"] and any("weight input" in p for p in problems)
    assert "TensorRT readiness: PROBLEMS" in out.with_name("m.fp32.report.md").read_text()


def test_int8_fp16_export_keeps_qdq_fp16_and_passes_the_gate(trained_tiny, tiny_cache, export_dir):
    """--high-precision fp16: opset 19, fp16 Q/DQ scales, no Cast after any DQ, the lint and the gate pass."""
    res = export(trained_tiny, ExportOptions("int8", export_dir / "m.int8fp16.onnx", fmt="onnx", data=tiny_cache.root,
                                             calib_clips=48, high_precision="fp16", int8_scope="no-stem",
                                             progress=False), **QUIET)
    assert res.passed, res.report["gate"]
    g = onnx.load(res.path)
    assert max(o.version for o in g.opset_import if o.domain in ("", "ai.onnx")) == 19
    assert res.report["tensorrt_readiness"]["ok"] and not readiness.fusion_lint(g).problems
    producers = {o: n for n in g.graph.node for o in n.output}
    assert not [n.name for n in g.graph.node if n.op_type == "Cast" and n.input[0] in producers
                and producers[n.input[0]].op_type == "DequantizeLinear"]
    kept = res.report["tensorrt_readiness"]["high_precision_layers"]
    stem = next(n.name for n in g.graph.node if n.op_type == "Conv" and "video" in producers.get(n.input[0], n).input)
    assert "video stem" in kept[stem]  # the scope's choice is listed with its reason
    assert f"`{stem}`: video stem" in res.path.with_name("m.int8fp16.report.md").read_text()
