import os
from pathlib import Path

import pytest

# Two cores on CI: keep torch from oversubscribing when tests run in parallel.
os.environ.setdefault("OMP_NUM_THREADS", "2")


def pytest_addoption(parser):
    parser.addoption("--slow", action="store_true", help="also run tests marked slow (paper-size model)")
    parser.addoption("--registry", action="store_true",
                     help="also run tests marked registry (pip resolves each target platform against the registry)")


def pytest_collection_modifyitems(config, items):
    import importlib.util

    has_cuda = False
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:
        pass
    has_trt = importlib.util.find_spec("tensorrt") is not None
    for item in items:
        if "registry" in item.keywords and not config.getoption("--registry"):
            item.add_marker(pytest.mark.skip(reason="asks the package registry: run with --registry"))
        if "slow" in item.keywords and not config.getoption("--slow"):
            item.add_marker(pytest.mark.skip(reason="paper-size model: run with --slow"))
        if "gpu" in item.keywords and not has_cuda:
            item.add_marker(pytest.mark.skip(reason="needs a CUDA GPU (none visible)"))
        if "tensorrt" in item.keywords and not (has_trt and has_cuda):
            item.add_marker(pytest.mark.skip(reason="needs TensorRT and an NVIDIA GPU (tensorrt does not import here)"))


@pytest.fixture(scope="session")
def tiny_config():
    from cfnsr.model import get_config

    return get_config("cfn-sr-tiny")


@pytest.fixture
def tiny_model(tiny_config):
    import torch

    from cfnsr.model import create_model

    torch.manual_seed(0)
    return create_model(tiny_config).eval()


@pytest.fixture
def tiny_inputs(tiny_config):
    import torch

    from cfnsr.model.summary import example_inputs

    return example_inputs(tiny_config, batch=3, generator=torch.Generator().manual_seed(1))


# ------------------------------------------------------------------------ synthetic RAVDESS, shared by the suite
SYNTH_ACTORS = 8


@pytest.fixture(scope="session")
def synth_raw(tmp_path_factory):
    """A synthetic RAVDESS folder (8 actors x 60 clips), made once per test session."""
    from cfnsr.data.synth import generate

    return generate(tmp_path_factory.mktemp("ravdess"), actors=SYNTH_ACTORS, seed=0, workers=2, progress=False)


@pytest.fixture(scope="session")
def tiny_cache(synth_raw, tmp_path_factory):
    """The feature cache of ``synth_raw`` at the tiny configuration's input size."""
    from cfnsr.data.cache import FeatureCache, preprocess
    from cfnsr.data.spec import PreprocessSpec
    from cfnsr.model import get_config

    out = tmp_path_factory.mktemp("cache")
    spec = PreprocessSpec.for_model(get_config("cfn-sr-tiny"))
    preprocess(synth_raw, out, spec, workers=2, progress=False, log=lambda *a: None)
    return FeatureCache.open(out)


@pytest.fixture(scope="session")
def trained_tiny(tiny_cache, tmp_path_factory):
    """cfn-sr-tiny trained 10 epochs on the synthetic cache (honest protocol, 4 folds, fold 1): its best.pt."""
    from cfnsr.model import get_config
    from cfnsr.train.trainer import TrainConfig, train_fold

    run = tmp_path_factory.mktemp("run")
    tc = TrainConfig(epochs=10, folds=4, protocol="honest", workers=0, seed=1234)
    train_fold(tiny_cache, get_config("cfn-sr-tiny"), run, 1, tc, progress=False)
    return run / "fold1" / "best.pt"

@pytest.fixture(scope="session")
def export_dir(tmp_path_factory):
    return tmp_path_factory.mktemp("export")


@pytest.fixture(scope="session")
def fp32_onnx(trained_tiny, export_dir):
    from cfnsr.export.pipeline import ExportOptions, export

    return export(trained_tiny, ExportOptions("fp32", export_dir / "m.fp32.onnx", fmt="onnx", progress=False),
                  log=lambda *a: None)


@pytest.fixture(scope="session")
def int8_onnx(trained_tiny, tiny_cache, export_dir):
    from cfnsr.export.pipeline import ExportOptions, export

    opts = ExportOptions("int8", export_dir / "m.int8.onnx", fmt="onnx", data=tiny_cache.root, calib_clips=48,
                         calib_method="percentile", progress=False)
    return export(trained_tiny, opts, log=lambda *a: None)


@pytest.fixture(scope="session")
def tiny_pt2(trained_tiny, tiny_cache, export_dir):
    """The trained tiny model as an AOTInductor package for CPU (batch 1..8), gated on the held-out actors."""
    from cfnsr.export.pipeline import ExportOptions, export

    opts = ExportOptions("fp32", export_dir / "m.fp32.pt2", fmt="pt2", data=tiny_cache.root, max_batch=8,
                         progress=False)
    return export(trained_tiny, opts, log=lambda *a: None)


@pytest.fixture
def video_without_audio(tmp_path):
    """An mp4 with a video track and no audio track."""
    import av
    import numpy as np

    path = tmp_path / "silent.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 64, 64, "yuv420p"
        for _ in range(10):
            for packet in stream.encode(av.VideoFrame.from_ndarray(np.zeros((64, 64, 3), np.uint8), format="rgb24")):
                out.mux(packet)
        for packet in stream.encode():
            out.mux(packet)
    return path


@pytest.fixture(scope="session")
def media_onnx(trained_tiny, tiny_cache, export_dir):
    """The trained tiny model as a media artifact (uint8 crops + PCM in, the front end in the graph), fp32."""
    from cfnsr.export.pipeline import ExportOptions, export

    return export(trained_tiny, ExportOptions("fp32", export_dir / "m.media.fp32.onnx", fmt="onnx",
                                              data=tiny_cache.root, inputs="media", progress=False),
                  log=lambda *a: None)


@pytest.fixture(scope="session")
def media_pt2(trained_tiny, export_dir):
    """The trained tiny model as a media AOTInductor package for CPU, batch 1..2 (its gate runs 4 clips through it
    in batches of 2)."""
    from cfnsr.export.pipeline import ExportOptions, export

    return export(trained_tiny, ExportOptions("fp32", export_dir / "m.media.fp32.pt2", fmt="pt2", inputs="media",
                                              max_batch=2, progress=False), log=lambda *a: None)


@pytest.fixture(scope="session")
def speech_wav(tmp_path_factory):
    """Real speech (espeak-ng, RAVDESS's first sentence) as a 22.05 kHz wav; skipped where espeak-ng is missing."""
    import shutil
    import subprocess

    if shutil.which("espeak-ng") is None:
        if os.environ.get("CFNSR_REQUIRE_CPP") == "1":
            pytest.fail("espeak-ng is not installed (scripts/setup.sh installs it)")
        pytest.skip("espeak-ng is not installed (apt install espeak-ng)")
    path = tmp_path_factory.mktemp("speech") / "speech.wav"
    subprocess.run(["espeak-ng", "-s", "150", "-w", str(path), "Kids are talking by the door"], check=True)
    return path


@pytest.fixture(scope="session")
def face_clip(speech_wav, tmp_path_factory):
    """Real media: a slow pan over a photograph of a face (matplotlib's grace_hopper.jpg) with real speech
    (espeak-ng), H.264 + stereo AAC at 48 kHz in an mp4, 3.2 s."""
    import cv2
    import matplotlib
    import numpy as np

    from cfnsr.data.features import decode_audio, resample
    from cfnsr.data.synth import write_clip

    photo = cv2.imread(str(Path(matplotlib.get_data_path()) / "sample_data" / "grace_hopper.jpg"))
    assert photo is not None, "matplotlib's sample photograph grace_hopper.jpg is missing"
    photo = photo[..., ::-1]
    speech, rate = decode_audio(speech_wav)
    mono = np.concatenate([np.zeros(19200), resample(speech, rate, 48000), np.zeros(28800)])
    stereo = np.stack([mono, 0.8 * np.roll(mono, 24)]).astype(np.float32)  # two different channels
    frames = []
    for t in range(int(len(mono) / 48000 * 30)):
        y, x = 40 + int(20 * np.sin(t / 15)), 30 + t % 30
        frames.append(np.ascontiguousarray(photo[y:y + 480, x:x + 448]))
    path = tmp_path_factory.mktemp("face") / "hopper.mp4"
    write_clip(path, frames, stereo, rate=48000)
    return path


@pytest.fixture(scope="session")
def long_clip(synth_raw, tmp_path_factory):
    """About 10.5 s for the live-stream tests: a clip, 3.5 s with no face in the picture and silence, another clip
    (H.264 + AAC in an mp4)."""
    import numpy as np

    from cfnsr.data.features import decode_audio, decode_frames
    from cfnsr.data.synth import write_clip

    frames, audio = [], []
    for i, clip in enumerate(["Actor_01/01-01-05-02-01-01-01.mp4", "Actor_01/01-01-03-02-01-01-01.mp4"]):
        got, total = decode_frames(synth_raw / clip, set(range(10_000)))
        pcm, rate = decode_audio(synth_raw / clip)
        frames += [got[k] for k in range(total)]
        audio.append(pcm[:int(total / 30 * rate)])
        if i == 0:
            frames += [np.full_like(got[0], 60)] * 105
            audio.append(np.zeros(int(3.5 * rate), np.float32))
    path = tmp_path_factory.mktemp("live") / "long.mp4"
    write_clip(path, frames, np.concatenate(audio), rate=rate)
    return path
