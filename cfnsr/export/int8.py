"""int8: explicit quantization (QuantizeLinear/DequantizeLinear) in the form TensorRT's strongly typed builder takes:
symmetric int8, zero points 0, per-channel weights, per-tensor activations, no quantized bias.

``--int8-scope`` decides which Conv/MatMul/Gemm nodes get Q/DQ; the rest stays in high precision (fp32, or fp16
with ``--high-precision fp16``). On CPUs and on TensorRT the int8 7x7x7 stem and the grouped 3x3x3 convolutions are
often no faster than fp16/fp32, so the scope is a choice to benchmark, not a given.
"""

from __future__ import annotations

import onnx

from ..errors import CfnsrError
from .onnx_graph import reachable_from

QUANT_OPS = ("Conv", "MatMul", "Gemm")

SCOPES = {
    "all": "every Conv, MatMul and Gemm",
    "no-stem": "everything but the 7x7x7 video stem",
    "no-grouped": "everything but the grouped 3x3x3 convolutions of the ResNeXt",
    "no-stem-grouped": "everything but the stem and the grouped convolutions",
    "audio-fusion": "the audio branch, the fusion block and the classifier (the whole video branch stays high precision)",
}


def _group(node: onnx.NodeProto) -> int:
    for a in node.attribute:
        if a.name == "group":
            return a.i
    return 1


def quantizable_nodes(model: onnx.ModelProto, scope: str) -> tuple[list[str], list[str]]:
    """(nodes to quantize, candidate nodes left in high precision) for ``scope``.

    The video branch is found from the graph, not from names: the nodes downstream of the ``video`` input and not
    of the ``audio`` input. The stem is the Conv that reads the ``video`` input.
    """
    if scope not in SCOPES:
        raise CfnsrError(f"unknown --int8-scope {scope!r}; choose one of: {', '.join(SCOPES)}")
    video_only = reachable_from(model, "video") - reachable_from(model, "audio")
    keep, skip = [], []
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS:
            continue
        is_stem = n.op_type == "Conv" and n.input[0] == "video"
        is_grouped = n.op_type == "Conv" and _group(n) > 1
        excluded = (
            (scope in ("no-stem", "no-stem-grouped") and is_stem)
            or (scope in ("no-grouped", "no-stem-grouped") and is_grouped)
            or (scope == "audio-fusion" and n.name in video_only)
        )
        (skip if excluded else keep).append(n.name)
    return keep, skip


def quantize(model: onnx.ModelProto, ranges_tensors_data, scope: str) -> onnx.ModelProto:
    """Insert Q/DQ with ONNX Runtime's QDQ quantizer and the given activation ranges."""
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    nodes, _ = quantizable_nodes(model, scope)
    if not nodes:
        raise CfnsrError(f"--int8-scope {scope} leaves nothing to quantize")
    extra = {
        "ActivationSymmetric": True,  # zero point 0, as TensorRT requires
        "WeightSymmetric": True,
        "QuantizeBias": False,  # TensorRT takes no int32 bias Q/DQ
        "DedicatedQDQPair": False,
        "ForceQuantizeNoInputCheck": False,
    }
    quantizer = QDQQuantizer(
        model, True, False, QuantType.QInt8, QuantType.QInt8, ranges_tensors_data,
        nodes, [], list(QUANT_OPS), extra,
    )
    quantizer.quantize_model()
    quantizer.model.topological_sort()
    out = quantizer.model.model
    onnx.checker.check_model(out)
    return out
