"""The media front end an exported file can carry (``cfnsr export --inputs media``): uint8 face crops and float32
PCM in, logits out, so a C++ or TensorRT application needs no signal processing.

In the graph, always fp32 and never quantized:

* frames ``(B, T, S, S, 3)`` uint8 RGB -> /255, the spec's channel order (a Gather), ImageNet mean/std, the layout
  transpose to ``(B, 3, T, S, S)``;
* pcm ``(B, N)`` float32 mono at the spec's rate, already cut to its offset and duration -> librosa's MFCC with the
  spec's parameters: the centred STFT as a strided Conv1d with a fixed Hann-windowed DFT basis (TensorRT parses no
  STFT/DFT op), the power spectrum, the Slaney mel filterbank as a MatMul, ``power_to_db`` (amin 1e-10, ref 1,
  top_db 80 below each clip's maximum), and DCT-II (ortho) as a MatMul.

Measured against ``librosa.feature.mfcc`` (tests/export/test_frontend.py): within 1e-3 (dB-scaled MFCC units) on
synthetic clips and on real speech.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
import torch
from torch import nn

from ..artifact import MEDIA_INPUT_NAMES
from ..data.spec import PreprocessSpec
from .onnx_graph import OPSET, attribute, producers, reachable_from, torch_to_onnx

FRONTEND_PREFIX = "frontend."  # buffers (initializers) of the front end: the quantizer and fp16 converter skip them
N_MELS = 128
TOP_DB = 80.0
AMIN = 1e-10


def pcm_samples(spec: PreprocessSpec) -> int:
    """Samples of the ``pcm`` input: the spec's duration at its rate."""
    return int(round(spec.audio_duration * spec.sample_rate))


def mfcc_matrices(spec: PreprocessSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(DFT basis (2*(n_fft/2+1), n_fft), mel filterbank (n_mels, n_fft/2+1), DCT-II ortho (n_mfcc, n_mels)), as
    librosa computes them (its own window and mel functions, so the two agree by construction)."""
    import librosa
    import scipy.fft

    n = spec.n_fft
    window = librosa.filters.get_window("hann", n, fftbins=True).astype(np.float64)
    k = np.arange(n // 2 + 1)[:, None]
    angle = 2 * np.pi * k * np.arange(n)[None, :] / n
    basis = np.concatenate([np.cos(angle) * window, -np.sin(angle) * window]).astype(np.float32)
    mel = librosa.filters.mel(sr=spec.sample_rate, n_fft=n, n_mels=N_MELS).astype(np.float32)
    dct = scipy.fft.dct(np.eye(N_MELS), type=2, norm="ortho", axis=0)[: spec.n_mfcc].astype(np.float32)
    return basis, mel, dct


class FrontEnd(nn.Module):
    """frames (B,T,S,S,3) uint8 + pcm (B,N) float32 -> the model's (video (B,3,T,S,S), audio (B,n_mfcc,frames))."""

    def __init__(self, spec: PreprocessSpec):
        super().__init__()
        self.spec = spec
        basis, mel, dct = mfcc_matrices(spec)
        self.register_buffer("stft_basis", torch.from_numpy(basis)[:, None, :])
        self.register_buffer("mel", torch.from_numpy(mel))
        self.register_buffer("dct", torch.from_numpy(dct))
        order = [2, 1, 0] if spec.channel_order == "bgr" else [0, 1, 2]
        self.register_buffer("channels", torch.tensor(order, dtype=torch.long))
        self.register_buffer("mean", torch.tensor(spec.mean, dtype=torch.float32))
        self.register_buffer("std", torch.tensor(spec.std, dtype=torch.float32))
        self.bins = spec.n_fft // 2 + 1

    def video(self, frames: torch.Tensor) -> torch.Tensor:
        x = frames.to(torch.float32) / 255.0
        x = torch.index_select(x, 4, self.channels)
        x = (x - self.mean) / self.std
        return x.permute(0, 4, 1, 2, 3)

    def mfcc(self, pcm: torch.Tensor) -> torch.Tensor:
        half = self.spec.n_fft // 2
        x = torch.nn.functional.pad(pcm[:, None, :], (half, half))  # librosa's centred, zero-padded frames
        spec = torch.nn.functional.conv1d(x, self.stft_basis, stride=self.spec.hop_length)  # (B, 2*bins, F)
        re, im = spec[:, : self.bins], spec[:, self.bins:]
        power = re * re + im * im
        db = (10.0 / math.log(10.0)) * torch.log(torch.clamp(self.mel @ power, min=AMIN))
        top = db.amax(dim=(1, 2), keepdim=True)
        db = torch.maximum(db, top - TOP_DB)
        return (self.dct @ db)[:, :, : self.spec.mfcc_frames]

    def forward(self, frames: torch.Tensor, pcm: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.video(frames), self.mfcc(pcm)


class MediaModel(nn.Module):
    """CFN-SR with its front end: ``forward(frames uint8 (B,T,S,S,3), pcm float32 (B,N)) -> logits (B, 8)``."""

    def __init__(self, model: nn.Module, spec: PreprocessSpec):
        super().__init__()
        self.frontend = FrontEnd(spec)
        self.model = model
        self.config = model.config

    def forward(self, frames: torch.Tensor, pcm: torch.Tensor) -> torch.Tensor:
        video, audio = self.frontend(frames, pcm)
        return self.model(video, audio)


def media_example_inputs(spec: PreprocessSpec, batch: int, generator: torch.Generator | None = None):
    """Seeded example inputs of a media artifact: random uint8 crops and a speech-like random PCM."""
    g = generator or torch.Generator().manual_seed(0)
    frames = torch.randint(0, 256, (batch, spec.frames, spec.image_size, spec.image_size, 3), generator=g,
                           dtype=torch.uint8)
    pcm = 0.1 * torch.randn(batch, pcm_samples(spec), generator=g)
    return frames, pcm


def frontend_nodes(model) -> set[str]:
    """Names of the ONNX nodes of the front end: downstream of ``frames``/``pcm`` and upstream of the tensors the
    network proper reads (found from the graph: the DCT MatMul's output and the layout transpose's output)."""
    producer = producers(model)
    inits = {i.name for i in model.graph.initializer}
    ends = []
    for n in model.graph.node:
        if n.op_type == "MatMul" and any(i.startswith(FRONTEND_PREFIX + "dct") for i in n.input if i in inits):
            ends.append(n.output[0])
        layout = n.op_type == "Transpose" and list(attribute(n, "perm", [])) == [0, 4, 1, 2, 3]
        if layout and n.name in reachable_from(model, "frames"):
            ends.append(n.output[0])
    upstream, stack = set(), list(ends)
    while stack:
        t = stack.pop()
        node = producer.get(t)
        if node is None or node.name in upstream:
            continue
        upstream.add(node.name)
        stack.extend(node.input)
    downstream = reachable_from(model, "frames") | reachable_from(model, "pcm")
    after = set()
    for end in ends:  # the Slice after the DCT belongs to the front end too
        for n in model.graph.node:
            if end in n.input and n.op_type == "Slice":
                after.add(n.name)
    return (upstream & downstream) | after


def export_frontend_onnx(spec: PreprocessSpec, opset: int) -> onnx.ModelProto:
    """The front end alone as ONNX (``frames``, ``pcm`` -> ``video``, ``audio``), at ``opset``, its initializers
    named ``frontend.*``."""
    front = torch_to_onnx(FrontEnd(spec), media_example_inputs(spec, 2), list(MEDIA_INPUT_NAMES),
                          ["video", "audio"])
    front = onnx.compose.add_prefix(front, FRONTEND_PREFIX, rename_inputs=False, rename_outputs=False)
    if opset != OPSET:
        front = onnx.version_converter.convert_version(front, opset)
    return front


def compose_media(graph: onnx.ModelProto, spec: PreprocessSpec) -> onnx.ModelProto:
    """The media artifact's graph: the front end (fp32, never quantized) feeding ``graph``'s ``video``/``audio``
    inputs. ``graph`` keeps its precision: fp16 and int8 graphs take fp32 inputs, so the front end stays fp32."""
    opset = max(o.version for o in graph.opset_import if o.domain in ("", "ai.onnx"))
    front = export_frontend_onnx(spec, opset)
    front.ir_version = graph.ir_version
    others = {o.domain: o.version for o in graph.opset_import if o.domain not in ("", "ai.onnx")}
    for o in front.opset_import:
        if o.domain in others:
            o.version = others[o.domain]
    merged = onnx.compose.merge_models(front, graph, io_map=[("video", "video"), ("audio", "audio")])
    del merged.metadata_props[:]
    merged = onnx.shape_inference.infer_shapes(merged)
    onnx.checker.check_model(merged)
    return merged


def media_parity(media_path, front: onnx.ModelProto, features_path, spec: PreprocessSpec,
                 batch: int = 2) -> float:
    """Largest |logit| difference between the media artifact and the features graph fed the same front end's
    outputs, on seeded random inputs: the composition changed nothing."""
    import onnxruntime as ort

    frames, pcm = (t.numpy() for t in media_example_inputs(spec, batch))
    opts = ort.SessionOptions()
    opts.log_severity_level = 3
    disabled = ["WeightBiasQuantization"]  # see engines.runners: fp16 Q/DQ graphs
    fe = ort.InferenceSession(front.SerializeToString(), opts, providers=["CPUExecutionProvider"])
    video, audio = fe.run(["video", "audio"], {"frames": frames, "pcm": pcm})
    net = ort.InferenceSession(str(features_path), opts, providers=["CPUExecutionProvider"],
                               disabled_optimizers=disabled)
    media = ort.InferenceSession(str(media_path), opts, providers=["CPUExecutionProvider"],
                                 disabled_optimizers=disabled)
    a = net.run(["logits"], {"video": video, "audio": audio})[0]
    b = media.run(["logits"], {"frames": frames, "pcm": pcm})[0]
    return float(np.abs(a - b).max())
