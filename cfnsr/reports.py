"""Reports a person reads: JSON for scripts, Markdown for people, PNG plots beside them."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from .fileio import atomic_path, write_json, write_text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_confusion(cm, labels, path: str | Path, title: str) -> Path:
    """Confusion matrix (rows true, columns predicted), row-normalised colours with counts written in."""
    plt = _pyplot()
    cm = np.asarray(cm)
    norm = cm / np.maximum(cm.sum(axis=1, keepdims=True), 1)
    fig, ax = plt.subplots(figsize=(6.4, 5.6), dpi=110)
    im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
    ax.set_xticks(range(len(labels)), labels, rotation=45, ha="right")
    ax.set_yticks(range(len(labels)), labels)
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(title)
    for i in range(cm.shape[0]):
        for j in range(cm.shape[1]):
            if cm[i, j]:
                ax.text(j, i, int(cm[i, j]), ha="center", va="center", color="white" if norm[i, j] > 0.5 else "black",
                        fontsize=8)
    fig.colorbar(im, ax=ax, fraction=0.046, label="fraction of the true class")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def plot_bars(groups: dict[str, dict[str, float]], path: str | Path, title: str, ylabel: str) -> Path:
    """Grouped bar chart: ``groups[group][series] = value`` (e.g. latency per artifact and batch size)."""
    plt = _pyplot()
    names = list(groups)
    series = sorted({s for g in groups.values() for s in g})
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(6, 1.2 * len(names) + 2), 4.2), dpi=110)
    for k, s in enumerate(series):
        vals = [groups[n].get(s, np.nan) for n in names]
        ax.bar(np.arange(len(names)) + k * width - 0.4 + width / 2, vals, width, label=s)
    ax.set_xticks(range(len(names)), names, rotation=20, ha="right")
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    if len(series) > 1:
        ax.legend(fontsize=8)
    ax.grid(axis="y", alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)


def markdown_table(header: list[str], rows: list[list]) -> str:
    def fmt(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(fmt(v) for v in r) + " |" for r in rows]
    return "\n".join(lines)


def metrics_markdown(title: str, m: dict, note: str = "") -> str:
    out = [f"# {title}", ""]
    if note:
        out += [note, ""]
    out += [f"Clips: {m['clips']}  top-1 {100 * m['top1']:.2f}%  top-2 {100 * m['top2']:.2f}%  "
            f"top-4 {100 * m['top4']:.2f}%  macro F1 {m['macro_f1']:.3f}", ""]
    out.append(markdown_table(["class", "precision", "recall", "F1", "support"],
                              [[k, v["precision"], v["recall"], v["f1"], v["support"]]
                               for k, v in m["per_class"].items()]))
    out += ["", "Confusion matrix (rows true, columns predicted):", ""]
    out.append(markdown_table(["true \\ pred", *m["labels"]],
                              [[name, *row] for name, row in zip(m["labels"], m["confusion"])]))
    return "\n".join(out) + "\n"


def write_metrics_report(out_dir: str | Path, stem: str, title: str, metrics: dict, note: str = "") -> dict:
    """``stem``.json, ``stem``.md and ``stem``_confusion.png in ``out_dir``; returns their paths."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {
        "json": write_json(out_dir / f"{stem}.json", metrics),
        "markdown": write_text(out_dir / f"{stem}.md", metrics_markdown(title, metrics, note)),
        "png": plot_confusion(metrics["confusion"], metrics["labels"], out_dir / f"{stem}_confusion.png", title),
    }
    return {k: str(v) for k, v in paths.items()}


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.2f}%"


def write_export_report(artifact: Path, report: dict, stem: Path) -> None:
    """``STEM.report.json``, ``.report.md`` and ``.confusion.png`` of an export, beside the artifact."""
    write_json(stem.with_name(stem.name + ".report.json"), report)
    g = report["gate"]
    lines = [f"# Export report: {artifact.name}", "",
             f"- checkpoint: `{report['checkpoint']}` ({report['model_config']})",
             (f"- format: {report['format']}, precision: **{report['precision']}**, "
              f"size {report['size_bytes'] / 1e6:.1f} MB")]
    if "device" in report:
        lines.append(f"- AOTInductor package for {report['device']}, batch 1..{report['max_batch']}")
    if "tensorrt_readiness" in report:
        lines.append(f"- TensorRT readiness: {'ok' if report['tensorrt_readiness']['ok'] else 'PROBLEMS'}")
        for p in report["tensorrt_readiness"]["problems"]:
            lines.append(f"  - {p}")
        kept = report["tensorrt_readiness"].get("high_precision_layers") or {}
        if kept and report["precision"] in ("int8", "auto"):
            lines.append(f"- layers left in high precision on purpose ({len(kept)}; TensorRT runs them unfused "
                         "from int8):")
            lines += [f"  - `{name}`: {why}" for name, why in kept.items()]
    if "calibration" in report:
        c = report["calibration"]
        lines.append(f"- calibration: {c['method']} on {c['clips']} clips of training actors {c['actors']} "
                     f"(cache {'reused' if c['cache_hit'] else 'written'}), scope `{c['scope']}`, "
                     f"high precision {c['high_precision']}")
    if "auto" in report:
        a = report["auto"]
        lines.append(f"- --precision auto on {a['backend']}: chose **{a['chosen']}** ({a['precision']}, "
                     f"{len(a['int8_groups'])} of {len(a['searchable_groups'])} groups int8) out of "
                     f"{len(a['candidates'])} candidates measured; search report "
                     f"`{Path(a['reports']['markdown']).name}`"
                     + (f"; {a['note']}" if a["note"] else ""))
        lines += [f"  - {line}" for line in a["reasons"].values()]
    lines += ["", f"## Accuracy gate: {'PASSED' if g['passed'] else 'FAILED'}", "",
              markdown_table(["metric", "value"], [
                  ["clips", g["clips"]], ["top-1 agreement", f"{100 * g['agreement']:.2f}%"],
                  ["reference accuracy", _pct(g["reference_accuracy"])],
                  ["artifact accuracy", _pct(g["artifact_accuracy"])],
                  ["accuracy drop (points)", "-" if g["accuracy_drop_points"] is None
                   else f"{g['accuracy_drop_points']:.2f}"],
                  ["max abs logit difference", f"{g['max_abs_logit']:.3g}"], ["mean cosine", f"{g['mean_cosine']:.6f}"],
                  ["thresholds", json.dumps(g["thresholds"])]])]
    for f in g["failures"]:
        lines.append(f"- failed: {f}")
    if g.get("divergence"):
        lines += ["", "Layers where int8 departs from fp32 first (lowest SQNR, graph order):", "",
                  markdown_table(["tensor", "SQNR vs fp32 (dB)", "SQNR of its own Q/DQ (dB)"],
                                 [[d["tensor"], d["sqnr_db"], d["qdq_sqnr_db"]] for d in g["divergence"]])]
    if g.get("suggestion"):
        lines += ["", f"Suggestion: {g['suggestion']}."]
    write_text(stem.with_name(stem.name + ".report.md"), "\n".join(lines) + "\n")
    if g.get("artifact_confusion"):
        from .artifact import EMOTIONS

        plot_confusion(g["artifact_confusion"], EMOTIONS, stem.with_name(stem.name + ".confusion.png"),
                       f"{artifact.name}: held-out clips")


def plot_timeline(times: list[float], series: dict[str, list[float]], path: str | Path, title: str) -> Path:
    """Probability of each emotion over time (window centres), one line each."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(9, 4), dpi=110)
    for name, values in series.items():
        ax.plot(times, values, label=name, linewidth=1.6)
    ax.set_xlabel("time (s, window centre)")
    ax.set_ylabel("probability")
    ax.set_ylim(0, 1)
    ax.set_title(title)
    ax.legend(loc="upper right", ncol=4, fontsize=8)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return Path(path)
