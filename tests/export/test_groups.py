"""Layer groups: every Conv/MatMul/Gemm in exactly one group named from the network; scopes are unions of groups."""

import onnx
import pytest

from cfnsr.export import groups


def _export(name, tmp_path):
    import torch

    from cfnsr.export.onnx_graph import export_fp32
    from cfnsr.model import create_model

    torch.manual_seed(0)
    return onnx.shape_inference.infer_shapes(export_fp32(create_model(name).eval(), tmp_path / f"{name}.onnx"))


@pytest.fixture(scope="module")
def tiny_graph(tmp_path_factory):
    return _export("cfn-sr-tiny", tmp_path_factory.mktemp("groups"))


def _check_partition(graph, cfg):
    from cfnsr.export.int8 import plan
    from cfnsr.export.onnx_graph import attribute, reachable_from

    layers = [n for n in graph.graph.node if n.op_type in ("Conv", "MatMul", "Gemm")]
    g = groups.grouping(graph)
    assert sorted(g.of_node) == sorted(n.name for n in layers)  # each layer once (a dict: exactly one group)
    assert set(plan(graph, "all").quantize) <= set(g.of_node)
    assert g.present() == list(groups.all_groups())  # every group is populated
    by_group = {name: [n for n in layers if g.of_node[n.name] == name] for name in g.present()}
    # what the names promise, checked against the graph itself
    assert [n.input[0] for n in by_group["stem"]] == ["video"]
    video_only = reachable_from(graph, "video") - reachable_from(graph, "audio")
    audio_only = reachable_from(graph, "audio") - reachable_from(graph, "video")
    for s in groups.STAGES:
        blocks = cfg.layers[s - 1]
        grouped = by_group[f"stage{s}.grouped"]
        assert len(grouped) == blocks and all(attribute(n, "group", 1) == cfg.cardinality for n in grouped)
        assert len(by_group[f"stage{s}.reduce"]) == len(by_group[f"stage{s}.expand"]) == blocks
        assert len(by_group[f"stage{s}.downsample"]) == 1  # a projection shortcut in each stage's first block
        for part in groups.PARTS:
            assert all(n.op_type == "Conv" and n.name in video_only for n in by_group[f"stage{s}.{part}"])
    assert len(by_group["audio"]) == 3 and all(n.name in audio_only for n in by_group["audio"])
    assert all(n.name in audio_only for n in by_group["attention"])
    assert len(by_group["attention"]) == 6 * cfg.transformer_layers  # in, scores, context, out, fc1, fc2
    assert len(by_group["fusion"]) == 3 and len(by_group["classifier"]) == 1
    assert any(o.name == "logits" for o in graph.graph.output)


def test_tiny_grouping_covers_every_layer_once(tiny_graph):
    from cfnsr.model import get_config

    _check_partition(tiny_graph, get_config("cfn-sr-tiny"))


@pytest.mark.slow
def test_paper_size_grouping_covers_every_layer_once(tmp_path):
    from cfnsr.model import get_config

    _check_partition(_export("cfn-sr", tmp_path), get_config("cfn-sr"))


def test_scopes_are_unions_of_groups(tiny_graph):
    from cfnsr.export.formats import INT8_SCOPES as SCOPES
    from cfnsr.export.int8 import plan

    assert set(groups.SCOPE_GROUPS) == set(SCOPES)
    g = groups.grouping(tiny_graph)
    for scope in SCOPES:
        p = plan(tiny_graph, scope)
        assert plan(tiny_graph, sorted(groups.SCOPE_GROUPS[scope])).quantize == p.quantize
        assert {g.of_node[n] for n in p.quantize} <= groups.SCOPE_GROUPS[scope]
    assert groups.SCOPE_GROUPS["all"] == frozenset(groups.all_groups())
    assert groups.SCOPE_GROUPS["no-grouped"] == frozenset(x for x in groups.all_groups() if not x.endswith("grouped"))


def test_a_graph_without_module_paths_is_refused(tiny_graph):
    from cfnsr.errors import ArtifactError

    bare = onnx.ModelProto()
    bare.CopyFrom(tiny_graph)
    for n in bare.graph.node:
        del n.metadata_props[:]
    with pytest.raises(ArtifactError, match="no module path"):
        groups.grouping(bare)


def test_a_group_name_that_contradicts_the_graph_is_refused(tiny_graph):
    from cfnsr.errors import ArtifactError

    wrong = onnx.ModelProto()
    wrong.CopyFrom(tiny_graph)
    conv = next(n for n in wrong.graph.node if groups.group_of(n) == "stage1.reduce")
    for p in conv.metadata_props:
        if p.key == "pkg.torch.onnx.name_scopes":
            p.value = p.value.replace("bn1", "bn2")
    with pytest.raises(ArtifactError, match="not a grouped convolution"):
        groups.grouping(wrong)


def test_describe():
    assert groups.describe("stage2.grouped") == "grouped 3x3x3, stage 2"
    assert groups.describe("stem") == "video stem (7x7x7)"


def test_any_mix_of_groups_is_tensorrt_ready(tiny_graph):
    """The search builds graphs from any set of groups: each one alone and all but each one pass the readiness check,
    and no float layer reads a Q/DQ'd activation (a stage's reduce and downsample read one tensor; only one may be
    int8)."""
    from cfnsr.errors import CfnsrError
    from cfnsr.export import readiness
    from cfnsr.export.int8 import quantize

    ranges = {t: (-4.0, 4.0) for n in tiny_graph.graph.node for t in list(n.input) + list(n.output)}
    present = groups.grouping(tiny_graph).present()
    checked = 0
    for g in present:
        for mix in ({g}, set(present) - {g}):
            try:
                q, placement = quantize(tiny_graph, ranges, sorted(mix))
            except CfnsrError as e:  # the classifier alone: a GEMV, nothing int8 can take
                assert mix == {"classifier"} and "nothing to quantize" in str(e)
                continue
            assert readiness.check(q).problems == [], sorted(mix)
            producer = {o: n for n in q.graph.node for o in n.output}
            for n in q.graph.node:
                if n.op_type in groups.QUANT_OPS and n.name not in placement.quantize:
                    assert producer.get(n.input[0]) is None or producer[n.input[0]].op_type != "DequantizeLinear", \
                        (sorted(mix), n.name)
            checked += 1
    assert checked == 2 * len(present) - 1
