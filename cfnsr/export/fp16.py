"""fp16: the fp32 graph converted by ONNX Runtime's float16 converter, keeping what fp16 breaks in fp32.

Inputs and outputs stay fp32 (casts inside the graph). LayerNorm, Softmax, reductions, the positional/mask
path and the additions that feed a Softmax (the causal mask is added there) stay fp32. The result is a strongly
typed graph: TensorRT builds it as it is, with no precision flags.
"""

from __future__ import annotations

import onnx

from .onnx_graph import producers, topological_sort

# Kept in fp32 by op type: normalisation, softmax, reductions, and the integer/boolean position path.
FP32_OPS = [
    "LayerNormalization", "Softmax", "ReduceMean", "ReduceSum", "ReduceMax", "ReduceMin", "ReduceSumSquare",
    "ReduceL2", "Equal", "Not", "Where", "GatherND", "Gather", "BatchNormalization",
]


def mask_path_nodes(model: onnx.ModelProto) -> list[str]:
    """Nodes whose output feeds a Softmax directly: the additive causal mask lives there."""
    producer = producers(model)
    names = []
    for n in model.graph.node:
        if n.op_type == "Softmax":
            src = producer.get(n.input[0])
            if src is not None and src.op_type in ("Add", "Where", "Mul"):
                names.append(src.name)
    return names


def to_fp16(model: onnx.ModelProto, extra_fp32_nodes: list[str] | None = None,
            extra_fp32_ops: list[str] | None = None) -> onnx.ModelProto:
    from onnxruntime.transformers.float16 import convert_float_to_float16

    block_nodes = mask_path_nodes(model) + list(extra_fp32_nodes or [])
    converted = convert_float_to_float16(
        model, keep_io_types=True, disable_shape_infer=False,
        op_block_list=FP32_OPS + list(extra_fp32_ops or []), node_block_list=block_nodes,
    )
    converted = topological_sort(converted)
    # The converter leaves some value_info with the old element type; drop it and infer afresh.
    del converted.graph.value_info[:]
    converted = onnx.shape_inference.infer_shapes(converted, strict_mode=True)
    onnx.checker.check_model(converted)
    return converted
