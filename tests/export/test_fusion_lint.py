"""The TensorRT fusion lint on small hand-built graphs: each breaks one rule, and the lint must name the node."""

import numpy as np
import pytest
from onnx import TensorProto, helper, numpy_helper

from cfnsr.export import readiness

C = 4  # channels


def _graph(nodes, extra_inits=(), opset=18):
    """x (1,C,8,8) -> nodes -> y; with a conv weight ``w`` (C,C,3,3), its int8 form, scales and zero points."""
    w = np.random.default_rng(0).standard_normal((C, C, 3, 3)).astype(np.float32)
    wq = np.clip(np.round(w / (np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127)), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(wq, "wq"),
        numpy_helper.from_array(np.full(C, 0.01, np.float32), "ws"),  # per-channel weight scales
        numpy_helper.from_array(np.array(0.01, np.float32), "ws1"),  # per-tensor scale
        numpy_helper.from_array(np.zeros(C, np.int8), "wzp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "zp"),
        *extra_inits,
    ]
    g = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8])],
                          [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])


def qdq(src, name):
    """Q -> DQ of ``src`` (per-tensor), output ``name``."""
    return [helper.make_node("QuantizeLinear", [src, "s", "zp"], [f"{name}_q"], name=f"Q_{name}"),
            helper.make_node("DequantizeLinear", [f"{name}_q", "s", "zp"], [name], name=f"DQ_{name}")]


def wdq(name="wd", scale="ws", axis=0):
    return helper.make_node("DequantizeLinear", ["wq", scale, "wzp" if scale == "ws" else "zp"], [name],
                            name=f"DQ_{name}", axis=axis)


def conv(x, w, out, name):
    return helper.make_node("Conv", [x, w], [out], name=name, pads=[1, 1, 1, 1])


def problems(model):
    return readiness.fusion_lint(model).problems


def test_a_placement_trt_fuses_passes():
    # x -> Q/DQ -> Conv -> Relu -> Q/DQ -> Conv -> Add(shortcut through the first Relu's DQ) -> Relu
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c1", "conv1"), helper.make_node("Relu", ["c1"], ["r1"]),
             *qdq("r1", "r1d"), conv("r1d", "wd", "c2", "conv2"),
             helper.make_node("Add", ["c2", "r1d"], ["a"], name="add"), helper.make_node("Relu", ["a"], ["y"])]
    lint = readiness.fusion_lint(_graph(nodes))
    assert lint.problems == [] and sorted(lint.fused_int8) == ["conv1", "conv2"]


def test_projection_shortcut_may_quantize_its_conv_output():
    # The shortcut Conv's output goes through Q/DQ into the Add; the main Conv feeds the Add directly.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "main", "conv_main"), conv("xd", "wd", "sc", "conv_shortcut"),
             *qdq("sc", "scd"), helper.make_node("Add", ["main", "scd"], ["a"], name="add"),
             helper.make_node("Relu", ["a"], ["y"])]
    assert problems(_graph(nodes)) == []


def test_output_quantization_is_named():
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_out_q"), *qdq("c", "cd"),
             helper.make_node("Relu", ["cd"], ["y"])]
    (p,) = problems(_graph(nodes))
    assert "Conv conv_out_q: its output is quantized (Q_cd) before its ReLU/Add" in p


def test_cast_after_the_layer_is_named():
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_cast"),
             helper.make_node("Cast", ["c"], ["cc"], name="cast_out", to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["cc"], ["y"], to=TensorProto.FLOAT)]
    assert any("Conv conv_cast: its output is cast (cast_out)" in p for p in problems(_graph(nodes)))


def test_data_input_without_dq_is_named():
    nodes = [wdq(), conv("x", "wd", "y", "conv_half")]
    (p,) = problems(_graph(nodes))
    assert "Conv conv_half: its data input 'x' is not fed by a DequantizeLinear directly" in p


def test_weight_without_dq_is_named():
    nodes = [*qdq("x", "xd"), conv("xd", "w", "y", "conv_fp_weight")]
    (p,) = problems(_graph(nodes))
    assert "Conv conv_fp_weight: its weight input 'w' is not fed by a DequantizeLinear" in p


@pytest.mark.parametrize("scale,axis", [("ws1", 0), ("ws", 1)])
def test_weight_dq_must_be_per_channel_on_output_axis(scale, axis):
    nodes = [*qdq("x", "xd"), wdq(scale=scale, axis=axis), conv("xd", "wd", "y", "conv_per_tensor")]
    ps = problems(_graph(nodes))
    assert any("Conv conv_per_tensor: weight DequantizeLinear DQ_wd is not per-channel on the output-channel axis 0"
               in p for p in ps), ps


def test_unfusable_residual_add_is_named():
    # Main Conv feeds the Add directly, but the shortcut (the raw input) has no Q/DQ.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_main"),
             helper.make_node("Add", ["c", "x"], ["a"], name="add_res"), helper.make_node("Relu", ["a"], ["y"])]
    (p,) = problems(_graph(nodes))
    assert "Add add_res: fed by the quantized Conv conv_main but its other input 'x' has no DequantizeLinear" in p


def test_both_residual_inputs_unquantized_is_one_problem():
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "a1", "conv_a"), conv("xd", "wd", "b1", "conv_b"),
             helper.make_node("Add", ["a1", "b1"], ["y"], name="add_both")]
    ps = problems(_graph(nodes))
    assert len(ps) == 1 and "Add add_both" in ps[0]


def test_cast_between_dq_and_consumer_is_named():
    nodes = [*qdq("x", "xd"), helper.make_node("Cast", ["xd"], ["xh"], name="cast_after_dq", to=TensorProto.FLOAT16),
             helper.make_node("Cast", ["xh"], ["xf"], to=TensorProto.FLOAT), wdq(), conv("xf", "wd", "y", "conv_c")]
    ps = problems(_graph(nodes))
    assert any("DequantizeLinear DQ_xd: feeds Cast cast_after_dq" in p for p in ps), ps


def test_cast_before_quantize_is_named():
    nodes = [helper.make_node("Cast", ["x"], ["xc"], name="cast_before_q", to=TensorProto.FLOAT), *qdq("xc", "xd"),
             wdq(), conv("xd", "wd", "y", "conv_q")]
    ps = problems(_graph(nodes))
    assert any("QuantizeLinear Q_xd: reads Cast cast_before_q" in p for p in ps), ps


def test_unquantized_layers_are_listed_not_failed():
    nodes = [conv("x", "w", "y", "conv_fp32")]
    lint = readiness.fusion_lint(_graph(nodes))
    assert lint.problems == [] and "conv_fp32" in lint.high_precision


def test_readiness_fails_on_lint_problems_and_opsets_beyond_tensorrt():
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_out_q"), *qdq("c", "cd"),
             helper.make_node("Relu", ["cd"], ["y"])]
    r = readiness.check(_graph(nodes))
    assert not r.ok and "conv_out_q" in str(r)
    r21 = readiness.check(_graph([helper.make_node("Relu", ["x"], ["y"])], opset=21))
    assert "opset 21: the ONNX parser of TensorRT 10.3" in str(r21)
    assert readiness.check(_graph([helper.make_node("Relu", ["x"], ["y"])], opset=19)).ok
