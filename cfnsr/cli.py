"""The ``cfnsr`` command. Each command imports what it needs when it runs, so ``cfnsr --help`` stays light."""

from __future__ import annotations

import json
from pathlib import Path

import click

from . import __version__
from .errors import CfnsrError


class Group(click.Group):
    """Turns CfnsrError into a one-line message and its exit code, not a traceback."""

    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except CfnsrError as e:
            click.secho(f"error: {e}", fg="red", err=True)
            ctx.exit(e.exit_code)


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
    from .sysinfo import as_dicts, machine, probe_backends

    backends = probe_backends()
    if as_json:
        click.echo(json.dumps({"cfnsr": __version__, "machine": machine(), "backends": as_dicts(backends)}, indent=2))
        return
    m = machine()
    click.echo(f"cfnsr {__version__}  python {m['python']}  {m['machine']}  {m['processor']} ({m['cpu_count']} CPUs)")
    if "gpu" in m:
        click.echo(f"GPU: {m['gpu']} (CUDA {m['cuda']})")
    click.echo("backends:")
    for b in backends:
        mark = click.style("yes", fg="green") if b.usable else click.style("no ", fg="yellow")
        click.echo(f"  {b.name:<12} {mark}  {b.detail}")


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
    elif Path(model).exists():
        net = load_model(model)
    else:
        raise CfnsrError(f"{model!r} is neither a configuration ({', '.join(list_configs())}) nor an existing file")
    s = summarize(net, count_flops=not no_flops)
    click.echo(json.dumps(s, indent=2) if as_json else format_summary(s))


# ------------------------------------------------------------------------------------------ import-original
@main.command("import-original")
@click.option("--fused", type=click.Path(dir_okay=False), help="Published fused checkpoint (fold_N_msaf_ravdess_best.pth).")
@click.option("--video", type=click.Path(dir_okay=False), help="Published unimodal ResNeXt checkpoint (fold_N_resnext50_best.pth).")
@click.option("--audio", type=click.Path(dir_okay=False), help="Published unimodal MFCCNet checkpoint (fold_N_mfccNet_best.pth).")
@click.option("--config", "config_name", default="cfn-sr", show_default=True, help="Model configuration.")
@click.option("-o", "--output", required=True, type=click.Path(dir_okay=False), help="cfnsr checkpoint to write.")
@click.option("--force", is_flag=True, help="Overwrite an existing output file.")
def import_original(fused, video, audio, config_name, output, force) -> None:
    """Convert checkpoints of the published CFN-SR/MSAF code into a cfnsr checkpoint.

    The result records MSAF-compatible preprocessing (--msaf-compat cropping, BGR channel order), which is what
    the published weights were trained on.
    """
    from .data.spec import PreprocessSpec
    from .fileio import check_writable
    from .model import get_config, save_checkpoint
    from .model.original import from_original_fused, from_original_unimodal

    if bool(fused) == bool(video or audio):
        raise click.UsageError("give either --fused, or both --video and --audio")
    if not fused and not (video and audio):
        raise click.UsageError("--video and --audio go together")
    check_writable(output, force)
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
@click.option("--actors", default=8, show_default=True, help="Number of actors (1-24), 60 speech clips each.")
@click.option("--seed", default=0, show_default=True)
@click.option("--workers", default=2, show_default=True, help="Parallel processes.")
@click.option("--force", is_flag=True, help="Write into a folder that already has clips.")
def synth_ravdess(out, actors, seed, workers, force) -> None:
    """Write a synthetic data set in RAVDESS's exact layout (mp4 clips with audio, landmark CSVs)."""
    from .data.synth import generate

    if any(Path(out).glob("Actor_*/*.mp4")) and not force:
        raise CfnsrError(f"{out} already holds clips; pass --force to overwrite them")
    generate(out, actors=actors, seed=seed, workers=workers)
    click.echo(f"wrote {actors * 60} clips of {actors} actors to {out}")


@main.command()
@click.argument("raw_dir", type=click.Path(file_okay=False))
@click.option("-o", "--output", "cache_dir", required=True, type=click.Path(file_okay=False),
              help="Feature cache folder (created; an unfinished one is continued).")
@click.option("--config", "config_name", default="cfn-sr", show_default=True,
              help="Model configuration whose input size the features take (frames, face size).")
@click.option("--msaf-compat", is_flag=True,
              help="Crop faces from the frame squashed to the face size first, as MSAF did (for published checkpoints).")
@click.option("--channel-order", type=click.Choice(["bgr", "rgb"]), default="bgr", show_default=True,
              help="Channel order the model sees; MSAF/CFN-SR checkpoints were trained on BGR.")
@click.option("--song", is_flag=True, help="Also take the song clips (speech only by default).")
@click.option("--no-detector", is_flag=True, help="Without a landmark file, centre-crop instead of detecting the face.")
@click.option("--workers", default=2, show_default=True, help="Parallel processes.")
def preprocess(raw_dir, cache_dir, config_name, msaf_compat, channel_order, song, no_detector, workers) -> None:
    """Decode RAVDESS clips into a feature cache (face crops + MFCC). Resumable; bad clips are reported and skipped."""
    from .data.cache import format_summary, preprocess as run
    from .data.spec import PreprocessSpec
    from .model import get_config

    spec = PreprocessSpec.for_model(get_config(config_name), msaf_compat=msaf_compat, channel_order=channel_order)
    manifest = run(raw_dir, cache_dir, spec, workers=workers, include_song=song, use_detector=not no_detector,
                   log=click.echo)
    click.echo(format_summary(manifest))
