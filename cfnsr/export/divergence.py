"""Where a failed int8 export departs from fp32 first, and a narrower scope to try (the gate itself, the comparison
every artifact gets, is ``cfnsr.engines.accuracy``).

``first_divergence`` compares intermediate tensors of the fp32 and int8 graphs (ONNX Runtime's qdq_loss_debug) and
names the layers where the error appears first.
"""

from __future__ import annotations

import numpy as np

from .formats import NARROWER_SCOPE


def first_divergence(fp32_path: str, int8_path: str, inputs: list[dict], top: int = 5) -> list[dict]:
    """Layers where int8 departs from fp32, in graph order of the worst SQNR: ONNX Runtime's qdq_loss_debug
    records every tensor of both graphs on the same inputs and compares the matching ones."""
    from pathlib import Path

    from onnxruntime.quantization import CalibrationDataReader
    from onnxruntime.quantization.qdq_loss_debug import (
        collect_activations,
        compute_activation_error,
        create_activation_matching,
        modify_model_output_intermediate_tensors,
    )

    from ..fileio import temp_dir

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.items = iter(inputs)

        def get_next(self):
            return next(self.items, None)

    with temp_dir("debug") as tmp:
        f_aug, q_aug = str(Path(tmp) / "f.onnx"), str(Path(tmp) / "q.onnx")
        modify_model_output_intermediate_tensors(fp32_path, f_aug)
        modify_model_output_intermediate_tensors(int8_path, q_aug)
        f_act = collect_activations(f_aug, Reader())
        q_act = collect_activations(q_aug, Reader())
    matched = create_activation_matching(q_act, f_act)
    errors = compute_activation_error(matched)
    order = list(f_act)  # graph output order follows node order
    rows = []
    for name, err in errors.items():
        sqnr = float(np.mean(err.get("xmodel_err", [np.inf])))
        rows.append({"tensor": name, "sqnr_db": sqnr, "qdq_sqnr_db": float(np.mean(err.get("qdq_err", [np.inf]))),
                     "position": order.index(name) if name in order else len(order)})
    rows.sort(key=lambda r: r["sqnr_db"])
    worst = sorted(rows[:top], key=lambda r: r["position"])
    return worst


def suggest_scope(scope: str) -> str | None:
    nxt = NARROWER_SCOPE.get(scope)
    return f"try a narrower --int8-scope {nxt}" if nxt else "int8 of this scope loses too much: export fp16 instead"
