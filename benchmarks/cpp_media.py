"""Per-stage time of a warm prediction from a clip file: C++ (cfnsr_predict, cfnsr::media) against Python
(cfnsr.Recognizer), the same media artifact and clip, in this one run.

    python benchmarks/cpp_media.py --predict build-example/cfnsr_predict --clip clip.mp4 \\
        --artifact tiny=best.media.fp32.pt2 --artifact paper=paper.media.fp32.pt2 --threads 2 --repeat 5

Each side is warmed once, then predicts ``--repeat`` times; the table gives each stage's median in ms and the
total's ratio C++ / Python. Python's "features" stage (cutting the PCM window) is added to its "resample", as the
C++ side counts it there. Writes cpp_media.json, cpp_media.md and cpp_media.png (stages stacked) under --out.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
from pathlib import Path

STAGES = ("decode", "detection", "crop", "resample", "model", "total")


def python_stages(artifact: Path, clip: Path, landmarks: str | None, threads: int, repeat: int) -> dict:
    from cfnsr.engines.recognizer import Recognizer

    with Recognizer(artifact, device="cpu", threads=threads) as rec:
        rec.predict_file(clip, landmarks)
        runs = [rec.predict_file(clip, landmarks).timings_ms for _ in range(repeat)]
    for t in runs:
        t["resample"] += t.pop("features", 0.0)
    return {s: statistics.median(t[s] for t in runs) for s in STAGES}


def cpp_stages(binary: Path, artifact: Path, clip: Path, landmarks: str | None, threads: int, repeat: int) -> dict:
    cmd = [str(binary), str(artifact), str(clip), "--json", "--repeat", str(repeat), "--threads", str(threads)]
    if landmarks:
        cmd += ["--landmarks", landmarks]
    out = json.loads(subprocess.run(cmd, check=True, capture_output=True, text=True).stdout)
    return {s: out["warm_median_ms"][s] for s in STAGES} | {"crop_method": out["crop"]}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--predict", type=Path, required=True, help="the cfnsr_predict binary")
    p.add_argument("--clip", type=Path, required=True)
    p.add_argument("--landmarks", default=None, help="an OpenFace CSV for the clip (else the Haar detector)")
    p.add_argument("--artifact", action="append", required=True, help="NAME=PATH of a media .pt2 (repeatable)")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeat", type=int, default=5)
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    args = p.parse_args()

    rows = []
    for item in args.artifact:
        name, _, path = item.partition("=")
        cpp = cpp_stages(args.predict, Path(path), args.clip, args.landmarks, args.threads, args.repeat)
        py = python_stages(Path(path), args.clip, args.landmarks, args.threads, args.repeat)
        rows.append({"model": name, "artifact": path, "crop": cpp.pop("crop_method"), "cpp_ms": cpp, "python_ms": py,
                     "total_ratio_cpp_over_python": cpp["total"] / py["total"]})
        print(f"{name}: C++ total {cpp['total']:.1f} ms, Python {py['total']:.1f} ms, "
              f"ratio {rows[-1]['total_ratio_cpp_over_python']:.2f}")

    lines = [f"Warm prediction of {args.clip.name}, median of {args.repeat}, {args.threads} threads, ms",
             "", "| model | side | " + " | ".join(STAGES) + " | C++ / Python |", "|---" * (len(STAGES) + 3) + "|"]
    for r in rows:
        for side, key in (("C++", "cpp_ms"), ("Python", "python_ms")):
            ratio = f"{r['total_ratio_cpp_over_python']:.2f}" if side == "C++" else "1.00"
            lines.append(f"| {r['model']} ({r['crop']}) | {side} | " +
                         " | ".join(f"{r[key][s]:.1f}" for s in STAGES) + f" | {ratio} |")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpp_media.json").write_text(json.dumps(rows, indent=2))
    (args.out / "cpp_media.md").write_text("\n".join(lines) + "\n")
    plot(rows, args.out / "cpp_media.png", lines[0])
    print("\n".join(lines))


def plot(rows: list[dict], path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sides = (("C++", "cpp_ms"), ("Python", "python_ms"))
    bars = [(f"{r['model']}\n{side}", r[key]) for r in rows for side, key in sides]
    fig, ax = plt.subplots(figsize=(1.6 * len(bars) + 2, 4.5))
    bottom = [0.0] * len(bars)
    for stage in STAGES[:-1]:
        values = [b[1][stage] for b in bars]
        ax.bar([b[0] for b in bars], values, bottom=bottom, label=stage)
        bottom = [x + v for x, v in zip(bottom, values)]
    ax.set_ylabel("ms (warm median)")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
