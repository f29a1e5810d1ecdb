"""The first thing to run on a Jetson or a desktop GPU, and the prepared script for a lent GPU.

    bash scripts/target_check.sh [DEMO_DIR] [--skip-cpp]   # results under $OUT (default target_out/)

It runs the real CLI, step by step, and writes one report (target_check.json + target_check.md), whatever stops
it; what it could not run is listed there as skipped, with the reason (no TensorRT, no cmake, no ``polygraphy`` tool
beside ``$PYTHON``):
1. ``cfnsr info`` (versions, GPU, diagnoses);
2. the demo artifacts (``cfnsr demo DEMO_DIR``: synthetic RAVDESS, cfn-sr-tiny, fp32/fp16/int8 ONNX), unless
   DEMO_DIR already has them;
3. the static TensorRT checks of the fp16 and int8 files (readiness and fusion lint), which need no TensorRT;
4. where ``tensorrt`` imports: ``cfnsr build --layer-info`` of the fp16 and int8 files, ``cfnsr validate`` of each
   engine against the checkpoint, ``cfnsr bench`` of the checkpoint and the engines, and the engine inspector's
   per-layer summary (how many Convs run as fused int8 kernels). Where it does not, one line says so and the ONNX
   files are validated and benchmarked on ONNX Runtime instead;
5. the C++ runtime end to end, where cmake is there: built (TensorRT, libtorch and the media component, each where
   found) and installed, ``cfnsr_predict`` built against the install, and run on a synthetic clip with a media
   artifact (a TensorRT engine of the media ONNX file where TensorRT imports, else an AOTInductor package), against
   ``cfnsr predict`` on the same artifact: the same emotion and probabilities within 1e-3.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path


def find_tool(name: str, python: str = sys.executable) -> str | None:
    """A console script of this Python's environment: beside ``python`` (a ``PYTHON=venv/bin/python`` run has no
    activated venv, so its scripts are not on PATH), else on PATH, else None."""
    beside = Path(python).parent / name
    if beside.is_file() and os.access(beside, os.X_OK):
        return str(beside)
    return shutil.which(name)


def polygraphy_layers(engine: Path, dest: Path, note, python: str = sys.executable) -> bool:
    """``polygraphy inspect model ENGINE --show layers`` into ``dest``; a missing tool is a note, not a crash."""
    tool = find_tool("polygraphy", python)
    if tool is None:
        note("notes", f"the polygraphy tool is neither beside {python} nor on PATH: no `polygraphy inspect model` "
                      f"listing of {engine.name} (pip install 'polygraphy>=0.49.22' into that environment)")
        return False
    with open(dest, "w") as fh:
        rc = subprocess.run([tool, "inspect", "model", str(engine), "--show", "layers"], stdout=fh,
                            stderr=subprocess.STDOUT).returncode
    if rc != 0:
        note("notes", f"`polygraphy inspect model {engine.name}` exited {rc} (see {dest.name})")
    return rc == 0


def main() -> int:
    root = Path(__file__).resolve().parent.parent
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    demo = Path(args[0]) if args else Path("demo_out")
    out = Path(os.environ.get("OUT", "target_out"))
    out.mkdir(parents=True, exist_ok=True)
    report: dict = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "demo": str(demo), "python": sys.executable,
                    "steps": [], "notes": [], "skipped": []}
    try:
        run_checks(root, demo, out, report)
    except Exception as e:  # whatever stops the checks, the report of what ran is still written
        report["notes"].append(f"the checks stopped early: {type(e).__name__}: {e}")
        report["failed_early"] = True
    return write_report(out, report)


def run_checks(root: Path, demo: Path, out: Path, report: dict) -> None:
    cli = [sys.executable, "-m", "cfnsr"]

    def note(kind: str, text: str) -> None:
        print(("skipped: " if kind == "skipped" else "note: ") + text, flush=True)
        report[kind].append(text)

    def step(name, args, timeout=900):
        t0 = time.time()
        print(f"== {name}: {' '.join(str(a) for a in args)}", flush=True)
        try:
            p = subprocess.run([*cli, *map(str, args)], capture_output=True, text=True, timeout=timeout, cwd=root)
            rc, text = p.returncode, p.stdout + p.stderr
        except subprocess.TimeoutExpired as e:
            rc, text = 124, f"timed out after {timeout} s: {e}"
        print(text[-3000:], flush=True)
        report["steps"].append({"step": name, "rc": rc, "seconds": round(time.time() - t0, 1),
                                "tail": text[-1500:]})
        return rc

    step("info", ["info", "--json"])
    best = demo / "run" / "fold1" / "best.pt"
    onnx = {p: demo / "run" / f"model.{p}.onnx" for p in ("fp16", "int8")}
    if not (best.exists() and all(f.exists() for f in onnx.values())):
        step("demo", ["demo", demo], timeout=1800)
    sys.path.insert(0, str(root))
    import onnx as onnx_lib

    from cfnsr.export import readiness

    report["static"] = {}
    for p, f in onnx.items():
        if f.exists():
            r = readiness.check(onnx_lib.load(str(f)))
            lint = readiness.fusion_lint(onnx_lib.load(str(f)))
            report["static"][p] = {"ready": r.ok, "problems": r.problems, "fused_int8_layers": len(lint.fused_int8),
                                   "high_precision_layers": len(lint.high_precision)}
            print(f"{p}: TensorRT readiness {'ok' if r.ok else r.problems}; {len(lint.fused_int8)} quantized layers "
                  "in fusable patterns", flush=True)
        else:
            note("skipped", f"static TensorRT checks of the {p} ONNX file: {f} was not made")

    try:
        import tensorrt

        has_trt, why = True, f"TensorRT {tensorrt.__version__}"
    except ImportError as e:
        has_trt, why = False, str(e)
    report["tensorrt"] = why if has_trt else None
    cache = demo / "cache"
    if has_trt:
        engines = {}
        for p, f in onnx.items():
            eng = out / f"model.{p}.engine"
            if step(f"build {p}", ["build", f, "-o", eng, "--batch", "1,4,16", "--layer-info", "--force",
                                   "--timing-cache", out / "timing-caches"]) == 0:
                engines[p] = eng
        for p, eng in engines.items():
            step(f"validate {p} engine", ["validate", eng, "--reference", best, "--data", cache,
                                          "--json", out / f"validate.{p}.json"])
        if engines:
            step("bench engines", ["bench", *engines.values(), "--reference", best, "--batch", "1,8",
                                   "--json", out / "bench.json"])
        from cfnsr.export.engine import engine_layers, summarize_layers

        report["layers"] = {}
        for p, eng in engines.items():
            info = engine_layers(eng)
            (out / f"layers.{p}.json").write_text(json.dumps(info, indent=1))
            report["layers"][p] = summarize_layers(info)
            print(f"{p} engine: {report['layers'][p]}", flush=True)
            polygraphy_layers(eng, out / f"polygraphy_layers.{p}.txt", note)
    else:
        note("skipped", f"TensorRT engines (build, validate, bench, per-layer fusion report): TensorRT is not "
                        f"importable by {sys.executable} ({why}); the ONNX files are validated and benchmarked on "
                        "ONNX Runtime instead")
        for p, f in onnx.items():
            step(f"validate {p} onnx", ["validate", f, "--reference", best, "--data", cache, "--clips", "60",
                                        "--json", out / f"validate.{p}.json"])
        step("bench onnx", ["bench", *onnx.values(), "--reference", best, "--batch", "1", "--iters", "5",
                            "--json", out / "bench.json"])
    if "--skip-cpp" in sys.argv[1:]:
        report["cpp"] = {"skipped": "--skip-cpp was given"}
    else:
        report["cpp"] = cpp_end_to_end(root, out, demo, best, cache, has_trt, step)
    if report["cpp"].get("skipped"):
        note("skipped", f"the C++ runtime: {report['cpp']['skipped']}")

    # Live: does this device keep up? `cfnsr live` on a demo clip at its own rate, with the engine where one was built.
    clips = sorted((demo / "ravdess-synth" / "Actor_01").glob("01-01-05-02-*.mp4"))
    if has_trt:
        live_model = next((e for e in (engines.get("int8"), engines.get("fp16")) if e), None)
    else:
        live_model = onnx.get("int8")
    if clips and live_model is not None and live_model.exists():
        live_out = out / "live.jsonl"
        if step("live", ["live", clips[0], "--model", live_model, "--jsonl", live_out]) == 0:
            s = json.loads(live_out.read_text().splitlines()[-1])
            report["live"] = {"model": str(live_model), **{k: s[k] for k in ("realtime_factor", "latency_ms",
                                                                               "windows", "dropped", "stages_ms")}}


def write_report(out: Path, report: dict) -> int:
    """target_check.json and target_check.md: what ran, what was skipped and why; 1 when a step failed."""
    report["finished"] = time.strftime("%Y-%m-%d %H:%M:%S")
    (out / "target_check.json").write_text(json.dumps(report, indent=1))
    lines = [f"# Target check ({report['started']})", "", f"- Python: {report['python']}",
             f"- TensorRT: {report.get('tensorrt') or 'not importable'}", "", "| step | exit | seconds |",
             "|---|---|---|"]
    lines += [f"| {s['step']} | {s['rc']} | {s['seconds']} |" for s in report["steps"]]
    lines += [""] + [f"- skipped: {s}" for s in report["skipped"]] + [f"- note: {n}" for n in report["notes"]]
    for p, s in report.get("static", {}).items():
        lines.append(f"- {p} ONNX: TensorRT-ready {s['ready']}, {s['fused_int8_layers']} quantized layers in fusable "
                     f"patterns, {s['high_precision_layers']} layers in high precision")
    cpp = report.get("cpp") or {}
    lines += [f"- C++: {line}" for line in cpp.get("configure", [])]
    if "same_as_python" in cpp:
        dp = cpp["max_abs_probability_difference"]
        lines.append(f"- C++ end to end (`cfnsr_predict` vs `cfnsr predict`, {cpp['artifact']}): same emotion and "
                     f"probabilities within 1e-3: {cpp['same_as_python']} (max |dp| {dp:.2g}); warm ms per stage "
                     f"{cpp['warm_median_ms']}")
    if "live" in report:
        lv = report["live"]
        lines.append(f"- live (`cfnsr live` on a clip, {Path(lv['model']).name}): real-time factor "
                     f"{lv['realtime_factor']} (under 1 keeps up), latency p50/p99 {lv['latency_ms']['p50']}/"
                     f"{lv['latency_ms']['p99']} ms, {lv['windows']} windows, {lv['dropped']} dropped")
    for key in ("cfnsr_predict", "failed"):
        if key in cpp:
            lines.append(f"- C++ end to end {key}: {cpp[key]}")
    for p, s in report.get("layers", {}).items():
        lines.append(f"- {p} engine: {s['int8_convolutions']} of {s['convolutions']} convolutions in int8, "
                     f"{s['fused_int8_convolutions']} of them fused; {s['reformat_layers']} reformat layers")
    (out / "target_check.md").write_text("\n".join(lines) + "\n")
    failed = [s["step"] for s in report["steps"] if s["rc"] != 0] + (["C++"] if cpp.get("failed") else [])
    if report.get("failed_early"):
        failed.append("(stopped early)")
    print(f"\nreport: {out / 'target_check.md'}" + (f"; failed steps: {', '.join(failed)}" if failed else ""))
    return 1 if failed else 0


def cpp_end_to_end(root: Path, out: Path, demo: Path, best: Path, cache: Path, has_trt: bool, step) -> dict:
    """Build and install cpp/, build cfnsr_predict against the install, and compare it with `cfnsr predict`."""
    if shutil.which("cmake") is None:
        print("cmake not found: the C++ runtime is not checked (apt install cmake g++ nlohmann-json3-dev)", flush=True)
        return {"skipped": "cmake not found"}
    build, prefix, app = out / "cpp-build", out / "cpp-prefix", out / "cpp-app"

    def tool(name, args, timeout=1200):
        t0 = time.time()
        p = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout, cwd=root)
        print(f"== {name}: rc {p.returncode}\n" + (p.stdout + p.stderr)[-1500:], flush=True)
        return p.returncode, p.stdout + p.stderr, round(time.time() - t0, 1)

    torch_root = subprocess.run([sys.executable, "-c", "import os, torch; print(os.path.dirname(torch.__file__))"],
                                capture_output=True, text=True).stdout.strip()
    gen = ["-G", "Ninja"] if shutil.which("ninja") else []
    rc, log, _ = tool("configure C++", ["cmake", "-S", "cpp", "-B", build, *gen, "-DCMAKE_BUILD_TYPE=Release",
                                        f"-DCFNSR_TORCH_ROOT={torch_root}", "-DCFNSR_BUILD_EXAMPLES=OFF"])
    summary = {"configure": [line.strip("- ") for line in log.splitlines() if "cfnsr_runtime" in line]}
    for name, args in (("build C++", ["cmake", "--build", build, "-j", str(os.cpu_count() or 2)]),
                       ("install C++", ["cmake", "--install", build, "--prefix", prefix]),
                       ("configure examples", ["cmake", "-S", "cpp/examples", "-B", app, *gen,
                                               f"-DCMAKE_PREFIX_PATH={prefix.resolve()}"]),
                       ("build examples", ["cmake", "--build", app])):
        if rc != 0:
            break
        rc, log, _ = tool(name, args)
    if rc != 0:
        return {**summary, "failed": log[-600:]}
    predict = app / "cfnsr_predict"
    if not predict.exists():
        return {**summary, "cfnsr_predict": "not built (no media component: see configure)"}
    if has_trt:
        media_onnx, artifact = out / "model.media.fp32.onnx", out / "model.media.engine"
        step("export media onnx", ["export", best, "--inputs", "media", "--output", media_onnx, "--data", cache,
                                   "--force"])
        step("build media engine", ["build", media_onnx, "-o", artifact, "--batch", "1,1,2", "--force"])
    else:
        artifact = out / "model.media.fp32.pt2"
        step("export media pt2", ["export", best, "--format", "pt2", "--inputs", "media", "--output", artifact,
                                  "--max-batch", "2", "--force"])
    clip = next(iter(sorted((demo / "ravdess-synth").glob("Actor_*/*.mp4"))), None)
    if clip is None or not artifact.exists():
        return {**summary, "failed": f"no media artifact or clip ({artifact}, {clip})"}
    landmarks = demo / "ravdess-synth" / "landmarks" / (clip.stem + ".csv")
    extra = ["--landmarks", landmarks] if landmarks.exists() else ["--allow-center-crop"]
    rc, text, seconds = tool("cfnsr_predict", [predict, artifact, clip, "--json", "--repeat", "5", *extra])
    py = subprocess.run([sys.executable, "-m", "cfnsr", "predict", str(clip), "--model", str(artifact), "--json",
                         *map(str, extra)], capture_output=True, text=True, cwd=root)
    if rc != 0 or py.returncode != 0:
        return {**summary, "failed": (text + py.stdout + py.stderr)[-800:]}
    cpp_out, py_out = json.loads(text), json.loads(py.stdout[py.stdout.index("{"):])
    diff = max(abs(cpp_out["probabilities"][k] - v) for k, v in py_out["probabilities"].items())
    ok = cpp_out["emotion"] == py_out["emotion"] and diff <= 1e-3
    report = {**summary, "artifact": str(artifact), "clip": str(clip), "emotion": cpp_out["emotion"],
              "same_as_python": ok, "max_abs_probability_difference": diff,
              "warm_median_ms": cpp_out.get("warm_median_ms")}
    (out / "cpp_predict.json").write_text(json.dumps({"cpp": cpp_out, "python": py_out}, indent=1))
    if not ok:
        report["failed"] = "cfnsr_predict and cfnsr predict disagree"
    return report


if __name__ == "__main__":
    sys.exit(main())
