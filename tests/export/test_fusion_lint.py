"""The TensorRT fusion lint on a corpus of small hand-built graphs: one per rule (the lint must name the node) and one
per pattern TensorRT fuses (the lint must pass it). Each case cites the source line it follows; the tags are the ones
``cfnsr/export/readiness.py`` defines above ``fusion_lint`` ([TRT-G], [TRT-S], [OTRT], [MO])."""

import numpy as np
from onnx import TensorProto, helper, numpy_helper

from cfnsr.export import readiness

C = 4  # channels


def _graph(nodes, extra_inits=(), opset=18, inputs=None):
    """x (1,C,8,8) -> nodes -> y; with a conv weight ``w`` (C,C,3,3), its int8 form, scales and zero points."""
    w = np.random.default_rng(0).standard_normal((C, C, 3, 3)).astype(np.float32)
    wq = np.clip(np.round(w / (np.abs(w).max(axis=(1, 2, 3), keepdims=True) / 127)), -127, 127).astype(np.int8)
    inits = [
        numpy_helper.from_array(w, "w"), numpy_helper.from_array(wq, "wq"),
        numpy_helper.from_array(np.full(C, 0.01, np.float32), "ws"),  # per-channel weight scales
        numpy_helper.from_array(np.array(0.01, np.float32), "ws1"),  # per-tensor scale
        numpy_helper.from_array(np.zeros(C, np.int8), "wzp"),
        numpy_helper.from_array(np.array(0.05, np.float32), "s"), numpy_helper.from_array(np.array(0, np.int8), "zp"),
        numpy_helper.from_array(np.full(C, 0.05, np.float32), "sc"),  # per-channel activation scales
        numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape3"),
        *extra_inits,
    ]
    g = helper.make_graph(nodes, "g", inputs or [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, C, 8, 8])],
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


def relu(x, y, name=None):
    return helper.make_node("Relu", [x], [y], name=name or f"relu_{y}")


def add(a, b, y, name):
    return helper.make_node("Add", [a, b], [y], name=name)


# ---------------------------------------------------------------------------------------- patterns TensorRT fuses
def test_inputs_quantized_relu_and_residual_add_fuse():
    # [TRT-G] "quantize all inputs of weighted operations", the residual input quantized: Conv+ReLU, Conv+Add+ReLU.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c1", "conv1"), relu("c1", "r1"),
             *qdq("r1", "r1d"), conv("r1d", "wd", "c2", "conv2"), add("c2", "r1d", "a", "add"), relu("a", "y")]
    lint = readiness.fusion_lint(_graph(nodes))
    assert lint.problems == [] and sorted(lint.fused_int8) == ["conv1", "conv2"] and lint.costs == {}


def test_output_q_into_a_quantized_consumer_fuses():
    # [TRT-G] Fig. 3 (right): "both inputs and output are quantized": the Q fuses into the Conv, which writes int8.
    # ModelOpt places it so after a Conv with no activation (cfnsr's stem has no ReLU after its BatchNorm).
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c1", "stem"),
             helper.make_node("BatchNormalization", ["c1", "g", "b", "m", "v"], ["bn"], name="bn"),
             *qdq("bn", "bnd"), conv("bnd", "wd", "y", "conv2")]
    bn = [numpy_helper.from_array(np.full(C, v, np.float32), n) for n, v in (("g", 1), ("b", 0), ("m", 0), ("v", 1))]
    lint = readiness.fusion_lint(_graph(nodes, bn))
    assert lint.problems == [] and lint.costs == {} and sorted(lint.fused_int8) == ["conv2", "stem"]


def test_dq_propagates_through_maxpool_reshape_and_transpose():
    # [TRT-G] Fig. 2 "DQ forward-propagation" across ops that commute with quantization; [MO] get_copy_ops.
    nodes = [*qdq("x", "xd"), helper.make_node("MaxPool", ["xd"], ["mp"], name="pool", kernel_shape=[2, 2]),
             helper.make_node("Transpose", ["mp"], ["tp"], perm=[0, 1, 3, 2]),
             helper.make_node("Identity", ["tp"], ["id"]), wdq(), conv("id", "wd", "c", "conv_after_pool"),
             helper.make_node("Reshape", ["c", "shape3"], ["rs"]), *qdq("rs", "rsd"),
             helper.make_node("Reshape", ["rsd", "shape4"], ["back"]), conv("back", "wd", "y", "conv_after_reshape")]
    shape4 = numpy_helper.from_array(np.array([1, C, 4, 4], np.int64), "shape4")
    lint = readiness.fusion_lint(_graph(nodes, [shape4]))
    assert lint.problems == [] and sorted(lint.fused_int8) == ["conv_after_pool", "conv_after_reshape"]


def test_residual_add_with_a_float_shortcut_still_fuses_its_trailing_q_costs():
    # [TRT-G] Fig. 6: the Add fuses into the Conv; with the shortcut x in float the fused output is float, so only
    # the trailing Q cannot fuse. Not a problem: a cost.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_main"), add("c", "x", "a", "add_res"),
             relu("a", "r"), *qdq("r", "rd"), conv("rd", "wd", "y", "conv_next")]
    lint = readiness.fusion_lint(_graph(nodes))
    assert lint.problems == [] and "add_res" in lint.costs and "Q after it runs alone" in lint.costs["add_res"]
    # Without a Q after the Add there is nothing to pay.
    plain = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_main"), add("c", "x", "a", "add_res"),
             relu("a", "y")]
    assert readiness.fusion_lint(_graph(plain)).costs == {}


def test_projection_shortcut_may_quantize_its_conv_output():
    # [TRT-G] Fig. 7: the shortcut quantized (a Conv's output, its Q fused into it): the Add fuses into the main Conv.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "main", "conv_main"), conv("xd", "wd", "sc", "conv_shortcut"),
             *qdq("sc", "scd"), add("main", "scd", "a", "add"), relu("a", "y")]
    assert problems(_graph(nodes)) == []


def test_q_after_the_activation_before_a_later_batchnorm_is_a_cost():
    # [MO] _build_fusible_partition: Conv -> BN -> Relu is the fused partition; a BN after the ReLU is not in it, so
    # ModelOpt's Q after the ReLU (cfnsr's audio convs are Conv -> ReLU -> BN) fuses into the Conv [TRT-G Fig. 3];
    # the BN then reads dequantized data: a cost, not a problem.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_audio"), relu("c", "r"), *qdq("r", "rd"),
             helper.make_node("BatchNormalization", ["rd", "g", "b", "m", "v"], ["y"], name="bn_after_relu")]
    bn = [numpy_helper.from_array(np.full(C, v, np.float32), n) for n, v in (("g", 1), ("b", 0), ("m", 0), ("v", 1))]
    lint = readiness.fusion_lint(_graph(nodes, bn))
    assert lint.problems == [] and "BatchNormalization" in lint.costs["conv_audio"]


def test_per_tensor_weights_are_a_cost_not_a_problem():
    # [TRT-S]: per-tensor weight scales are valid; per-channel ones are what TensorRT recommends.
    nodes = [*qdq("x", "xd"), wdq(scale="ws1"), conv("xd", "wd", "y", "conv_per_tensor")]
    lint = readiness.fusion_lint(_graph(nodes))
    assert lint.problems == [] and "per-tensor weight scale" in lint.costs["conv_per_tensor"]


def test_unquantized_layers_are_listed_not_failed():
    nodes = [conv("x", "w", "y", "conv_fp32")]
    lint = readiness.fusion_lint(_graph(nodes))
    assert lint.problems == [] and "conv_fp32" in lint.high_precision


def test_uint8_input_cast_first_passes():
    # [OTRT] docs/operators.md:13 "UINT8 is only supported as network input or output tensor types": Cast it at once.
    nodes = [helper.make_node("Identity", ["f"], ["fi"]),
             helper.make_node("Cast", ["fi"], ["x"], name="to_float", to=TensorProto.FLOAT), relu("x", "y")]
    frames = [helper.make_tensor_value_info("f", TensorProto.UINT8, [1, C, 8, 8])]
    assert problems(_graph(nodes, inputs=frames)) == []


# ------------------------------------------------------------------------------------------------------ problems
def test_qdq_between_the_layer_and_its_activation_is_named():
    # [TRT-G] Fig. 9: "the extra pair of Q/DQ operators ... forces the separation of the convolution operator" from
    # what it would fuse; [MO] _build_fusible_partition keeps Conv -> BN -> Relu in one partition.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_out_q"), *qdq("c", "cd"), relu("cd", "y")]
    (p,) = problems(_graph(nodes))
    assert "Conv conv_out_q: a Q/DQ (Q_cd) sits between it and its epilogue (Relu)" in p


def test_cast_after_the_layer_is_named():
    # [TRT-G] Fig. 9 as for a Q/DQ: the Cast separates the Conv from the ReLU it would fuse.
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_cast"),
             helper.make_node("Cast", ["c"], ["y"], name="cast_out", to=TensorProto.FLOAT16), relu("y", "r")]
    assert any("Conv conv_cast: its output is cast (cast_out)" in p for p in problems(_graph(nodes)))
    # After the epilogue a Cast is the next op's business, not the Conv's.
    after = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_cast"), relu("c", "r"),
             helper.make_node("Cast", ["r"], ["y"], name="cast_after", to=TensorProto.FLOAT16)]
    assert problems(_graph(after)) == []


def test_data_input_without_dq_is_named():
    # [TRT-G] "quantize all inputs of weighted operations": a half-quantized Conv runs in high precision.
    nodes = [wdq(), conv("x", "wd", "y", "conv_half")]
    (p,) = problems(_graph(nodes))
    assert "Conv conv_half: its data input 'x' is not fed by a DequantizeLinear" in p


def test_a_non_commuting_op_between_dq_and_layer_is_named():
    # [TRT-G] Fig. 2: a DQ propagates only across ops that commute with quantization; Sigmoid does not.
    nodes = [*qdq("x", "xd"), helper.make_node("Sigmoid", ["xd"], ["sg"], name="sig"), wdq(),
             conv("sg", "wd", "y", "conv_sig")]
    (p,) = problems(_graph(nodes))
    assert "Conv conv_sig: its data input 'sg' is not fed by a DequantizeLinear" in p and "Sigmoid sig" in p


def test_weight_without_dq_is_named():
    nodes = [*qdq("x", "xd"), conv("xd", "w", "y", "conv_fp_weight")]
    (p,) = problems(_graph(nodes))
    assert "Conv conv_fp_weight: its weight input 'w' is not fed by a DequantizeLinear" in p


def test_weight_dq_per_channel_on_the_wrong_axis_is_named():
    # [TRT-S] per-channel weight scales along the output-channel axis K only.
    nodes = [*qdq("x", "xd"), wdq(axis=1), conv("xd", "wd", "y", "conv_axis1")]
    ps = problems(_graph(nodes))
    assert any("Conv conv_axis1: weight DequantizeLinear DQ_wd is not per-channel on the output-channel axis 0"
               in p for p in ps), ps


def test_per_channel_activation_qdq_is_named():
    # [TRT-S] activations are quantized per tensor only.
    nodes = [helper.make_node("QuantizeLinear", ["x", "sc", "wzp"], ["xq"], name="Q_pc", axis=1),
             helper.make_node("DequantizeLinear", ["xq", "sc", "wzp"], ["xd"], name="DQ_pc", axis=1),
             wdq(), conv("xd", "wd", "y", "conv_pc")]
    ps = problems(_graph(nodes))
    assert any("QuantizeLinear Q_pc: per-channel (4 scales) on the activation 'x'" in p for p in ps), ps
    assert any("DequantizeLinear DQ_pc: per-channel" in p for p in ps), ps


def test_uint8_input_read_by_anything_but_cast_is_named():
    # [OTRT] docs/operators.md:13: a uint8 tensor inside the network is not supported.
    nodes = [helper.make_node("Identity", ["f"], ["fi"]), helper.make_node("Gather", ["fi", "idx"], ["g"],
                                                                           name="gather_rgb", axis=1),
             helper.make_node("Cast", ["g"], ["y"], to=TensorProto.FLOAT)]
    frames = [helper.make_tensor_value_info("f", TensorProto.UINT8, [1, C, 8, 8])]
    idx = numpy_helper.from_array(np.array([2, 1, 0, 3], np.int64), "idx")
    (p,) = problems(_graph(nodes, [idx], inputs=frames))
    assert "input 'f' is uint8 and read by Gather gather_rgb" in p


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


def test_readiness_fails_on_lint_problems_and_opsets_beyond_tensorrt():
    nodes = [*qdq("x", "xd"), wdq(), conv("xd", "wd", "c", "conv_out_q"), *qdq("c", "cd"), relu("cd", "y")]
    r = readiness.check(_graph(nodes))
    assert not r.ok and "conv_out_q" in str(r)
    r21 = readiness.check(_graph([relu("x", "y")], opset=21))
    assert "opset 21: the ONNX parser of TensorRT 10.3" in str(r21)
    assert readiness.check(_graph([relu("x", "y")], opset=19)).ok


def test_cfnsr_exports_lint_clean(int8_onnx, media_onnx):
    """cfnsr's own int8 export and its media (uint8 frames) export: no problems, and the int8 Convs fused."""
    import onnx

    int8 = readiness.fusion_lint(onnx.load(str(int8_onnx.path)))
    assert int8.problems == [] and len(int8.fused_int8) > 10
    assert readiness.fusion_lint(onnx.load(str(media_onnx.path))).problems == []
