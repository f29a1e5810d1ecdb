"""int8: explicit quantization (QuantizeLinear/DequantizeLinear) placed the way TensorRT fuses it.

TensorRT's strongly typed builder takes Q/DQ graphs as they are, so where the Q/DQ pairs sit decides which kernels
run. The placement here follows NVIDIA's recipe (the TensorRT developer guide's Q/DQ placement recommendations, and
ModelOpt's ONNX PTQ, which configures ONNX Runtime's quantizer the same way):

* Q/DQ on the *inputs* of Conv/MatMul/Gemm only: activations per-tensor, weights per-channel on the output-channel
  axis, symmetric int8, zero points 0, bias not quantized. Nothing on their outputs: ``Conv -> Relu -> Q`` lets
  TensorRT run Conv+bias+ReLU(+Q) as one int8 kernel, where ``Conv -> Q -> DQ -> Relu`` would cut the fusion and
  spend half of the int8 range on values the ReLU removes.
* Residual Adds: the Add fed directly by a quantized Conv gets Q/DQ on its *other* (shortcut) input only, so that
  TensorRT fuses the Add (and the ReLU after it) into that Conv's epilogue. When both inputs are Convs (a
  projection shortcut), the shortcut is the branch that reads an ancestor of the other.
* Layers that int8 cannot speed up stay in high precision (ModelOpt's GEMV rule): a MatMul/Gemm with one output
  column, or one row per sample (the classifier, the audio-summary projection), cannot use int8 tensor cores.
* Attention: the activation-by-activation MatMuls (Q@K^T, softmax@V) and the Softmax stay in high precision. With
  26 audio steps they are a negligible share of the time, and TensorRT's int8 MHA fusion needs a pattern (Q/DQ on
  the Softmax output) that costs accuracy for no measurable gain here. ``quantize(attention=True)`` places them
  anyway, for the measurement in ``benchmarks/int8_placement.py``.

ONNX Runtime's QDQ quantizer does the insertion (weights quantized with its numerics), configured like ModelOpt's
``configure_ort``; the residual inputs and the fp16 form (fp16 scales at opset 19, no Casts around Q/DQ) are small
passes of our own. ``--int8-scope`` decides which layers are candidates; the rest stays in high precision (fp32, or
fp16 with ``--high-precision fp16``). On CPUs and on TensorRT the int8 7x7x7 stem and the grouped 3x3x3
convolutions are often no faster than fp16/fp32, so the scope is a choice to benchmark, not a given.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass, field

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from ..errors import CfnsrError
from . import groups as groups_mod
from .formats import check_choice
from .onnx_graph import attribute, consumers, producers, topological_sort

QUANT_OPS = groups_mod.QUANT_OPS
# fp16 Q/DQ scales (and a DequantizeLinear with fp16 output) need opset 19; TensorRT 10.0+ parses opsets 9-20.
FP16_QDQ_OPSET = 19


@dataclass
class Placement:
    """Which layers get Q/DQ, which stay in high precision (and why), and the residual inputs to quantize."""

    quantize: list[str] = field(default_factory=list)
    high_precision: dict[str, str] = field(default_factory=dict)  # node name -> reason
    residual: dict[str, str] = field(default_factory=dict)  # Add node name -> the input tensor that gets Q/DQ

    def to_dict(self) -> dict:
        return {"quantized_layers": len(self.quantize), "high_precision_layers": self.high_precision,
                "residual_adds": self.residual}


def _initializers(model: onnx.ModelProto) -> dict[str, onnx.TensorProto]:
    return {i.name: i for i in model.graph.initializer}


def _weight_shape(model: onnx.ModelProto, node: onnx.NodeProto) -> tuple[int, ...] | None:
    init = _initializers(model).get(node.input[1]) if len(node.input) > 1 else None
    return tuple(init.dims) if init is not None else None


def _rows_per_sample(model: onnx.ModelProto, tensor: str) -> int | None:
    """Rows a MatMul/Gemm input contributes per sample: the product of the axes between batch and features."""
    for v in list(model.graph.value_info) + list(model.graph.input):
        if v.name == tensor:
            dims = [d.dim_value if d.dim_value else None for d in v.type.tensor_type.shape.dim]
            if len(dims) < 2 or any(d is None for d in dims[1:-1]):
                return None
            return int(np.prod(dims[1:-1])) if len(dims) > 2 else 1
    return None


def plan(model: onnx.ModelProto, scope: str | Collection[str], attention: bool = False) -> Placement:
    """The placement for ``scope`` on a shape-inferred fp32 graph (see the module docstring for the rules).

    ``scope`` is an ``--int8-scope`` name or a collection of layer groups (``groups.py``; a scope is a union of
    groups): the layers of the other groups stay in high precision, with the group named as the reason.
    """
    if isinstance(scope, str):
        check_choice("int8_scope", scope)
        chosen, why = groups_mod.scope_groups(scope), f"--int8-scope {scope}"
    else:
        chosen, why = frozenset(scope), "float in the precision map"
        unknown = sorted(chosen - set(groups_mod.all_groups()))
        if unknown:
            raise CfnsrError(f"unknown layer groups {unknown}; the groups are: {', '.join(groups_mod.all_groups())}")
    of_node = groups_mod.grouping(model).of_node
    p = Placement()
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS:
            continue
        shape = _weight_shape(model, n)
        if shape is None:  # activation x activation: attention scores and context
            if attention and n.op_type == "MatMul" and of_node[n.name] in chosen:
                p.quantize.append(n.name)
            else:
                p.high_precision[n.name] = "attention MatMul (activation x activation): placement policy"
            continue
        reason = None
        if n.op_type != "Conv":
            out_cols = shape[0] if (n.op_type == "Gemm" and attribute(n, "transB", 0)) else shape[-1]
            if out_cols == 1:
                reason = "GEMV (one output column): int8 cannot use tensor cores here"
            elif _rows_per_sample(model, n.input[0]) == 1:
                reason = "GEMV at batch 1 (one row per sample): int8 cannot use tensor cores here"
        if reason is None and of_node[n.name] not in chosen:
            reason = f"{groups_mod.describe(of_node[n.name])}: {why}"
        if reason is None:
            p.quantize.append(n.name)
        else:
            p.high_precision[n.name] = reason
    p.residual = residual_inputs(model, set(p.quantize))
    return p


def _ancestors(model: onnx.ModelProto, tensor: str) -> set[str]:
    """Every tensor upstream of ``tensor`` (itself included)."""
    producer = producers(model)
    seen, stack = set(), [tensor]
    while stack:
        t = stack.pop()
        if t in seen:
            continue
        seen.add(t)
        if t in producer:
            stack.extend(i for i in producer[t].input if i)
    return seen


def residual_inputs(model: onnx.ModelProto, quantized: set[str]) -> dict[str, str]:
    """{Add node: its shortcut input} for the Adds that TensorRT can fuse into a quantized Conv."""
    producer = producers(model)
    cons = consumers(model)
    consts = set(_initializers(model))

    def fusible(t: str) -> bool:
        n = producer.get(t)
        return n is not None and n.op_type == "Conv" and n.name in quantized and len(cons.get(t, [])) == 1

    out = {}
    for n in model.graph.node:
        if n.op_type != "Add" or len(n.input) != 2 or any(i in consts for i in n.input):
            continue
        a, b = n.input
        fa, fb = fusible(a), fusible(b)
        if not (fa or fb):
            continue
        if fa and fb:  # projection shortcut: the branch reading an ancestor of the other branch is the shortcut
            residual = a if producer[a].input[0] in _ancestors(model, producer[b].input[0]) else b
        else:
            residual = b if fa else a
        out[n.name] = residual
    return out


def quantizable_nodes(model: onnx.ModelProto, scope: str) -> tuple[list[str], list[str]]:
    """(layers to quantize, candidate layers left in high precision) for ``scope``."""
    p = plan(onnx.shape_inference.infer_shapes(model), scope)
    return p.quantize, list(p.high_precision)


def quantize(model: onnx.ModelProto, ranges: dict[str, tuple[float, float]], scope: str | Collection[str],
             high_precision: str = "fp32", attention: bool = False) -> tuple[onnx.ModelProto, Placement]:
    """Insert Q/DQ for ``scope`` from the activation ``ranges`` {tensor: (low, high)}; returns (graph, placement).

    ``high_precision="fp16"`` converts what is not int8 to fp16 and gives the Q/DQ fp16 scales (opset 19), so no
    Cast sits between a DequantizeLinear and its consumer.
    """
    from onnxruntime.quantization import QuantType
    from onnxruntime.quantization.calibrate import CalibrationMethod, TensorsData
    from onnxruntime.quantization.qdq_quantizer import QDQQuantizer

    check_choice("high_precision", high_precision)
    model = onnx.shape_inference.infer_shapes(model)
    placement = plan(model, scope, attention)
    if not placement.quantize:
        what = f"--int8-scope {scope}" if isinstance(scope, str) else f"the layer groups {sorted(scope)}"
        raise CfnsrError(f"{what} leaves nothing to quantize")
    missing = sorted({n.input[0] for n in model.graph.node if n.name in placement.quantize} - set(ranges))
    if missing:
        raise CfnsrError(f"the calibration ranges lack {len(missing)} quantized inputs, e.g. {missing[:3]}: "
                         "the calibration cache does not belong to this graph (delete it and export again)")
    # ModelOpt's configure_ort: symmetric, no output quantization for any op type, per-channel weights on the
    # output-channel axis, no bias quantization, one Q/DQ pair shared by all consumers of a tensor.
    extra = {
        "ActivationSymmetric": True,
        "WeightSymmetric": True,
        "QuantizeBias": False,
        "DedicatedQDQPair": False,
        "OpTypesToExcludeOutputQuantization": sorted({n.op_type for n in model.graph.node}),
        "QDQOpTypePerChannelSupportToAxis": {"Conv": 0, "MatMul": 1},
        "QDQDisableWeightAdjustForInt32Bias": True,
    }
    data = TensorsData(CalibrationMethod.MinMax,
                       {k: (np.float32(lo), np.float32(hi)) for k, (lo, hi) in ranges.items()})
    quantizer = QDQQuantizer(model, True, False, QuantType.QInt8, QuantType.QInt8, data, placement.quantize, [],
                             list(QUANT_OPS), extra)
    quantizer.quantize_model()
    out = quantizer.model.model
    _unshare_float_layers(out, set(placement.quantize))
    _quantize_residuals(out, placement.residual, ranges)
    out = topological_sort(out)
    if high_precision == "fp16":
        out = to_fp16_qdq(out)
    onnx.checker.check_model(out)
    return out, placement


def _unshare_float_layers(model: onnx.ModelProto, quantized: set[str]) -> None:
    """Give the float layers back their float input where ONNX Runtime shared a Q/DQ pair with them.

    The quantizer (one shared pair per tensor, as ModelOpt configures it) points *every* consumer of a quantized
    tensor at the pair's DequantizeLinear. When two layers read one tensor and only one is int8 (a stage's first
    reduce 1x1x1 and its downsample both read the block input), the float one would then read a Q/DQ'd activation
    with a float weight: rounding for no int8 kernel, and a layer TensorRT runs in high precision anyway (the
    readiness check refuses the graph). Other consumers (the residual Adds, LayerNorms) keep the pair, as ModelOpt's
    graphs have them.
    """
    producer, consts = producers(model), set(_initializers(model))
    for n in model.graph.node:
        if n.op_type not in QUANT_OPS or n.name in quantized:
            continue
        for i, t in enumerate(n.input):
            dq = producer.get(t)
            if dq is None or dq.op_type != "DequantizeLinear" or dq.input[0] not in producer:
                continue
            q = producer[dq.input[0]]
            if q.op_type == "QuantizeLinear" and q.input[0] not in consts:
                n.input[i] = q.input[0]


def _scale_of(lo: float, hi: float) -> np.float32:
    amax = max(abs(float(lo)), abs(float(hi)))
    return np.float32(amax / 127.0 if amax > 0 else 1.0)


def _quantize_residuals(model: onnx.ModelProto, residual: dict[str, str], ranges) -> None:
    """Give each residual Add's shortcut input a Q/DQ pair: the tensor's existing pair when it has one (an identity
    shortcut shares the pair of the next block's Conv input), else a new per-tensor pair."""
    existing = {}
    producer = producers(model)
    for n in model.graph.node:
        if n.op_type == "DequantizeLinear" and n.input[0] in producer:
            q = producer[n.input[0]]
            if q.op_type == "QuantizeLinear":
                existing[q.input[0]] = n.output[0]
    nodes = {n.name: n for n in model.graph.node}
    for add_name, tensor in residual.items():
        add = nodes[add_name]
        dq_out = existing.get(tensor)
        if dq_out is None:
            if tensor not in ranges:
                raise CfnsrError(f"no calibration range for the residual input {tensor!r} of {add_name}")
            base = f"{tensor}_residual"
            model.graph.initializer.extend([
                numpy_helper.from_array(np.array(_scale_of(*ranges[tensor]), np.float32), f"{base}_scale"),
                numpy_helper.from_array(np.array(0, np.int8), f"{base}_zero_point")])
            model.graph.node.extend([
                helper.make_node("QuantizeLinear", [tensor, f"{base}_scale", f"{base}_zero_point"], [f"{base}_q"],
                                 name=f"{base}_QuantizeLinear"),
                helper.make_node("DequantizeLinear", [f"{base}_q", f"{base}_scale", f"{base}_zero_point"],
                                 [f"{base}_dq"], name=f"{base}_DequantizeLinear")])
            dq_out = existing[tensor] = f"{base}_dq"
        for i, name in enumerate(add.input):
            if name == tensor:
                add.input[i] = dq_out


def to_fp16_qdq(model: onnx.ModelProto) -> onnx.ModelProto:
    """The int8 graph with everything that is not int8 in fp16, Q/DQ in fp16 directly (opset 19).

    ONNX Runtime's float16 converter keeps the Q/DQ nodes fp32 and wraps them in Casts (``Cast -> Q -> DQ -> Cast ->
    Conv``); those Casts cut TensorRT's Q/DQ fusions. This folds them: a Q reads the fp16 tensor with an fp16 scale,
    and a DQ whose consumers all cast to fp16 writes fp16 itself.
    """
    from . import fp16 as fp16_mod

    model = onnx.version_converter.convert_version(model, FP16_QDQ_OPSET)
    model = fp16_mod.to_fp16(model, extra_fp32_ops=["QuantizeLinear", "DequantizeLinear"])
    inits = _initializers(model)
    producer = producers(model)
    cons = consumers(model)
    fp16_scales: dict[str, str] = {}

    def fp16_scale(name: str) -> str:
        if name not in fp16_scales:
            arr = numpy_helper.to_array(inits[name]).astype(np.float16)
            fp16_scales[name] = f"{name}_fp16"
            model.graph.initializer.append(numpy_helper.from_array(arr, fp16_scales[name]))
        return fp16_scales[name]

    def is_cast(node, to) -> bool:
        return node is not None and node.op_type == "Cast" and attribute(node, "to") == to

    for n in list(model.graph.node):
        if n.op_type == "QuantizeLinear":
            # Skip the converter's Casts back to where the tensor was made (an fp16 layer, or an fp32 one such as a
            # LayerNorm or the graph input): Q reads it there, with a scale of its type.
            src = n.input[0]
            while producer.get(src) is not None and producer[src].op_type == "Cast":
                src = producer[src].input[0]
            if src != n.input[0]:
                n.input[0] = src
                if _elem_type(model, src) == TensorProto.FLOAT16:
                    n.input[1] = fp16_scale(n.input[1])
        elif n.op_type == "DequantizeLinear":
            users = cons.get(n.output[0], [])
            if users and all(is_cast(u, TensorProto.FLOAT16) for u in users):
                n.input[1] = fp16_scale(n.input[1])
                for u in users:
                    for c in cons.get(u.output[0], []):
                        for i, t in enumerate(c.input):
                            if t == u.output[0]:
                                c.input[i] = n.output[0]
                    for o in model.graph.output:
                        if o.name == u.output[0]:
                            raise CfnsrError(f"DequantizeLinear {n.name} feeds the graph output {o.name} directly")
    _drop_dead_nodes(model)
    used = {i for n in model.graph.node for i in n.input}
    unused = [i for i in model.graph.initializer if i.name not in used]
    for i in unused:
        model.graph.initializer.remove(i)
    del model.graph.value_info[:]
    return onnx.shape_inference.infer_shapes(model, strict_mode=True)


def _drop_dead_nodes(model: onnx.ModelProto) -> None:
    """Remove nodes none of whose outputs is used (the Casts the folding above bypassed), until none is left."""
    outputs = {o.name for o in model.graph.output}
    while True:
        used = {i for n in model.graph.node for i in n.input} | outputs
        kept = [n for n in model.graph.node if any(o in used for o in n.output)]
        if len(kept) == len(model.graph.node):
            return
        del model.graph.node[:]
        model.graph.node.extend(kept)


def _elem_type(model: onnx.ModelProto, tensor: str) -> int | None:
    for v in list(model.graph.value_info) + list(model.graph.input) + list(model.graph.output):
        if v.name == tensor:
            return v.type.tensor_type.elem_type
    init = _initializers(model).get(tensor)
    return init.data_type if init is not None else None
