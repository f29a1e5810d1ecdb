"""The media front end: librosa's MFCC in the graph, exact; media artifacts agree with features artifacts."""

import numpy as np
import onnx
import pytest
import soundfile
import torch

from cfnsr.data.features import audio_segment, mfcc_features, read_audio, resample
from cfnsr.data.spec import PreprocessSpec
from cfnsr.export import readiness
from cfnsr.export.frontend import FrontEnd, frontend_nodes

SPEC = PreprocessSpec()  # 44.1 kHz, 2.45 s from 0.5 s, 13 MFCC x 212 (MSAF's)


def _in_graph_mfcc(audio: np.ndarray) -> np.ndarray:
    seg, _ = audio_segment(audio, SPEC)
    with torch.no_grad():
        return FrontEnd(SPEC).mfcc(torch.from_numpy(seg[None]))[0].numpy()


def test_in_graph_mfcc_matches_librosa_on_synthetic_clips(synth_raw):
    clips = sorted(synth_raw.rglob("*.mp4"))[::97][:5]
    for clip in clips:
        audio = read_audio(clip, SPEC.sample_rate)
        ref, _ = mfcc_features(audio, SPEC)
        got = _in_graph_mfcc(audio)
        assert np.abs(got - ref).max() <= 1e-3, clip.name


def test_in_graph_mfcc_matches_librosa_on_real_speech(speech_wav):
    audio, rate = soundfile.read(speech_wav, dtype="float32")
    audio = resample(np.concatenate([np.zeros(rate // 2, np.float32), audio]), rate, SPEC.sample_rate)
    ref, padded = mfcc_features(audio, SPEC)
    assert not np.allclose(ref, ref[:, :1])  # speech, not silence
    assert np.abs(_in_graph_mfcc(audio) - ref).max() <= 1e-3


def test_media_graph_is_fp32_front_end_plus_network_and_tensorrt_ready(media_onnx):
    g = onnx.load(media_onnx.path)
    assert [i.name for i in g.graph.input] == ["frames", "pcm"]
    assert g.graph.input[0].type.tensor_type.elem_type == onnx.TensorProto.UINT8
    fe = frontend_nodes(g)
    ops = {n.op_type for n in g.graph.node if n.name in fe}
    assert {"Conv", "MatMul", "Log", "ReduceMax"} <= ops  # STFT as Conv, mel and DCT as MatMul, power_to_db
    assert readiness.check(g).ok and media_onnx.report["media"]["composition_max_abs_logit"] == 0.0
    from cfnsr.artifact import read_metadata

    assert read_metadata(media_onnx.path)["input_kind"] == "media"


@pytest.mark.parametrize("precision", ["fp16", "int8"])
def test_reduced_precision_media_graphs_keep_the_front_end_fp32(precision, trained_tiny, tiny_cache, tmp_path):
    from cfnsr.export.pipeline import ExportOptions, export

    extra = {"calib_clips": 16} if precision == "int8" else {}
    res = export(trained_tiny, ExportOptions(precision, tmp_path / f"m.{precision}.onnx", fmt="onnx",
                                             data=tiny_cache.root, inputs="media", progress=False, **extra),
                 log=lambda *a: None)
    assert res.passed and res.report["tensorrt_readiness"]["ok"]
    g = onnx.shape_inference.infer_shapes(onnx.load(res.path))
    types = {v.name: v.type.tensor_type.elem_type for v in g.graph.value_info}
    fe = frontend_nodes(g)
    for n in g.graph.node:
        if n.name in fe:
            assert n.op_type not in ("QuantizeLinear", "DequantizeLinear"), n.name
            for t in n.output:
                if t in types:
                    assert types[t] in (onnx.TensorProto.FLOAT, onnx.TensorProto.INT64, onnx.TensorProto.BOOL), n.name
    assert not readiness.fusion_lint(g).problems


def test_validate_checks_a_media_artifact_on_the_clips_audio(media_onnx, trained_tiny, tiny_cache, tmp_path):
    """validate feeds a media artifact the cached crops and each clip's raw audio; the torch reference gets the
    cached features: the fp32 gate (100% agreement, |dlogit| <= 1e-3) holds through the in-graph front end."""
    import json
    import shutil

    from click.testing import CliRunner

    from cfnsr.cli import main

    out = tmp_path / "v.json"
    res = CliRunner().invoke(main, ["validate", str(media_onnx.path), "--reference", str(trained_tiny), "--data",
                                    str(tiny_cache.root), "--clips", "12", "--json", str(out)])
    assert res.exit_code == 0, res.output
    v = json.loads(out.read_text())
    assert v["passed"] and v["agreement"] == 1.0 and v["max_abs_logit"] <= 1e-3
    # Without the raw clips there is no audio to check the front end on: said, not guessed.
    moved = tmp_path / "cache"
    shutil.copytree(tiny_cache.root, moved, ignore=shutil.ignore_patterns("frames"), symlinks=True)
    (moved / "frames").symlink_to(tiny_cache.root / "frames")
    m = json.loads((moved / "manifest.json").read_text())
    m["raw_dir"] = str(tmp_path / "gone")
    (moved / "manifest.json").write_text(json.dumps(m))
    res = CliRunner().invoke(main, ["validate", str(media_onnx.path), "--reference", str(trained_tiny), "--data",
                                    str(moved), "--clips", "2"])
    assert res.exit_code == 1 and "the RAVDESS folder the cache was made from must be present" in res.output
