"""``cfnsr demo``: the whole job end to end on synthetic RAVDESS, on the CPU with ONNX Runtime.

synth-ravdess -> preprocess -> train -> export fp32/fp16/int8 and --precision auto for each CPU backend (each gated
against the checkpoint) -> validate -> bench -> predict.
Each step is skipped when its output already exists, so an interrupted demo continues.
"""

from __future__ import annotations

from pathlib import Path

import click


def run_demo(out: Path, actors: int = 8, epochs: int = 10, config: str = "cfn-sr-tiny", log=click.echo) -> dict:
    from .data.cache import FeatureCache, format_summary, preprocess
    from .data.spec import PreprocessSpec
    from .data.synth import generate
    from .engines.bench import Entry, bench, write_reports
    from .engines.predict import predict
    from .engines.validate import validate
    from .export.pipeline import ExportOptions, export, failed_name
    from .model import get_config
    from .train.trainer import TrainConfig, start_run, train_fold

    out.mkdir(parents=True, exist_ok=True)
    cfg = get_config(config)
    raw, cache_dir, run_dir = out / "ravdess-synth", out / "cache", out / "run"

    def step(title):
        log(click.style(f"\n== {title}", bold=True))

    step(f"1/7 synthetic RAVDESS: {actors} actors x 60 clips -> {raw}")
    if not (raw / "truth.json").exists():
        generate(raw, actors=actors, seed=0, workers=2)
    step(f"2/7 preprocess -> {cache_dir}")
    if not (cache_dir / "manifest.json").exists():
        log(format_summary(preprocess(raw, cache_dir, PreprocessSpec.for_model(cfg), workers=2, log=log)))
    cache = FeatureCache.open(cache_dir)
    folds = 4 if len(cache.actors) % 4 == 0 else 3
    tc = TrainConfig(epochs=epochs, folds=folds, protocol="honest", workers=0)
    best = run_dir / "fold1" / "best.pt"
    step(f"3/7 train {config}, {epochs} epochs, honest protocol (fold 1 of {folds}) -> {run_dir}")
    resume = (run_dir / "run.json").exists()
    start_run(run_dir, cache, cfg, tc, resume=resume, force=not resume)
    train_fold(cache, cfg, run_dir, 1, tc)
    artifacts = {}
    try:
        import openvino  # noqa: F401

        cpu_backends = ("onnxruntime", "openvino")
    except ImportError:
        cpu_backends = ("onnxruntime",)
        log("OpenVINO is not installed: skipping it (pip install 'cfnsr[openvino]')")
    # the auto artifact is chosen by measuring on one backend: one per CPU backend, benched on its own backend
    exports = [("fp32", None), ("fp16", None), ("int8", None)] + [("auto", b) for b in cpu_backends]
    for precision, backend in exports:
        name = precision if backend is None else f"auto-{backend}"
        step(f"4/7 export --precision {precision}" + (f" --backend {backend} --threads 2" if backend else ""))
        path = run_dir / f"model.{name}.onnx"
        if not path.exists() and not failed_name(path).exists():
            extra = {"calib_clips": 64} if precision in ("int8", "auto") else {}
            if backend:
                extra.update(auto_backend=backend, auto_threads=2, auto_budget=10)
            res = export(best, ExportOptions(precision, path, fmt="auto", data=cache_dir, **extra), log=log)
            path = res.path
        artifacts[name] = path if path.exists() else failed_name(path)
    step("5/7 validate each artifact against the checkpoint (ONNX Runtime, CPU)")
    gates = {p: validate(a, best, cache_dir, clips=60, log=log).passed for p, a in artifacts.items()}
    step("6/7 bench (batch 1 and 4, 2 threads)")
    entries = [Entry("checkpoint [torch]", best, "torch")]
    for b in cpu_backends:
        entries += [Entry(f"{p} [{b}]", a, b) for p, a in artifacts.items()
                    if not (p.startswith("auto-") and p != f"auto-{b}") and not (b == "openvino" and p == "fp16")]
    report = bench(entries, (1, 4), warmup=2, iters=10, threads=2, log=log)
    paths = write_reports(report, out / "bench.json")
    step("7/7 predict one held-out clip with the int8 model")
    clip = sorted((raw / "Actor_01").glob("01-01-05-02-*.mp4"))[0]
    pred = predict(clip, artifacts["int8"])
    log(f"{clip.name} (angry): predicted {pred['emotion']} ({100 * pred['probabilities'][pred['emotion']]:.1f}%)")
    summary = {"checkpoint": str(best), "artifacts": {k: str(v) for k, v in artifacts.items()}, "gates": gates,
               "bench": paths, "prediction": pred}
    log(click.style("\n== done", bold=True))
    for p, a in artifacts.items():
        log(f"  {p:<5} {a}  gate {'passed' if gates[p] else 'FAILED'}")
    log(f"  bench: {paths['markdown']} and {paths['png']}")
    return summary
