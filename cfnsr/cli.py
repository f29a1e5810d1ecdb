"""The ``cfnsr`` command. Each command imports what it needs when it runs, so ``cfnsr --help`` stays light."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import click

from . import __version__
from .bounds import cpu_count
from .errors import CfnsrError
from .export import formats
from .fileio import Outputs, os_reason, shown


class Group(click.Group):
    """Turns CfnsrError, and the operating system's refusals (a read-only folder, a full disk), into a one-line
    message and a non-zero exit, not a traceback. SIGTERM unwinds like Ctrl-C, so temporary files and folders are
    removed on that exit path too; text that names files which are not UTF-8 is printed as their bytes."""

    def invoke(self, ctx):
        _tolerant_streams()
        with _terminate_as_exit():
            try:
                return super().invoke(ctx)
            except CfnsrError as e:
                click.secho(f"error: {shown(e)}", fg="red", err=True)
                ctx.exit(e.exit_code)
            except OSError as e:  # ENOSPC, EACCES, EROFS... while reading or writing
                where = f" {shown(e.filename)}" if getattr(e, "filename", None) else ""
                click.secho(f"error: cannot access{where}: {os_reason(e)}", fg="red", err=True)
                ctx.exit(1)


def _tolerant_streams() -> None:
    import sys

    for stream in (sys.stdout, sys.stderr):
        if hasattr(stream, "reconfigure"):
            try:
                stream.reconfigure(errors="surrogateescape")
            except (ValueError, OSError):
                pass


class Terminated(SystemExit):
    """SIGTERM, raised in the main thread so that every ``finally`` and context manager runs."""


@contextlib.contextmanager
def _terminate_as_exit():
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handler(signum, frame):
        raise Terminated(128 + signum)

    old = signal.signal(signal.SIGTERM, handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, old)


# ----------------------------------------------------------------------------------- option types (parse time)
POSITIVE = click.IntRange(min=1)
NON_NEGATIVE = click.IntRange(min=0)


class FiniteFloat(click.FloatRange):
    """A float in a range that is also finite: FloatRange alone lets NaN through (it fails every comparison)."""

    def convert(self, value, param, ctx):
        import math

        rv = click.FLOAT.convert(value, param, ctx)
        if not math.isfinite(rv):
            self.fail(f"{value!r} is not a finite number", param, ctx)
        return super().convert(rv, param, ctx)


class PositiveIntList(click.ParamType):
    """Comma-separated positive integers, e.g. ``1,4,16``."""

    name = "N[,N...]"

    def convert(self, value, param, ctx):
        if isinstance(value, tuple):
            return value
        try:
            out = tuple(int(x) for x in str(value).split(","))
        except ValueError:
            self.fail(f"{value!r} is not a comma-separated list of integers (e.g. 1,4,16)", param, ctx)
        if not out or any(x < 1 for x in out):
            self.fail(f"{value!r}: every entry must be a positive integer", param, ctx)
        return out


def _threads(ctx, param, value):
    """--threads: at most the CPUs this process may use (more only oversubscribes, and 10,000 threads exhaust the
    machine before any work)."""
    if value is not None and value > cpu_count():
        raise click.BadParameter(f"{value} threads: this machine lets cfnsr use {cpu_count()} CPUs; give at most "
                                 f"{cpu_count()}")
    return value


MAX_WORKERS_PER_CPU = 4


def _workers(ctx, param, value):
    """--workers: processes, bounded by the machine (each holds a decoder and its buffers)."""
    limit = MAX_WORKERS_PER_CPU * cpu_count()
    if value is not None and value > limit:
        raise click.BadParameter(f"{value} worker processes on {cpu_count()} CPUs: give at most {limit}")
    return value


def _config_name(ctx, param, value):
    """--config: a name of the model registry, checked before any work (``cfnsr.model.config`` imports no torch)."""
    from .model.config import list_configs

    known = list_configs()
    if value not in known:
        raise click.BadParameter(f"unknown configuration {value!r}; choose one of {', '.join(known)}")
    return value


def _torch_device(ctx, param, value):
    import re

    if not re.fullmatch(r"auto|cpu|cuda(:\d+)?", value):
        raise click.BadParameter(f"{value!r}: use auto, cpu, cuda or cuda:N")
    return value


@click.group(cls=Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="cfnsr")
def main() -> None:
    """CFN-SR audio-video emotion recognition: data, training, export to fp32/fp16/int8 ONNX and TensorRT,
    validation against the PyTorch model, and benchmarks."""


# ----------------------------------------------------------------------------------------------------- info
@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print the report as JSON.")
def info(as_json: bool) -> None:
    """Versions, the GPU, and which inference backends are usable here (and why not)."""
    from .sysinfo import as_dicts, diagnose, jetson_warnings, machine, probe_backends, target_facts

    backends = probe_backends()
    m = machine()
    problems = diagnose(target_facts()) + jetson_warnings(m)
    if as_json:
        click.echo(json.dumps({"cfnsr": __version__, "machine": m, "backends": as_dicts(backends),
                               "diagnoses": problems}, indent=2))
        return
    click.echo(f"cfnsr {__version__}  python {m['python']}  {m['machine']}  {m['processor']} ({m['cpu_count']} CPUs)")
    if "gpu" in m:
        click.echo(f"GPU: {m['gpu']} (CUDA {m['cuda']})")
    if "jetson" in m:
        j = m["jetson"]
        click.echo(f"Jetson: {j['model']}, L4T {j.get('l4t', '?')} (JetPack {j.get('jetpack', '?')}), power mode "
                   f"{j.get('power_mode', '?')}, clocks {'locked' if j.get('clocks_locked') else 'not locked'}")
    click.echo("backends:")
    for b in backends:
        mark = click.style("yes", fg="green") if b.usable else click.style("no ", fg="yellow")
        click.echo(f"  {b.name:<12} {mark}  {b.detail}")
    for line in problems:
        click.echo(click.style("problem: ", fg="red") + line)


# -------------------------------------------------------------------------------------------------- summary
@main.command()
@click.argument("model")
@click.option("--no-flops", is_flag=True, help="Skip the FLOP count (it runs one forward pass).")
@click.option("--json", "as_json", is_flag=True, help="Print the summary as JSON.")
def summary(model: str, no_flops: bool, as_json: bool) -> None:
    """Parameters per branch and GFLOPs of a configuration name (cfn-sr, cfn-sr-tiny) or a checkpoint."""
    from .model import create_model, list_configs, load_model
    from .model.summary import format_summary, summarize

    if model in list_configs():
        net = create_model(model)
    elif Path(model).is_dir():
        raise CfnsrError(f"{shown(model)} is a folder: give a checkpoint file (e.g. RUN/fold1/best.pt) or a "
                         f"configuration name ({', '.join(list_configs())})")
    elif Path(model).exists():
        net = load_model(model)
    else:
        raise CfnsrError(f"{model!r} is neither a configuration ({', '.join(list_configs())}) nor an existing file")
    s = summarize(net, count_flops=not no_flops)
    click.echo(json.dumps(s, indent=2) if as_json else format_summary(s))


# ------------------------------------------------------------------------------------------ import-original
@main.command("import-original")
@click.option("--fused", type=click.Path(dir_okay=False),
              help="Published fused checkpoint (fold_N_msaf_ravdess_best.pth).")
@click.option("--video", type=click.Path(dir_okay=False),
              help="Published unimodal ResNeXt checkpoint (fold_N_resnext50_best.pth).")
@click.option("--audio", type=click.Path(dir_okay=False),
              help="Published unimodal MFCCNet checkpoint (fold_N_mfccNet_best.pth).")
@click.option("--config", "config_name", default="cfn-sr", show_default=True, callback=_config_name,
              help="Model configuration.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="cfnsr checkpoint to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def import_original(fused, video, audio, config_name, output, force) -> None:
    """Convert checkpoints of the published CFN-SR/MSAF code into a cfnsr checkpoint.

    The result records MSAF-compatible preprocessing (--msaf-compat cropping, BGR channel order), which is what
    the published weights were trained on.
    """
    from .data.spec import PreprocessSpec
    from .model import get_config, save_checkpoint
    from .model.original import from_original_fused, from_original_unimodal

    if bool(fused) == bool(video or audio):
        raise click.UsageError("give either --fused, or both --video and --audio")
    if not fused and not (video and audio):
        raise click.UsageError("--video and --audio go together")
    Outputs([fused, video, audio], force).file(output, "-o").check()
    cfg = get_config(config_name)
    if fused:
        model, source = from_original_fused(fused, cfg), {"fused": str(fused)}
    else:
        model, source = from_original_unimodal(video, audio, cfg), {"video": str(video), "audio": str(audio)}
    spec = PreprocessSpec.for_model(cfg, msaf_compat=True)
    save_checkpoint(output, model, preprocess=spec.to_dict(), force=force, imported_from=source)
    click.echo(f"wrote {output} ({cfg.name}, {sum(p.numel() for p in model.parameters()):,} parameters)")




# ------------------------------------------------------------------------------------------------ data
@main.command("synth-ravdess")
@click.argument("out", type=click.Path(file_okay=False))
@click.option("--actors", default=8, show_default=True, type=click.IntRange(1, 24),
              help="Number of actors (1-24), 60 speech clips each.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1))
@click.option("--workers", default=2, show_default=True, type=POSITIVE, callback=_workers, help="Parallel processes.")
@click.option("--force", is_flag=True, help="Write into a folder that already has clips.")
def synth_ravdess(out, actors, seed, workers, force) -> None:
    """Write a synthetic data set in RAVDESS's exact layout (mp4 clips with audio, landmark CSVs)."""
    from .data.synth import generate

    Outputs().folder(out, "OUT").check()
    if any(Path(out).glob("Actor_*/*.mp4")) and not force:
        raise CfnsrError(f"{shown(out)} already holds clips; pass --force to overwrite them")
    generate(out, actors=actors, seed=seed, workers=workers)
    click.echo(f"wrote {actors * 60} clips of {actors} actors to {out}")


@main.command()
@click.argument("raw_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "cache_dir", required=True, type=click.Path(file_okay=False),
              help="Feature cache folder (created; an unfinished one is continued).")
@click.option("--config", "config_name", default="cfn-sr", show_default=True, callback=_config_name,
              help="Model configuration whose input size the features take (frames, face size).")
@click.option("--msaf-compat", is_flag=True,
              help="Crop faces from the frame squashed to the face size first, as MSAF did "
                   "(for published checkpoints).")
@click.option("--channel-order", type=click.Choice(["bgr", "rgb"]), default="bgr", show_default=True,
              help="Channel order the model sees; MSAF/CFN-SR checkpoints were trained on BGR.")
@click.option("--song", is_flag=True, help="Also take the song clips (speech only by default).")
@click.option("--no-detector", is_flag=True, help="Without a landmark file, centre-crop instead of detecting the face.")
@click.option("--allow-center-crop", is_flag=True,
              help="Use the frame centre of a clip where no face is found (such a clip is skipped by default).")
@click.option("--workers", default=2, show_default=True, type=POSITIVE, callback=_workers, help="Parallel processes.")
@click.option("--strict", is_flag=True,
              help="A clip that is not what it seems (truncated, silent, audio shorter than the window, a decoder "
                   "error mid-file) fails instead of being cached with a warning.")
@click.option("--force", is_flag=True, help="Write into a folder that holds something other than this cache.")
def preprocess(raw_dir, cache_dir, config_name, msaf_compat, channel_order, song, no_detector, allow_center_crop,
               workers, strict, force) -> None:
    """Decode RAVDESS clips into a feature cache (face crops + MFCC). Resumable; bad clips are reported and skipped."""
    from .data.cache import format_summary
    from .data.cache import preprocess as run
    from .data.spec import PreprocessSpec
    from .model import get_config

    Outputs([raw_dir]).folder(cache_dir, "-o").check()
    spec = PreprocessSpec.for_model(get_config(config_name), msaf_compat=msaf_compat, channel_order=channel_order)
    manifest = run(raw_dir, cache_dir, spec, workers=workers, include_song=song, use_detector=not no_detector,
                   allow_center_crop=allow_center_crop, log=click.echo, force=force, strict=strict)
    click.echo(format_summary(manifest))
# ------------------------------------------------------------------------------------------------ training
@main.command()
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("--config", "config_name", default="cfn-sr", show_default=True, callback=_config_name,
              help="Model configuration.")
@click.option("-o", "--output", "run_dir", required=True, type=click.Path(file_okay=False), help="Run folder.")
@click.option("--fold", default="1", show_default=True, help="Fold number (1..--folds), or 'all'.")
@click.option("--folds", default=6, show_default=True, type=click.IntRange(min=2), help="Number of actor folds.")
@click.option("--protocol", type=click.Choice(["honest", "msaf"]), default="honest", show_default=True,
              help="honest: separate validation and test actors; msaf: the papers' protocol.")
@click.option("--epochs", default=70, show_default=True, type=POSITIVE)
@click.option("--unimodal-epochs", default=0, show_default=True, type=NON_NEGATIVE,
              help="Pre-train the video and audio branches alone for this many epochs first (0: skip).")
@click.option("--batch-size", default=16, show_default=True, type=POSITIVE,
              help="Global batch size (split over torchrun processes).")
@click.option("--lr", default=1e-3, show_default=True, type=FiniteFloat(min=0, min_open=True))
@click.option("--weight-decay", default=0.0, show_default=True, type=FiniteFloat(min=0))
@click.option("--scheduler", type=click.Choice(["none", "cosine"]), default="none", show_default=True)
@click.option("--amp", type=click.Choice(["auto", "bf16", "fp16", "off"]), default="auto", show_default=True,
              help="Mixed precision on GPU (auto: bf16 where supported, else fp16 with a scaler; off on CPU).")
@click.option("--device", default="auto", show_default=True, callback=_torch_device, help="auto, cpu, cuda or cuda:N.")
@click.option("--workers", default=2, show_default=True, type=NON_NEGATIVE, callback=_workers,
              help="DataLoader worker processes.")
@click.option("--seed", default=1234, show_default=True)
@click.option("--init", "init_path", type=click.Path(dir_okay=False),
              help="Start the fused model from this cfnsr checkpoint (e.g. from `cfnsr import-original`).")
@click.option("--resume", is_flag=True, help="Continue the run in RUN_DIR where it stopped.")
@click.option("--force", is_flag=True, help="Start over in a RUN_DIR that holds a run.")
def train(cache_dir, config_name, run_dir, fold, folds, protocol, epochs, unimodal_epochs, batch_size, lr,
          weight_decay, scheduler, amp, device, workers, seed, init_path, resume, force) -> None:
    """Train CFN-SR on a feature cache. Run under `torchrun --nproc_per_node N` for several GPUs (or CPU processes)."""
    from .bounds import check_batch_memory, check_torch_device
    from .data.cache import FeatureCache
    from .model import get_config, load_model
    from .train.distributed import init_distributed
    from .train.trainer import TrainConfig, start_run, train_fold

    if resume and force:
        raise click.UsageError("--resume continues the run in RUN_DIR and --force starts it over: give one of them")
    if fold != "all" and not (fold.isdigit() and 1 <= int(fold) <= folds):
        raise click.BadParameter(f"{fold!r}: give a fold number 1..{folds} (--folds), or 'all'", param_hint="--fold")
    Outputs([cache_dir, init_path]).folder(run_dir, "-o").check()
    check_torch_device(device)  # before the run folder is written
    dist = init_distributed()
    cache = FeatureCache.open(cache_dir)
    cfg = get_config(config_name)
    tc = TrainConfig(epochs=epochs, unimodal_epochs=unimodal_epochs, batch_size=batch_size, lr=lr,
                     weight_decay=weight_decay, scheduler=scheduler, protocol=protocol, folds=folds, seed=seed,
                     workers=workers, amp=amp, device=device)
    cache.check_model(cfg)
    check_batch_memory(batch_size, cfg.clip_bytes, "--batch-size")
    init = None
    if init_path:
        src = load_model(init_path)
        if src.config != cfg:
            raise CfnsrError(f"--init {init_path} is configuration {src.config.name!r}, not {cfg.name!r}")
        init = lambda m: m.load_state_dict(src.state_dict())  # noqa: E731
    fold_ids = list(range(1, folds + 1)) if fold == "all" else [int(fold)]
    if dist.main:  # the other processes wait until rank 0 has checked and recorded the run folder
        cache.verify()  # a broken clip stops here, before --force removes anything
        start_run(run_dir, cache, cfg, tc, resume, force, folds_to_write=fold_ids)
    dist.barrier()
    for k in fold_ids:
        best = train_fold(cache, cfg, run_dir, k, tc, init=init)
        msg = f"fold {k}: best validation top-1 {100 * best['val_top1']:.2f}% at epoch {best['epoch']}"
        if best.get("test"):
            msg += f"; test top-1 there {100 * best['test']['top1']:.2f}%"
        if dist.main:
            click.echo(msg + f"  -> {Path(run_dir) / f'fold{k}' / 'best.pt'}")


@main.command()
@click.argument("target", type=click.Path())
@click.argument("cache_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "out_dir", type=click.Path(file_okay=False),
              help="Write JSON, Markdown and confusion-matrix PNG reports here.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as JSON on stdout.")
def evaluate(target, cache_dir, out_dir, as_json) -> None:
    """Accuracy, per-class precision/recall/F1 and confusion of a checkpoint or of every fold of a run folder."""
    from .data.cache import FeatureCache
    from .train.evaluate import evaluate as run
    from .train.evaluate import format_result

    # a run folder may hold its own evaluation reports; a checkpoint file and the cache are never written over
    Outputs([target if not Path(target).is_dir() else None, cache_dir]).folder(out_dir, "-o").check()
    result = run(target, FeatureCache.open(cache_dir), out_dir)
    click.echo(json.dumps(result, indent=2) if as_json else format_result(result))
# ------------------------------------------------------------------------------------------------ export
@main.command()
@click.argument("checkpoint", type=click.Path(dir_okay=False))
@click.option("--precision", type=click.Choice(formats.PRECISIONS), default="fp32", show_default=True,
              help="auto: per layer group, int8 where it is faster on --backend and accuracy allows, float elsewhere "
                   "(measured; see --backend, --budget).")
@click.option("-o", "--output", type=click.Path(dir_okay=False),
              help="ONNX file to write [default: CHECKPOINT's name with .PRECISION.onnx].")
@click.option("--format", "fmt", type=click.Choice(formats.FORMAT_CHOICES), default=formats.AUTO,
              show_default=True,
              help="auto: ONNX, plus the TensorRT engine where TensorRT and a GPU are present. pt2: an AOTInductor "
                   "package (fp32) for the C++ runtime's libtorch backend.")
@click.option("--calib-data", "--data", "data", type=click.Path(file_okay=False),
              help="Feature cache (cfnsr preprocess): int8 calibration clips and held-out clips for the accuracy gate.")
@click.option("--calib-clips", default=256, show_default=True, type=POSITIVE,
              help="Calibration clips (training actors only).")
@click.option("--calib-method", type=click.Choice(formats.CALIB_METHODS), default="percentile",
              show_default=True, help="Activation ranges: min/max, KL-divergence (TensorRT's entropy), or the 99.999th "
              "percentile of |x|.")
@click.option("--int8-scope", type=click.Choice(tuple(formats.INT8_SCOPES)), default="all", show_default=True,
              help="What is quantized; the rest stays in --high-precision. "
                   + "; ".join(f"{k}: {v}" for k, v in formats.INT8_SCOPES.items()) + ".")
@click.option("--high-precision", type=click.Choice(formats.HIGH_PRECISIONS), default="fp32", show_default=True,
              help="Precision of what int8 leaves unquantized.")
@click.option("--gate-clips", type=POSITIVE, help="Held-out clips for the gate [default: all of the test actors].")
@click.option("--min-agreement", type=FiniteFloat(0, 1), help="Override the gate's top-1 agreement threshold (0-1).")
@click.option("--max-accuracy-drop", type=FiniteFloat(0, 100),
              help="Override the int8 gate's accuracy drop threshold (points).")
@click.option("--max-abs-logit", type=FiniteFloat(min=0, min_open=True),
              help="Override the gate's largest |logit difference| (fp32: 1e-3).")
@click.option("--no-trt-check", is_flag=True, help="Write the file even if the TensorRT readiness check fails.")
@click.option("--device", type=click.Choice(["cpu", "cuda"]), default="cpu", show_default=True,
              help="--format pt2: the device the package is compiled for (cuda: on that GPU). --precision auto: "
                   "where latency is measured.")
@click.option("--backend", "auto_backend", type=click.Choice(formats.AUTO_BACKENDS),
              help="--precision auto: the backend whose latency decides [default: TensorRT where it imports, else "
                   "OpenVINO where installed, else ONNX Runtime].")
@click.option("--batch", "auto_batch", default=1, show_default=True, type=POSITIVE,
              help="--precision auto: the batch size latency is measured at.")
@click.option("--threads", "auto_threads", type=POSITIVE, help="--precision auto: CPU threads for the measurements.")
@click.option("--budget", "auto_budget", default=12, show_default=True, type=click.IntRange(min=2),
              help="--precision auto: most whole-graph evaluations (the plain choices count; the search resumes "
                   "from NAME.auto.state.json).")
@click.option("--max-batch", default=64, show_default=True, type=click.IntRange(min=2),
              help="--format pt2: the largest batch it accepts.")
@click.option("--inputs", type=click.Choice(formats.CHOICES["inputs"]), default="features", show_default=True,
              help="features: normalised video + MFCC in. media: uint8 face crops + PCM in, the checkpoint's "
                   "preprocessing (normalisation, librosa's MFCC) in the graph, fp32.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def export(checkpoint, precision, output, fmt, data, calib_clips, calib_method, int8_scope, high_precision,
           gate_clips, min_agreement, max_accuracy_drop, max_abs_logit, no_trt_check, device, auto_backend, auto_batch,
           auto_threads, auto_budget, max_batch, inputs, force) -> None:
    """Export a checkpoint to ONNX with the precision in the graph; check it against the checkpoint.

    fp32: parity with PyTorch. fp16: strongly typed fp16 graph (LayerNorm, Softmax, reductions, mask path in fp32).
    int8: explicit Q/DQ from RAVDESS calibration (symmetric, per-channel weights) for TensorRT's strongly typed
    builder. auto: per layer group the precision that is fastest on --backend where the gate holds on the
    validation actors (NAME.auto.onnx, precision "mixed"). pt2: an AOTInductor package (fp32) for the C++
    runtime. A failed accuracy gate keeps the file as
    NAME.FAILED.onnx (or .FAILED.pt2) and exits with status 3.
    """
    from .engines.accuracy import GateThresholds
    from .errors import GateFailed
    from .export.pipeline import ExportOptions, report_path
    from .export.pipeline import export as run

    thresholds = GateThresholds.from_options(min_agreement, max_accuracy_drop, max_abs_logit)
    opts = ExportOptions(precision=precision, output=Path(output) if output else None, fmt=fmt,
                         data=Path(data) if data else None, calib_clips=calib_clips, calib_method=calib_method,
                         int8_scope=int8_scope, high_precision=high_precision, gate_clips=gate_clips,
                         thresholds=thresholds, check_trt=not no_trt_check, force=force, device=device,
                         max_batch=max_batch, inputs=inputs, auto_backend=auto_backend, auto_batch=auto_batch,
                         auto_threads=auto_threads, auto_budget=auto_budget)
    result = run(checkpoint, opts, log=click.echo)  # its outputs are declared and checked there, before any work
    r = result.report
    click.echo(f"{'wrote' if result.passed else 'kept (gate FAILED)'} {result.path}  {r['size_bytes'] / 1e6:.1f} MB  "
               f"{r.get('artifact_precision', precision)}  gate {'passed' if result.passed else 'FAILED'}  "
               f"report {report_path(result.path)}")
    if result.engine:
        click.echo(f"engine {result.engine}")
    if not result.passed:
        raise GateFailed(f"{precision} accuracy gate failed; see {report_path(result.path)}"
                         + (f" ({r['gate']['suggestion']})" if r["gate"].get("suggestion") else ""))
# ------------------------------------------------------------------------------------------------ runtime
# engines.BACKENDS, spelled here so that `cfnsr --help` imports no backend code (tests check they agree)
BACKEND_CHOICE = click.Choice(["torch", "onnxruntime", "openvino", "tensorrt", "aoti"])
DEVICE_OPTION = click.option(
    "--device", type=click.Choice(["cpu", "cuda", "auto"]), default="auto", show_default=True,
    help="Where the torch reference and ONNX Runtime run: auto = the GPU when torch / onnxruntime-gpu see one.")


@main.command()
@click.argument("onnx_path", type=click.Path(dir_okay=False))
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="Engine file [default: MODEL.engine].")
@click.option("--batch", default="1,1,8", show_default=True,
              help="Optimisation profile of the batch axis: MIN,OPT,MAX.")
@click.option("--workspace-mb", default=4096, show_default=True, type=POSITIVE)
@click.option("--timing-cache", type=click.Path(file_okay=False),
              help="Folder of timing caches, one per GPU and TensorRT version, reused across builds on that device.")
@click.option("--version-compatible", is_flag=True,
              help="Engine also runs on newer TensorRT versions of the same major version (not older ones).")
@click.option("--hardware-compatible", is_flag=True, help="Engine runs on any Ampere or newer GPU.")
@click.option("--dla-core", type=int, help="Refused, with the reason: cfnsr's Q/DQ int8 graphs do not run on DLA.")
@click.option("--layer-info", is_flag=True,
              help="Detailed profiling verbosity, so the engine inspector reports each layer's precision and fusion.")
@click.option("--force", is_flag=True)
def build(onnx_path, output, batch, workspace_mb, timing_cache, version_compatible, hardware_compatible, dla_core,
          layer_info, force) -> None:
    """Build a TensorRT engine (strongly typed: the precision comes from the ONNX graph) on this GPU."""
    from .artifact import sidecar_path
    from .export.engine import BuildOptions, build_engine, engine_path

    try:
        b = tuple(int(x) for x in batch.split(","))
    except ValueError:
        b = ()
    if len(b) != 3:
        raise click.BadParameter("give MIN,OPT,MAX, e.g. 1,4,16", param_hint="--batch")
    opts = BuildOptions(b, workspace_mb, Path(timing_cache) if timing_cache else None, version_compatible,
                        hardware_compatible, dla_core, layer_info)
    out = Path(output) if output else engine_path(onnx_path)
    outs = Outputs([onnx_path], force)
    outs.file(out, "-o")
    outs.file(sidecar_path(out), "the sidecar beside -o", force=True)
    outs.folder(timing_cache, "--timing-cache")
    outs.check()
    build_engine(onnx_path, out, opts, force=force, log=click.echo)


@main.command()
@click.argument("artifact", type=click.Path(dir_okay=False))
@click.option("--reference", required=True, type=click.Path(dir_okay=False), help="The PyTorch checkpoint.")
@click.option("--data", required=True, type=click.Path(file_okay=False), help="Feature cache with held-out clips.")
@click.option("--backend", type=BACKEND_CHOICE)
@click.option("--clips", type=POSITIVE, help="Held-out clips to use [default: all of the test actors].")
@click.option("--precision", type=click.Choice((*formats.GATE_PRECISIONS,)),
              help="Gate to apply [default: the artifact's].")
@click.option("--min-agreement", type=FiniteFloat(0, 1))
@click.option("--max-accuracy-drop", type=FiniteFloat(0, 100))
@click.option("--max-abs-logit", type=FiniteFloat(min=0, min_open=True))
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write the result as JSON here (- for stdout).")
@DEVICE_OPTION
def validate(artifact, reference, data, backend, clips, precision, min_agreement, max_accuracy_drop, max_abs_logit,
             json_path, device) -> None:
    """Check that an artifact agrees with its PyTorch checkpoint on held-out clips; exits 3 when the gate fails."""
    from .engines.accuracy import GateThresholds
    from .engines.validate import validate as run
    from .errors import GateFailed
    from .fileio import write_json

    th = GateThresholds.from_options(min_agreement, max_accuracy_drop, max_abs_logit)
    Outputs([artifact, reference, data]).file(json_path, "--json", text=True).check()
    result = run(artifact, reference, data, backend, clips, th, precision, log=click.echo, device=device)
    if json_path:
        write_json(None if json_path == "-" else json_path, result.to_dict())
    if not result.passed:
        raise GateFailed(f"{artifact} failed the {result.precision} gate")


@main.command()
@click.argument("artifacts", nargs=-1, type=click.Path(dir_okay=False))
@click.option("--reference", type=click.Path(dir_okay=False),
              help="PyTorch checkpoint measured first, as the baseline of the ratios.")
@click.option("--backend", "backends", multiple=True, type=BACKEND_CHOICE,
              help="Backend for all artifacts, or once per artifact.")
@click.option("--batch", default="1", show_default=True, type=PositiveIntList(), help="Comma-separated batch sizes.")
@click.option("--threads", type=POSITIVE, callback=_threads,
              help="CPU threads (pinned for every CPU backend; at most the CPUs here).")
@click.option("--warmup", default=3, show_default=True, type=NON_NEGATIVE)
@click.option("--iters", default=20, show_default=True, type=POSITIVE)
@click.option("--json", "json_path", type=click.Path(dir_okay=False, allow_dash=True), default="bench.json",
              show_default=True, help="JSON report; the Markdown and PNG are written beside it (NAME.md, NAME.png "
              "for NAME.json). - : the JSON on stdout, and no Markdown or PNG.")
@DEVICE_OPTION
def bench(artifacts, reference, backends, batch, threads, warmup, iters, json_path, device) -> None:
    """Latency and throughput of one or more artifacts, with ratios against the first (JSON, Markdown, PNG)."""
    from .engines.bench import bench as run
    from .engines.bench import check_batches, parse_entries, report_paths, write_reports

    entries = parse_entries(list(artifacts), list(backends), reference)
    outs = Outputs([*artifacts, reference])
    paths = report_paths(json_path)
    outs.file(paths["json"] if json_path != "-" else "-", "--json", text=True)
    outs.file(paths["markdown"], "the Markdown beside --json", text=True)
    outs.file(paths["png"], "the PNG beside --json")
    outs.check()
    check_batches(entries, batch)
    report = run(entries, batch, warmup, iters, threads, log=click.echo if json_path != "-" else _echo_err,
                 device=device)
    written = write_reports(report, json_path)
    if json_path == "-":
        return
    for r in report["results"]:
        click.echo(f"  {r['label']:<32} batch {r['batch']:>3}  x{r['speedup_vs_first']:.2f} vs {report['baseline']}")
    click.echo(f"reports: {written['json']}, {written['markdown']}, {written['png']}")


@main.command()
@click.argument("inputs", nargs=-1, required=True)
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint, ONNX file (features or media), engine or pt2 package.")
@click.option("--backend", type=BACKEND_CHOICE)
@click.option("--landmarks", type=click.Path(dir_okay=False), help="OpenFace landmark CSV of the clip.")
@click.option("--allow-center-crop", is_flag=True, help="Classify the frame centre when no face is found.")
@click.option("--save-inputs", type=click.Path(file_okay=False),
              help="Also write the model inputs here as video.npy and audio.npy (for the C++ runtime).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (one object; JSON Lines for several clips).")
@click.option("--jsonl", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write one JSON line per clip here (- for stdout).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False, allow_dash=True),
              help="Write a CSV row per clip here (- for stdout).")
@click.option("--strict", is_flag=True,
              help="A clip that is not what it seems (truncated, silent, audio shorter than the window, a decoder "
                   "error mid-file) fails instead of being predicted with a warning.")
@click.option("--timeline", is_flag=True,
              help="Sliding windows over a recording longer than a clip: a CSV of probabilities over time and a PNG.")
@click.option("--hop", type=FiniteFloat(min=0, min_open=True),
              help="--timeline: seconds between windows, at least one video frame (a window is the spec's audio "
                   "duration) [default: 0.5].")
@click.option("--out", "out_dir", type=click.Path(file_okay=False), help="--timeline: folder for the CSV and PNG.")
@click.option("--timings", is_flag=True, help="Print the time of each stage (decode, detection, crop, ...).")
@DEVICE_OPTION
def predict(inputs, model_path, backend, landmarks, allow_center_crop, save_inputs, as_json, jsonl, csv_path, strict,
            timeline, hop, out_dir, timings, device) -> None:
    """The emotion of clips: files, folders or globs, the model loaded once (or --timeline over a recording)."""
    from .engines.predict import (
        check_hop,
        expand_inputs,
        predict_clip,
        predict_many,
        timeline_paths,
        write_rows,
        write_timeline,
    )
    from .engines.predict import timeline as run_timeline
    from .engines.recognizer import STAGES, Recognizer

    if timeline:
        given = [flag for flag, v in (("--jsonl", jsonl), ("--csv", csv_path), ("--landmarks", landmarks),
                                      ("--save-inputs", save_inputs), ("--json", as_json),
                                      ("--strict", strict)) if v]
        if given:
            raise click.UsageError(f"--timeline writes NAME.timeline.csv and NAME.timeline.png per recording (in "
                                   f"--out), each window's audio_padded and face_lost in its rows; it does not take "
                                   f"{', '.join(given)}")
    else:
        given = [flag for flag, v in (("--hop", hop), ("--out", out_dir)) if v is not None]
        if given:
            raise click.UsageError(f"{', '.join(given)} apply to --timeline only")
    videos = expand_inputs(inputs, log=_echo_err)
    if (save_inputs or landmarks) and len(videos) > 1:
        raise click.UsageError("--save-inputs and --landmarks take one clip")
    outs = Outputs([*videos, model_path, landmarks])
    outs.file(jsonl, "--jsonl", text=True)
    outs.file(csv_path, "--csv", text=True)
    if save_inputs:
        outs.folder(save_inputs, "--save-inputs")
        for name in ("video.npy", "audio.npy"):
            outs.file(Path(save_inputs) / name, f"{name} in --save-inputs")
    plots = {}
    if timeline:
        if out_dir:
            outs.folder(out_dir, "--out")
        for v in videos:
            plots[v] = timeline_paths(v, out_dir)
            outs.file(plots[v][0], f"the timeline CSV of {shown(v.name)}", text=True)
            outs.file(plots[v][1], f"the timeline PNG of {shown(v.name)}")
            if hop is not None:
                check_hop(v, hop)
    outs.check()
    quiet = as_json or "-" in (jsonl, csv_path)
    with Recognizer(model_path, backend, device, allow_center_crop) as rec:
        if timeline:
            for v in videos:
                csv_out, png_out = plots[v]
                rows = run_timeline(v, rec, hop)
                write_timeline(rows, rec.labels, csv_out, png_out,
                               f"{shown(v.name)}: emotion over time ({shown(rec.artifact.name)})")
                lost = sum(r["face_lost"] for r in rows)
                click.echo(f"{shown(v)}: {len(rows)} windows{f' ({lost} without a face)' if lost else ''} -> "
                           f"{shown(csv_out)}, {shown(png_out)}")
            return
        if len(videos) == 1:
            rows = [predict_clip(rec, videos[0], landmarks, save_inputs, strict=strict)]
        else:
            rows = predict_many(videos, rec, log=_echo_err, strict=strict)
        for r in rows:
            for w in r.get("warnings", []):
                _echo_err(f"warning: {shown(r['video'])}: {w}")
        write_rows(rows, rec.labels, jsonl, csv_path)
        backend_name = rec.runner.backend
    if as_json:
        click.echo(json.dumps(rows[0], indent=2) if len(rows) == 1 else "\n".join(json.dumps(r) for r in rows))
    elif not quiet:
        for r in rows:
            if "error" in r:
                continue
            head = f"{r['emotion']}  ({100 * r['probabilities'][r['emotion']]:.1f}%, {backend_name}, face: {r['crop']})"
            click.echo(head if len(rows) == 1 else f"{shown(r['video'])}: {head}")
            if r.get("crop_note"):
                click.echo(f"  note: {shown(r['crop_note'])}")
            if len(rows) == 1:
                for label, p in sorted(r["probabilities"].items(), key=lambda kv: -kv[1]):
                    click.echo(f"  {label:<10} {p:6.3f} {'#' * int(round(40 * p))}")
            if timings:
                t = r["timings_ms"]
                click.echo("  timings (ms): " + "  ".join(f"{s} {t[s]:.1f}" for s in (*STAGES, "total")))
    failed = [r for r in rows if "error" in r]
    if failed and len(failed) == len(rows):
        raise CfnsrError(failed[0]["error"])


# ------------------------------------------------------------------------------------------------ live
@main.command()
@click.argument("source")
@click.option("--model", "model_path", required=True, type=click.Path(dir_okay=False),
              help="Checkpoint, ONNX file (features or media), engine or pt2 package.")
@click.option("--backend", type=BACKEND_CHOICE)
@DEVICE_OPTION
@click.option("--hop", default=0.5, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Seconds between windows (a window is the spec's audio duration).")
@click.option("--fast", is_flag=True, help="A file: as fast as it decodes, every window run (else at its own rate).")
@click.option("--audio", help="Microphone for a source without sound: an ALSA (hw:1, default) or PulseAudio device.")
@click.option("--audio-format", type=click.Choice(["alsa", "pulse"]), help="What --audio names [default: alsa].")
@click.option("--jsonl", type=click.Path(dir_okay=False, allow_dash=True),
              help="One JSON line per window here ('-': stdout, the default without --csv).")
@click.option("--csv", "csv_path", type=click.Path(dir_okay=False), help="One CSV row per window here.")
@click.option("--overlay", type=click.Path(dir_okay=False), help="Also write the video with the face and emotion.")
@click.option("--max-latency", type=FiniteFloat(min=0, min_open=True),
              help="Drop a window still waiting this many seconds after its last sample.")
@click.option("--queue", default=2, show_default=True, type=POSITIVE,
              help="Windows waiting for the model at most; beyond it the oldest is dropped.")
@click.option("--reconnect", default=3, show_default=True, type=NON_NEGATIVE,
              help="Network sources: times in a row a lost stream is reopened (with backoff) before giving up.")
@click.option("--timeout", default=5.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Network sources: seconds without data that count as a lost stream.")
@click.option("--allow-center-crop", is_flag=True, help="Classify the frame centre when no face is found.")
@click.option("--threads", type=POSITIVE, help="CPU threads of the model's runtime [default: its own].")
@click.option("--status-every", default=10.0, show_default=True, type=FiniteFloat(min=0, min_open=True),
              help="Seconds between status lines when stderr is not a terminal.")
def live(source, model_path, backend, device, hop, fast, audio, audio_format, jsonl, csv_path, overlay, max_latency,
         queue, reconnect, timeout, allow_center_crop, threads, status_every) -> None:
    """An emotion every --hop seconds from a live SOURCE: a file (played at its own rate), /dev/videoN with --audio,
    or a URL FFmpeg opens (rtsp, rtp, udp, http(s), srt). A summary of latency and drops at the end or on Ctrl-C."""
    from .engines.live import LiveOptions, run_live

    outs = Outputs([source, model_path])
    outs.file(jsonl, "--jsonl", text=True).file(csv_path, "--csv", text=True).file(overlay, "--overlay").check()
    run_live(LiveOptions(source, model_path, backend, device, hop, fast, audio, audio_format, jsonl, csv_path,
                         overlay, max_latency, queue, reconnect, timeout, allow_center_crop, threads, status_every))


def _echo_err(message: str) -> None:
    click.echo(shown(message), err=True)


# ------------------------------------------------------------------------------------------------ demo
def _demo_actors(ctx, param, value):
    """The demo trains fold 1 of 4 (or 3) equal folds of consecutive actors, honest protocol."""
    if not (3 <= value <= 24 and (value % 4 == 0 or value % 3 == 0)):
        raise click.BadParameter(f"{value}: the demo cuts the actors into 3 or 4 equal folds (train, validation, "
                                 "test), so give a multiple of 3 or 4 between 3 and 24 (at least 3)")
    return value


@main.command()
@click.argument("out", type=click.Path(file_okay=False), default="demo_out")
@click.option("--actors", default=8, show_default=True, type=int, callback=_demo_actors,
              help="Synthetic actors: a multiple of 3 or 4, 3..24.")
@click.option("--epochs", default=10, show_default=True, type=POSITIVE)
@click.option("--config", "config_name", default="cfn-sr-tiny", show_default=True, callback=_config_name)
def demo(out, actors, epochs, config_name) -> None:
    """The main job end to end on synthetic RAVDESS: data, training, export fp32/fp16/int8, validate, bench, predict."""
    from .demo import run_demo

    Outputs().folder(out, "OUT").check()
    run_demo(Path(out), actors, epochs, config_name)
