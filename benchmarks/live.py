"""Does `cfnsr live` keep up on this machine? The real-time factor (one window's work / the hop: under 1 keeps up)
and the end-to-end latency (a window's last sample to its prediction) p50/p99 of `cfnsr live` on a file played at
its own rate, at the default hop, for the tiny and the paper-size model (random weights: the time does not depend on
them), 2 threads.

    python benchmarks/live.py --threads 2 --out bench_out [--work DIR]

Makes its own inputs in a temporary folder: synthetic RAVDESS clips strung into one 10 s recording (a face,
3.5 s without one, a face), and each model as a media ONNX artifact. Then `cfnsr live RECORDING --model ARTIFACT`
runs as a user runs it (a subprocess, real time); its summary is the measurement. The baseline of the same run is
the stream itself: the real-time factor is the work per window against the hop, the windows the model could not
take are counted as dropped. ``--work DIR`` keeps the inputs there and reuses them on the next run. The load average
at the start is recorded (other work on the machine shows in every figure). Writes live.json, live.md and live.png
under --out.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path


def make_inputs(work: Path, threads: int) -> tuple[Path, dict[str, Path]]:
    recording, artifacts = work / "recording.mp4", {n: work / f"{n}.media.onnx" for n in ("cfn-sr-tiny", "cfn-sr")}
    if recording.exists() and all(a.exists() for a in artifacts.values()):
        return recording, artifacts
    import numpy as np

    from cfnsr.data.features import decode_audio, decode_frames
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.data.synth import generate, write_clip
    from cfnsr.export.pipeline import ExportOptions, export
    from cfnsr.model import create_model, get_config, save_checkpoint

    raw = generate(work / "raw", actors=1, seed=0, workers=threads, progress=False)
    frames, audio, rate = [], [], 48000
    for i, clip in enumerate(["Actor_01/01-01-05-02-01-01-01.mp4", "Actor_01/01-01-03-02-01-01-01.mp4"]):
        got, total = decode_frames(raw / clip, set(range(10_000)))
        pcm, rate = decode_audio(raw / clip)
        frames += [got[k] for k in range(total)]
        audio.append(pcm[:int(total / 30 * rate)])
        if i == 0:
            frames += [np.full_like(got[0], 60)] * 105
            audio.append(np.zeros(int(3.5 * rate), np.float32))
    recording = work / "recording.mp4"
    write_clip(recording, frames, np.concatenate(audio), rate=rate)
    artifacts = {}
    for name in ("cfn-sr-tiny", "cfn-sr"):
        import torch

        torch.manual_seed(0)
        config = get_config(name)
        ckpt = save_checkpoint(work / f"{name}.pt", create_model(config).eval(),
                               preprocess=PreprocessSpec.for_model(config).to_dict())
        print(f"exporting {name} as a media ONNX file ...", flush=True)
        artifacts[name] = export(ckpt, ExportOptions("fp32", work / f"{name}.media.onnx", fmt="onnx", inputs="media",
                                                     progress=False), log=lambda *a: None).path
    return recording, artifacts


def run_live(recording: Path, artifact: Path, threads: int, out: Path) -> dict:
    jsonl = out / f"{artifact.stem}.live.jsonl"
    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    cmd = [sys.executable, "-m", "cfnsr", "live", str(recording), "--model", str(artifact), "--threads", str(threads),
           "--jsonl", str(jsonl)]
    print("$", " ".join(cmd), flush=True)
    subprocess.run(cmd, check=True, env=env, stderr=subprocess.DEVNULL)
    return json.loads(jsonl.read_text().splitlines()[-1])


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--out", type=Path, default=Path("bench_out"))
    p.add_argument("--work", type=Path, help="where the inputs are made (and reused) [default: a temporary folder]")
    a = p.parse_args()
    from cfnsr.fileio import write_json, write_text
    from cfnsr.reports import plot_bars
    from cfnsr.sysinfo import machine

    a.out.mkdir(parents=True, exist_ok=True)
    work = a.work or Path(tempfile.mkdtemp(prefix="cfnsr-live-"))
    work.mkdir(parents=True, exist_ok=True)
    recording, artifacts = make_inputs(work, a.threads)
    load = [round(x, 1) for x in os.getloadavg()]
    rows = []
    for name, artifact in artifacts.items():
        s = run_live(recording, artifact, a.threads, a.out)
        rows.append({"model": name, "realtime_factor": s["realtime_factor"], "latency_p50_ms": s["latency_ms"]["p50"],
                     "latency_p99_ms": s["latency_ms"]["p99"], "windows": s["windows"], "dropped": s["dropped"],
                     "windows_per_s": s["windows_per_s"], "stages_p50_ms": {k: v["p50"] for k, v in
                                                                            s["stages_ms"].items()}})
        print(f"{name}: real-time factor {s['realtime_factor']:.3f}, latency p50 {s['latency_ms']['p50']:.0f} ms, "
              f"p99 {s['latency_ms']['p99']:.0f} ms, {s['windows']} windows, {s['dropped']} dropped", flush=True)
    lines = [f"`cfnsr live` on a 10 s recording at its own rate, hop 0.5 s, {a.threads} threads, ONNX Runtime, "
             f"media fp32 artifacts (random weights); load average at the start {load[0]} on {os.cpu_count()} "
             "CPUs", "",
             "| model | real-time factor | latency p50 ms | latency p99 ms | windows run | dropped | "
             "face p50 ms | model p50 ms |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        st = r["stages_p50_ms"]
        lines.append(f"| {r['model']} | {r['realtime_factor']:.3f} | {r['latency_p50_ms']:.0f} | "
                     f"{r['latency_p99_ms']:.0f} | {r['windows']} | {r['dropped']} | {st['face'] or 0:.0f} | "
                     f"{st['model'] or 0:.0f} |")
    write_json(a.out / "live.json", {"machine": machine(), "threads": a.threads, "load_average": load, "rows": rows})
    write_text(a.out / "live.md", "\n".join(lines) + "\n")
    plot_bars({r["model"]: {"latency p50": r["latency_p50_ms"], "latency p99": r["latency_p99_ms"]} for r in rows},
              a.out / "live.png", "cfnsr live: end-to-end latency per window", "ms")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
