"""Reports a person reads: JSON for scripts, Markdown for people, PNG plots beside them."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .fileio import atomic_path, write_json, write_text


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_png(fig, path: str | Path) -> Path:
    """A finished matplotlib figure as a PNG at ``path`` (laid out, written atomically, then closed)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    _pyplot().close(fig)
    return Path(path)


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
    return save_png(fig, path)


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
    return save_png(fig, path)


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
    return save_png(fig, path)
