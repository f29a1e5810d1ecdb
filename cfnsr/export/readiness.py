"""Static TensorRT readiness check of an exported ONNX file, run on every export (no TensorRT needed).

* every op type is one TensorRT's ONNX parser supports (``trt_onnx_ops.txt``, from onnx-tensorrt's
  docs/operators.md; its header names the commit);
* no -inf/+inf/NaN constants (fp16 engines and strongly typed builds choke on them);
* Q/DQ well formed: int8, zero point 0 (TensorRT requires it), and per-channel weight scales with an ``axis``;
* the opset is one every TensorRT version cfnsr supports parses (``TENSORRT_OPSETS``);
* the fusion lint (``fusion_lint``): every quantized Conv/Gemm/MatMul is in a pattern TensorRT fuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import onnx

from .onnx_graph import attribute, constant_arrays, consumers, producers


def supported_ops() -> set[str]:
    text = resources.files("cfnsr.export").joinpath("trt_onnx_ops.txt").read_text()
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


# The ONNX opset each supported TensorRT's parser is known to read (onnx-tensorrt docs/operators.md: 9.2 reads up to
# 19, 10.0 "the inclusive range of opset 9 to opset 20"; later parsers only add opsets, so 20 is a safe lower bound
# for 10.13, 10.16 and 11.x, which read more). JetPack 6 ships 10.3, so 20 bounds what cfnsr writes; it writes 18,
# and 19 for int8 graphs with fp16 Q/DQ scales.
TENSORRT_OPSETS = {"10.3": 20, "10.13": 20, "10.16": 20, "11.x": 20}


@dataclass
class Readiness:
    problems: list[str] = field(default_factory=list)
    # Layers left in high precision on purpose (a scope or policy choice): {node: why}. Not problems.
    high_precision: dict[str, str] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return not self.problems

    def __str__(self) -> str:
        return "TensorRT-ready" if self.ok else "not TensorRT-ready:\n  " + "\n  ".join(self.problems)


def check(model: onnx.ModelProto) -> Readiness:
    r = Readiness()
    ops = supported_ops()
    unsupported: dict[str, list[str]] = {}
    for n in model.graph.node:
        if n.domain not in ("", "ai.onnx") or n.op_type not in ops:
            unsupported.setdefault(f"{n.domain + '::' if n.domain else ''}{n.op_type}", []).append(n.name)
    for op, names in sorted(unsupported.items()):
        r.problems.append(f"op {op} is not supported by TensorRT's ONNX parser: nodes {', '.join(names[:10])}")
    opset = max((o.version for o in model.opset_import if o.domain in ("", "ai.onnx")), default=0)
    too_new = [v for v, top in TENSORRT_OPSETS.items() if opset > top]
    if too_new:
        r.problems.append(f"opset {opset}: the ONNX parser of TensorRT {', '.join(too_new)} reads opsets up to "
                          f"{min(TENSORRT_OPSETS[v] for v in too_new)}")

    consts = dict(constant_arrays(model))
    for name, arr in consts.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr.astype(np.float64)).all():
            kinds = []
            if np.isnan(arr).any():
                kinds.append("NaN")
            if np.isinf(arr).any():
                kinds.append("-inf" if np.isneginf(arr).any() else "inf")
            r.problems.append(f"constant {name!r} holds {'/'.join(kinds)} (use a large finite value)")

    producer_of = producers(model)
    for n in model.graph.node:
        if n.op_type not in ("QuantizeLinear", "DequantizeLinear"):
            continue
        if len(n.input) < 3 or n.input[2] not in consts:
            r.problems.append(f"{n.op_type} {n.name}: zero point must be an explicit int8 constant 0")
            continue
        zp = consts[n.input[2]]
        if zp.dtype != np.int8:
            r.problems.append(f"{n.op_type} {n.name}: zero point is {zp.dtype}, TensorRT needs int8")
        elif np.any(zp != 0):
            r.problems.append(f"{n.op_type} {n.name}: zero point is not 0 (TensorRT needs symmetric quantization)")
        scale = consts.get(n.input[1])
        if scale is None:
            r.problems.append(f"{n.op_type} {n.name}: scale must be a constant")
            continue
        if np.any(scale <= 0):
            r.problems.append(f"{n.op_type} {n.name}: non-positive scale")
        weight = n.op_type == "DequantizeLinear" and n.input[0] in consts and n.input[0] not in producer_of
        if weight and consts[n.input[0]].ndim > 1 and scale.size > 1:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if consts[n.input[0]].shape[axis] != scale.size:
                r.problems.append(f"DequantizeLinear {n.name}: {scale.size} per-channel scales do not match "
                                  f"axis {axis} "
                                  f"of weight {n.input[0]} {consts[n.input[0]].shape}")
    lint = fusion_lint(model)
    r.problems.extend(lint.problems)
    r.high_precision = lint.high_precision
    return r


@dataclass
class FusionLint:
    problems: list[str] = field(default_factory=list)
    high_precision: dict[str, str] = field(default_factory=dict)
    fused_int8: list[str] = field(default_factory=list)  # quantized layers in a pattern TensorRT fuses


def fusion_lint(model: onnx.ModelProto) -> FusionLint:
    """Check every quantized Conv/Gemm/MatMul against the patterns TensorRT's explicit-quantization fusions need.

    * a DequantizeLinear feeds the data and the weight input directly (no Cast, no other op in between);
    * the weight's DQ is per-channel on the output-channel axis (Conv: 0; MatMul: the last; Gemm: 0 with transB);
    * nothing quantizes or casts the layer's output before its epilogue (bias Add, BatchNormalization, ReLU, Add):
      ``Conv -> Q`` is allowed only as the shortcut input of a residual Add whose other input is a fused Conv;
    * a residual Add fed directly by a quantized Conv has a DQ on its other input, so it fuses into that Conv;
    * no Cast sits between a DequantizeLinear and its consumer, or between a producer and a QuantizeLinear.

    Layers with no Q/DQ at all are not problems: they are listed in ``high_precision`` (a scope choice).
    """
    lint = FusionLint()
    producer = producers(model)
    cons = consumers(model)
    consts = dict(constant_arrays(model))

    def op(t):
        n = producer.get(t)
        return n.op_type if n is not None else None

    def is_weight(t):  # an initializer, or a DQ (possibly after a Q) of one
        if t in consts and t not in producer:
            return True
        n = producer.get(t)
        if n is not None and n.op_type in ("DequantizeLinear", "QuantizeLinear", "Identity", "Cast"):
            return is_weight(n.input[0])
        return False

    quantized_layers = set()
    for n in model.graph.node:
        if n.op_type not in ("Conv", "Gemm", "MatMul") or len(n.input) < 2:
            continue
        data_dq, w_dq = op(n.input[0]) == "DequantizeLinear", op(n.input[1]) == "DequantizeLinear"
        if not data_dq and not w_dq:
            if any(op(t) == "Cast" and op(producer[t].input[0]) == "DequantizeLinear" for t in n.input[:2]):
                lint.problems.append(f"{n.op_type} {n.name}: a Cast sits between its DequantizeLinear and it")
            elif n.op_type == "MatMul" and not is_weight(n.input[1]):
                lint.high_precision[n.name] = "activation x activation MatMul in high precision"
            else:
                lint.high_precision[n.name] = "no Q/DQ on its inputs: runs in high precision"
            continue
        quantized_layers.add(n.name)
        ok = True
        for t, is_dq, role in ((n.input[0], data_dq, "data"), (n.input[1], w_dq, "weight")):
            if not is_dq:
                ok = False
                via = f" (it comes from {op(t)} {producer[t].name})" if t in producer else ""
                lint.problems.append(f"{n.op_type} {n.name}: its {role} input {t!r} is not fed by a DequantizeLinear "
                                     f"directly{via}; TensorRT runs a partly quantized layer in high precision")
        if w_dq and is_weight(n.input[1]):
            dq = producer[n.input[1]]
            scale = consts.get(dq.input[1])
            w = consts.get(dq.input[0])
            if w is None and op(dq.input[0]) == "QuantizeLinear":
                w = consts.get(producer[dq.input[0]].input[0])
            if scale is not None and w is not None:
                if n.op_type == "Conv":
                    want_axis = 0
                elif n.op_type == "Gemm":
                    want_axis = 0 if attribute(n, "transB", 0) else 1
                else:
                    want_axis = w.ndim - 1
                axis = attribute(dq, "axis", 1)
                axis = axis + w.ndim if axis < 0 else axis
                if scale.size == 1 or axis != want_axis or scale.size != w.shape[want_axis]:
                    ok = False
                    lint.problems.append(
                        f"{n.op_type} {n.name}: weight DequantizeLinear {dq.name} is not per-channel on the "
                        f"output-channel axis {want_axis} (axis {axis}, {scale.size} scales for weight {w.shape})")
        if ok:
            lint.fused_int8.append(n.name)

    def epilogue_outputs(n):
        """The layer's output, and the outputs of a bias Add / BatchNormalization directly after it."""
        outs = [n.output[0]]
        users = cons.get(n.output[0], [])
        if len(users) == 1 and (users[0].op_type == "BatchNormalization" or (
                users[0].op_type == "Add" and any(i in consts and i not in producer for i in users[0].input))):
            outs.append(users[0].output[0])
        return outs

    def fused_conv_output(t):
        n = producer.get(t)
        return n is not None and n.op_type == "Conv" and n.name in quantized_layers and len(cons.get(t, [])) == 1

    for n in model.graph.node:
        if n.name not in quantized_layers:
            continue
        for t in epilogue_outputs(n):
            for u in cons.get(t, []):
                if u.op_type == "Cast":
                    lint.problems.append(f"{n.op_type} {n.name}: its output is cast ({u.name}) before its epilogue")
                elif u.op_type == "QuantizeLinear":
                    dqs = [d for d in cons.get(u.output[0], []) if d.op_type == "DequantizeLinear"]
                    users = [c for d in dqs for c in cons.get(d.output[0], [])]
                    shortcut = users and all(c.op_type == "Add" and any(fused_conv_output(i) for i in c.input)
                                             for c in users)
                    if not shortcut:
                        lint.problems.append(
                            f"{n.op_type} {n.name}: its output is quantized ({u.name}) before its ReLU/Add; "
                            "TensorRT cannot fuse the epilogue (put Q/DQ on the next layer's input instead)")

    for n in model.graph.node:
        if n.op_type == "Add" and len(n.input) == 2:
            a, b = n.input
            for fused, other in ((a, b), (b, a)):
                if fused_conv_output(fused) and op(other) != "DequantizeLinear" and not (
                        other in consts and other not in producer):
                    if fused_conv_output(other) and fused == b:
                        continue  # reported once for the pair
                    lint.problems.append(
                        f"Add {n.name}: fed by the quantized {producer[fused].op_type} {producer[fused].name} but its "
                        f"other input {other!r} has no DequantizeLinear, so TensorRT cannot fuse the residual Add")
        elif n.op_type == "DequantizeLinear":
            for u in cons.get(n.output[0], []):
                if u.op_type == "Cast":
                    lint.problems.append(f"DequantizeLinear {n.name}: feeds Cast {u.name}; give the DQ the consumer's "
                                         "type (fp16 scales, opset >= 19) instead")
        elif n.op_type == "QuantizeLinear" and op(n.input[0]) == "Cast":
            lint.problems.append(f"QuantizeLinear {n.name}: reads Cast {producer[n.input[0]].name}; quantize the "
                                 "uncast tensor (fp16 scales, opset >= 19) instead")
    return lint
