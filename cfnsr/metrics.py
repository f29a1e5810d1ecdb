"""Classification metrics from logits: top-k accuracy, per-class precision/recall/F1, confusion matrix."""

from __future__ import annotations

import numpy as np

from .artifact import EMOTIONS


def topk_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    if len(labels) == 0:
        return float("nan")
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def confusion(labels: np.ndarray, preds: np.ndarray, n: int = len(EMOTIONS)) -> np.ndarray:
    """Rows: true class; columns: predicted class."""
    m = np.zeros((n, n), dtype=np.int64)
    np.add.at(m, (labels, preds), 1)
    return m


def classification_metrics(logits: np.ndarray, labels: np.ndarray, class_names=EMOTIONS) -> dict:
    logits, labels = np.asarray(logits), np.asarray(labels)
    preds = logits.argmax(axis=1)
    cm = confusion(labels, preds, len(class_names))
    tp = np.diag(cm).astype(np.float64)
    with np.errstate(invalid="ignore", divide="ignore"):
        precision = np.where(cm.sum(0) > 0, tp / cm.sum(0), 0.0)
        recall = np.where(cm.sum(1) > 0, tp / cm.sum(1), 0.0)
        f1 = np.where(precision + recall > 0, 2 * precision * recall / (precision + recall), 0.0)
    return {
        "clips": int(len(labels)),
        "top1": topk_accuracy(logits, labels, 1),
        "top2": topk_accuracy(logits, labels, 2),
        "top4": topk_accuracy(logits, labels, 4),
        "per_class": {
            name: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(s)}
            for name, p, r, f, s in zip(class_names, precision, recall, f1, cm.sum(1))
        },
        "macro_f1": float(f1[cm.sum(1) > 0].mean()) if cm.sum() else float("nan"),
        "confusion": cm.tolist(),
        "labels": list(class_names),
    }
