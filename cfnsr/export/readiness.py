"""Static TensorRT readiness check of an exported ONNX file, run on every export (no TensorRT needed).

* every op type is one TensorRT's ONNX parser supports (``trt_onnx_ops.txt``, from onnx-tensorrt's
  docs/operators.md; its header names the commit);
* no -inf/+inf/NaN constants (fp16 engines and strongly typed builds choke on them);
* Q/DQ well formed: int8, zero point 0 (TensorRT requires it), and per-channel weight scales with an ``axis``;
* the opset is one every TensorRT version cfnsr supports parses (``TENSORRT_OPSETS``);
* the fusion lint (``fusion_lint``): every quantized Conv/Gemm/MatMul is in a pattern TensorRT fuses, and every Q/DQ
  is one TensorRT takes (the rules and the sources they follow are listed above ``fusion_lint``).
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
    # Patterns TensorRT fuses that still cost something (FusionLint.costs): {node: what}. Not problems.
    costs: dict[str, str] = field(default_factory=dict)

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
    r.high_precision, r.costs = lint.high_precision, lint.costs
    return r


# What the fusion lint follows. Each rule in ``fusion_lint`` names its source by the tag in brackets.
# [TRT-G] TensorRT developer guide, "Explicit Quantization" / "Q/DQ Layer-Placement Recommendations" (the same text in
#         every 10.x/11.x guide): quantize all inputs of weighted operations; "by default, do not quantize the outputs
#         of weighted-operations"; Fig. 3 "how TensorRT fuses convolutional layers ... on the right, both inputs and
#         output are quantized" (an output Q fuses into the Conv); Fig. 6 "the precision of xf1 is floating-point, so
#         the output of the fused convolution is limited to floating-point, and the trailing Q-layer cannot be fused";
#         Fig. 9 "the extra pair of Q/DQ operators ... forces the separation of the convolution operator from the
#         element-wise addition operator"; Fig. 2 "DQ forward-propagation and Q backward-propagation" through the
#         layers that commute with quantization (max-pooling, shuffles: Reshape/Transpose/Flatten/Squeeze, Slice ...).
# [TRT-S] the guide's "Quantization Scheme": activations are quantized per tensor; per-channel scales only for
#         constant (weight) inputs, along the output-channel axis K of Conv/Deconv and of the GEMM weight.
# [TRT-H] NvInferRuntime.h / NvInfer.h at v10.3.0: IQuantizeLayer/IDequantizeLayer "zero point must be 0" (int8,
#         symmetric) and the per-channel ``axis``.
# [OTRT]  onnx-tensorrt docs/operators.md line 13 (ONNX-TensorRT 10.1 GA, 96e7811): "UINT8 is only supported as
#         network input or output tensor types."
# [MO]    NVIDIA ModelOpt 0.47 ``modelopt/onnx/op_types.py`` ``get_copy_ops`` (ops a Q/DQ passes through) and
#         ``quantization/partitioning.py`` ``_build_fusible_partition`` (Conv -> BN -> Relu -> residual Add is one
#         fused partition; its inputs are quantized, never the inside).
COMMUTING = frozenset({"MaxPool", "GlobalMaxPool", "Reshape", "Transpose", "Flatten", "Squeeze", "Unsqueeze",
                       "Slice", "Identity", "Expand", "Tile", "Split"})  # [TRT-G] Fig. 2, [MO] get_copy_ops
# A layer's fusable epilogue ([MO] _build_fusible_partition: Conv -> BN -> activation): bias Add / BatchNormalization
# right after the layer, then activations. A BatchNormalization after an activation is not part of it.
ACTIVATIONS = frozenset({"Relu", "LeakyRelu", "Clip", "Sigmoid", "Tanh", "Elu", "Selu", "HardSigmoid", "HardSwish",
                         "Softplus", "Gelu"})


@dataclass
class FusionLint:
    problems: list[str] = field(default_factory=list)
    high_precision: dict[str, str] = field(default_factory=dict)
    fused_int8: list[str] = field(default_factory=list)  # quantized layers in a pattern TensorRT fuses
    # Patterns TensorRT fuses that still cost something, {node: what it costs}. Not problems.
    costs: dict[str, str] = field(default_factory=dict)


def fusion_lint(model: onnx.ModelProto) -> FusionLint:
    """Check every quantized Conv/Gemm/MatMul and every Q/DQ against what TensorRT's explicit quantization does.

    Problems (TensorRT runs it otherwise than the graph suggests):

    * a quantized layer's data or weight input is not reached from a DequantizeLinear, directly or through ops a DQ
      propagates across (MaxPool, Reshape, Transpose, ...): TensorRT runs a partly quantized layer in high precision
      [TRT-G];
    * a weight DQ is per-channel on another axis than the output channels [TRT-S];
    * a Q/DQ pair between a layer and its epilogue (BatchNormalization, bias, activation): it separates the epilogue
      from the layer [TRT-G Fig. 9]; a Cast there, or between a DQ and its consumer, or before a Q, does the same;
    * a per-channel Q/DQ on an activation [TRT-S];
    * a uint8 graph input read by anything but Cast (through Identity) [OTRT].

    Not problems (TensorRT fuses them; ``costs`` says what they cost, if anything):

    * ``layer -> Q -> DQ -> quantized layer``: the Q fuses into the layer, which writes int8 [TRT-G Fig. 3];
    * a residual Add with a float shortcut: it still fuses into the layer, but the fused output is float, so a Q
      after it runs alone [TRT-G Fig. 6];
    * per-tensor weight scales (TensorRT takes them; per-channel ones usually lose less).

    Layers with no Q/DQ at all are listed in ``high_precision`` (a scope choice).
    """
    lint = FusionLint()
    producer = producers(model)
    cons = consumers(model)
    consts = dict(constant_arrays(model))
    initializers = {i.name for i in model.graph.initializer}

    def op(t):
        n = producer.get(t)
        return n.op_type if n is not None else None

    def is_const(t):  # an initializer or a Constant node's value
        return t in consts and (t in initializers or op(t) == "Constant")

    def is_weight(t):  # a constant, or a DQ/Q/copy of one
        if is_const(t):
            return True
        n = producer.get(t)
        if n is not None and n.op_type in {"DequantizeLinear", "QuantizeLinear", "Cast"} | COMMUTING:
            return is_weight(n.input[0])
        return False

    def dq_source(t):
        """The DQ that feeds ``t`` directly or through commuting ops, else None [TRT-G Fig. 2]."""
        n = producer.get(t)
        while n is not None and n.op_type in COMMUTING:
            n = producer.get(n.input[0])
        return n if n is not None and n.op_type == "DequantizeLinear" else None

    def users_past_commuting(t):
        """(consumer, the tensor it reads) of ``t``, looking through commuting ops."""
        for u in cons.get(t, []):
            if u.op_type in COMMUTING:
                for o in u.output:
                    yield from users_past_commuting(o)
            else:
                yield u, t

    layers = [n for n in model.graph.node if n.op_type in ("Conv", "ConvTranspose", "Gemm", "MatMul")
              and len(n.input) >= 2]
    quantized = {n.name for n in layers if dq_source(n.input[0]) or dq_source(n.input[1])}
    for n in layers:
        data_dq, w_dq = dq_source(n.input[0]), dq_source(n.input[1])
        if n.name not in quantized:
            if any(op(t) == "Cast" and op(producer[t].input[0]) == "DequantizeLinear" for t in n.input[:2]):
                lint.problems.append(f"{n.op_type} {n.name}: a Cast sits between its DequantizeLinear and it")
            elif n.op_type == "MatMul" and not is_weight(n.input[1]):
                lint.high_precision[n.name] = "activation x activation MatMul in high precision"
            else:
                lint.high_precision[n.name] = "no Q/DQ on its inputs: runs in high precision"
            continue
        ok = True
        for t, dq, role in ((n.input[0], data_dq, "data"), (n.input[1], w_dq, "weight")):
            if dq is None:
                ok = False
                via = f" (it comes from {op(t)} {producer[t].name})" if t in producer else ""
                lint.problems.append(f"{n.op_type} {n.name}: its {role} input {t!r} is not fed by a DequantizeLinear "
                                     f"(directly or through ops TensorRT moves a DQ across){via}; TensorRT runs a "
                                     "partly quantized layer in high precision")
        if w_dq is not None and is_weight(n.input[1]) and producer.get(n.input[1]) is w_dq:
            scale = consts.get(w_dq.input[1])
            w = consts.get(w_dq.input[0])
            if w is None and op(w_dq.input[0]) == "QuantizeLinear":
                w = consts.get(producer[w_dq.input[0]].input[0])
            if scale is not None and w is not None and w.ndim > 1:
                if n.op_type == "Conv":
                    want_axis = 0
                elif n.op_type == "ConvTranspose":
                    want_axis = 1
                elif n.op_type == "Gemm":
                    want_axis = 0 if attribute(n, "transB", 0) else 1
                else:
                    want_axis = w.ndim - 1
                axis = attribute(w_dq, "axis", 1)
                axis = axis + w.ndim if axis < 0 else axis
                if scale.size == 1:
                    lint.costs[n.name] = "per-tensor weight scale: TensorRT takes it; per-channel usually loses less"
                elif axis != want_axis or scale.size != w.shape[want_axis]:
                    ok = False  # [TRT-S]
                    lint.problems.append(
                        f"{n.op_type} {n.name}: weight DequantizeLinear {w_dq.name} is not per-channel on the "
                        f"output-channel axis {want_axis} (axis {axis}, {scale.size} scales for weight {w.shape})")
        if ok:
            lint.fused_int8.append(n.name)

    def epilogue_chain(n):
        """The layer's output and its fusable epilogue's outputs, each op the only reader of what it reads: bias Add
        and BatchNormalization first, then activations; and whether an activation is in it."""
        outs, t, activated = [n.output[0]], n.output[0], False
        while True:
            users = cons.get(t, [])
            if len(users) != 1:
                return outs, activated
            u = users[0]
            norm = u.op_type == "BatchNormalization" or (u.op_type == "Add" and any(is_const(i) for i in u.input))
            if not (u.op_type in ACTIVATIONS or (norm and not activated)):
                return outs, activated
            activated = activated or u.op_type in ACTIVATIONS
            t = u.output[0]
            outs.append(t)

    def would_fuse(u, activated: bool) -> bool:
        """Whether ``u`` would have been part of the layer's epilogue had no Q/DQ sat in between."""
        norm = u.op_type == "BatchNormalization" or (u.op_type == "Add" and any(is_const(i) for i in u.input))
        return u.op_type in ACTIVATIONS or (norm and not activated)

    def int8_reader(u, t) -> bool:
        """``u`` reads ``t`` (a DQ's output) as int8: a quantized layer, a Q (re-quantization: e.g. an int8 MaxPool
        between them), or an Add whose other inputs are quantized too or a quantized layer's output it fuses into
        [TRT-G Fig. 7, 8]."""
        if u.name in quantized or u.op_type == "QuantizeLinear":
            return True
        if u.op_type == "Add":
            return all(i == t or is_const(i) or dq_source(i) or (producer.get(i) is not None
                                                                and producer[i].name in quantized) for i in u.input)
        return False

    for n in model.graph.node:
        if n.name not in quantized:
            continue
        chain, activated = epilogue_chain(n)
        for i, t in enumerate(chain):
            last = i == len(chain) - 1
            for u in cons.get(t, []):
                if u.op_type == "Cast":
                    if not last or any(would_fuse(c, activated) for c in cons.get(u.output[0], [])):
                        lint.problems.append(f"{n.op_type} {n.name}: its output is cast ({u.name}) before its "
                                             "epilogue")
                elif u.op_type == "QuantizeLinear":
                    readers = [(c, d.output[0]) for d in cons.get(u.output[0], []) if d.op_type == "DequantizeLinear"
                               for c in cons.get(d.output[0], [])]
                    split = [c.op_type for c, _ in readers if would_fuse(c, activated)]
                    if not last or split:  # [TRT-G] Fig. 9
                        lint.problems.append(
                            f"{n.op_type} {n.name}: a Q/DQ ({u.name}) sits between it and its epilogue "
                            f"({', '.join(sorted(set(split))) or cons[chain[i + 1]][0].op_type}); TensorRT cannot fuse "
                            "across it (put the Q/DQ after the epilogue, on the next layer's input)")
                        continue
                    past = [(c, x) for d in cons.get(u.output[0], []) if d.op_type == "DequantizeLinear"
                            for c, x in users_past_commuting(d.output[0])]
                    if not past or not all(int8_reader(c, x) for c, x in past):
                        floats = sorted({c.op_type for c, x in past if not int8_reader(c, x)})
                        lint.costs[n.name] = (f"its output is quantized ({u.name}) for readers that are not int8 "
                                              f"({', '.join(floats) or 'none'}): the Q fuses into the layer, and the "
                                              "readers dequantize again")

    for n in model.graph.node:
        if n.op_type == "Add" and len(n.input) == 2:
            for fused, other in ((n.input[0], n.input[1]), (n.input[1], n.input[0])):
                fn = producer.get(fused)
                if fn is None or fn.name not in quantized or len(cons.get(fused, [])) != 1:
                    continue
                if dq_source(other) is None and not is_const(other):
                    after = [u for t in [n.output[0]] + [u.output[0] for u in cons.get(n.output[0], [])
                                                         if u.op_type == "Relu"] for u in cons.get(t, [])]
                    if any(u.op_type == "QuantizeLinear" for u in after):  # [TRT-G] Fig. 6
                        lint.costs[n.name] = (f"fuses into {fn.op_type} {fn.name}, but its shortcut {other!r} is "
                                              "float, so the fused output is float and the Q after it runs alone")
                break
        elif n.op_type == "DequantizeLinear":
            for u in cons.get(n.output[0], []):
                if u.op_type == "Cast":
                    lint.problems.append(f"DequantizeLinear {n.name}: feeds Cast {u.name}; give the DQ the consumer's "
                                         "type (fp16 scales, opset >= 19) instead")
        elif n.op_type == "QuantizeLinear" and op(n.input[0]) == "Cast":
            lint.problems.append(f"QuantizeLinear {n.name}: reads Cast {producer[n.input[0]].name}; quantize the "
                                 "uncast tensor (fp16 scales, opset >= 19) instead")
        if n.op_type in ("QuantizeLinear", "DequantizeLinear") and not is_weight(n.input[0]):
            scale = consts.get(n.input[1]) if len(n.input) > 1 else None
            if scale is not None and scale.size > 1:  # [TRT-S]
                lint.problems.append(f"{n.op_type} {n.name}: per-channel ({scale.size} scales) on the activation "
                                     f"{n.input[0]!r}; TensorRT quantizes activations per tensor only")

    for inp in model.graph.input:  # [OTRT]
        if inp.type.tensor_type.elem_type != onnx.TensorProto.UINT8:
            continue
        readers = list(cons.get(inp.name, []))
        while any(r.op_type == "Identity" for r in readers):
            readers = [c for r in readers for c in (cons.get(r.output[0], []) if r.op_type == "Identity" else [r])]
        bad = [r for r in readers if r.op_type != "Cast"]
        if bad:
            lint.problems.append(f"input {inp.name!r} is uint8 and read by {bad[0].op_type} {bad[0].name}; TensorRT "
                                 "takes uint8 only as a network input or output, so Cast it first")
    return lint
