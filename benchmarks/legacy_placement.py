"""The int8 placement cfnsr used before 0.2 (ONNX Runtime's QDQ defaults), kept only as the benchmarks' baseline.

ONNX Runtime's quantizer, left at its defaults, quantizes the *outputs* of Conv/MatMul/Gemm as well as their inputs
(``Conv -> Q -> DQ -> Relu``), quantizes both inputs of every residual Add's producers, and treats the attention
MatMuls like any other layer. ``cfnsr.export.int8`` places Q/DQ the way TensorRT fuses; this module exists so that
``benchmarks/int8_placement.py`` and ``benchmarks/cpu_backends.py`` can measure the two in one run.
"""

from __future__ import annotations

import numpy as np
import onnx

from cfnsr.export.onnx_graph import reachable_from


def legacy_quantize(model: onnx.ModelProto, ranges: dict, scope: str = "all",
                    activation_symmetric: bool = True) -> onnx.ModelProto:
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    model = onnx.shape_inference.infer_shapes(model)
    video_only = reachable_from(model, "video") - reachable_from(model, "audio")
    nodes = []
    for n in model.graph.node:
        if n.op_type not in ("Conv", "MatMul", "Gemm"):
            continue
        stem = n.op_type == "Conv" and n.input[0] == "video"
        grouped = n.op_type == "Conv" and any(a.name == "group" and a.i > 1 for a in n.attribute)
        if ((scope in ("no-stem", "no-stem-grouped") and stem)
                or (scope in ("no-grouped", "no-stem-grouped") and grouped)
                or (scope == "audio-fusion" and n.name in video_only)):
            continue
        nodes.append(n.name)
    extra = {"ActivationSymmetric": activation_symmetric, "WeightSymmetric": True, "QuantizeBias": False,
             "DedicatedQDQPair": False, "ForceQuantizeNoInputCheck": False}
    data = TensorsData(CalibrationMethod.MinMax,
                       {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()})
    q = QDQQuantizer(model, True, False, QuantType.QInt8, QuantType.QInt8, data, nodes, [],
                     ["Conv", "MatMul", "Gemm"], extra)
    q.quantize_model()
    q.model.topological_sort()
    return q.model.model
