"""Static TensorRT readiness check of an exported ONNX file, run on every export (no TensorRT needed).

* every op type is one TensorRT's ONNX parser supports (``trt_onnx_ops.txt``, from onnx-tensorrt's
  docs/operators.md; its header names the commit);
* no -inf/+inf/NaN constants (fp16 engines and strongly typed builds choke on them);
* Q/DQ well formed: int8, zero point 0 (TensorRT requires it), and per-channel weight scales with an ``axis``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources

import numpy as np
import onnx

from .onnx_graph import constant_arrays


def supported_ops() -> set[str]:
    text = resources.files("cfnsr.export").joinpath("trt_onnx_ops.txt").read_text()
    return {line.strip() for line in text.splitlines() if line.strip() and not line.startswith("#")}


@dataclass
class Readiness:
    problems: list[str] = field(default_factory=list)

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
    if opset > 20:
        r.problems.append(f"opset {opset}: TensorRT 10.0's parser reads opsets 9-20")

    consts = dict(constant_arrays(model))
    for name, arr in consts.items():
        if arr.dtype.kind == "f" and not np.isfinite(arr.astype(np.float64)).all():
            kinds = []
            if np.isnan(arr).any():
                kinds.append("NaN")
            if np.isinf(arr).any():
                kinds.append("-inf" if np.isneginf(arr).any() else "inf")
            r.problems.append(f"constant {name!r} holds {'/'.join(kinds)} (use a large finite value)")

    producers = {o: n for n in model.graph.node for o in n.output}
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
        weight = n.op_type == "DequantizeLinear" and n.input[0] in consts and n.input[0] not in producers
        if weight and consts[n.input[0]].ndim > 1 and scale.size > 1:
            axis = next((a.i for a in n.attribute if a.name == "axis"), 1)
            if consts[n.input[0]].shape[axis] != scale.size:
                r.problems.append(f"DequantizeLinear {n.name}: {scale.size} per-channel scales do not match axis {axis} "
                                  f"of weight {n.input[0]} {consts[n.input[0]].shape}")
    return r
