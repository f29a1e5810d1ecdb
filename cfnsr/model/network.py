"""CFN-SR: 3D ResNeXt video branch + MFCC 1D-CNN audio branch + self-attention/residual cross-modal fusion.

Read top to bottom: the video branch, the audio branch, the transformer over the audio sequence, the cross-modal
spatial attention, and the network that ties them together. Behaviour follows the published code
(skeletonNN/CFN-SR) with one deliberate deviation, marked where it happens: the spatial attention is computed per
sample instead of being summed over the batch.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import ModelConfig

# A large finite negative for the causal mask: representable in fp16, so exported graphs carry no -inf.
MASK_VALUE = -30000.0


# --------------------------------------------------------------------------------------------------- video branch
class Bottleneck(nn.Module):
    """ResNeXt bottleneck (expansion 2): 1x1x1 -> grouped 3x3x3 -> 1x1x1, shortcut B (projection when needed)."""

    expansion = 2

    def __init__(self, inplanes: int, planes: int, cardinality: int, stride: int = 1):
        super().__init__()
        mid = cardinality * (planes // 32)
        out = planes * self.expansion
        self.conv1 = nn.Conv3d(inplanes, mid, 1, bias=False)
        self.bn1 = nn.BatchNorm3d(mid)
        self.conv2 = nn.Conv3d(mid, mid, 3, stride=stride, padding=1, groups=cardinality, bias=False)
        self.bn2 = nn.BatchNorm3d(mid)
        self.conv3 = nn.Conv3d(mid, out, 1, bias=False)
        self.bn3 = nn.BatchNorm3d(out)
        self.downsample = None
        if stride != 1 or inplanes != out:
            self.downsample = nn.Sequential(nn.Conv3d(inplanes, out, 1, stride=stride, bias=False), nn.BatchNorm3d(out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.relu(self.bn1(self.conv1(x)))
        y = F.relu(self.bn2(self.conv2(y)))
        y = self.bn3(self.conv3(y))
        shortcut = x if self.downsample is None else self.downsample(x)
        return F.relu(y + shortcut)


class VideoBranch(nn.Module):
    """3D ResNeXt up to layer4: (B, 3, T, H, W) -> (B, 2*planes[3], T', H', W')."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.stem_relu = cfg.stem_relu
        self.conv1 = nn.Conv3d(3, cfg.stem_channels, 7, stride=(1, 2, 2), padding=3, bias=False)
        self.bn1 = nn.BatchNorm3d(cfg.stem_channels)
        self.maxpool = nn.MaxPool3d(3, stride=2, padding=1)
        inplanes = cfg.stem_channels
        stages = []
        for i, (planes, blocks) in enumerate(zip(cfg.planes, cfg.layers)):
            stride = 1 if i == 0 else 2
            stage = [Bottleneck(inplanes, planes, cfg.cardinality, stride)]
            inplanes = planes * Bottleneck.expansion
            stage += [Bottleneck(inplanes, planes, cfg.cardinality) for _ in range(1, blocks)]
            stages.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(self.conv1(x))
        if self.stem_relu:
            x = F.relu(x)
        x = self.maxpool(x)
        return self.layer4(self.layer3(self.layer2(self.layer1(x))))


# --------------------------------------------------------------------------------------------------- audio branch
class AudioBranch(nn.Module):
    """MFCCNet up to bn3: (B, 13, 212) -> (B, 64, 26). Order conv -> ReLU -> BN, as published."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        c1, c2, c3 = cfg.audio_channels
        self.conv1 = nn.Conv1d(cfg.mfcc_bins, c1, 7, padding=2)
        self.bn1 = nn.BatchNorm1d(c1)
        self.conv2 = nn.Conv1d(c1, c2, 7, padding=2)
        self.maxpool = nn.MaxPool1d(8)
        self.bn2 = nn.BatchNorm1d(c2)
        self.dropout1 = nn.Dropout(cfg.audio_dropout1)
        self.conv3 = nn.Conv1d(c2, c3, 5, padding=2)
        self.bn3 = nn.BatchNorm1d(c3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn1(F.relu(self.conv1(x)))
        x = self.bn2(self.maxpool(F.relu(self.conv2(x))))
        x = self.dropout1(x)
        return self.bn3(F.relu(self.conv3(x)))


# ------------------------------------------------------------------------------------ transformer (audio sequence)
class SelfAttention(nn.Module):
    """Multi-head self-attention with fairseq's parameter layout (packed ``in_proj_weight``/``in_proj_bias``)."""

    def __init__(self, dim: int, heads: int, dropout: float):
        super().__init__()
        if dim % heads:
            raise ValueError(f"embed_dim {dim} is not divisible by num_heads {heads}")
        self.heads, self.head_dim, self.dropout = heads, dim // heads, dropout
        self.in_proj_weight = nn.Parameter(torch.empty(3 * dim, dim))
        self.in_proj_bias = nn.Parameter(torch.zeros(3 * dim))
        self.out_proj = nn.Linear(dim, dim)
        nn.init.xavier_uniform_(self.in_proj_weight)
        nn.init.xavier_uniform_(self.out_proj.weight)
        nn.init.zeros_(self.out_proj.bias)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        # x: (B, L, D), batch first inside cfnsr; mask: (L, L) additive.
        b, n, d = x.shape
        q, k, v = F.linear(x, self.in_proj_weight, self.in_proj_bias).chunk(3, dim=-1)
        q, k, v = (t.reshape(b, n, self.heads, self.head_dim).transpose(1, 2) for t in (q, k, v))
        scores = (q * self.head_dim**-0.5) @ k.transpose(-2, -1) + mask
        weights = F.dropout(scores.softmax(dim=-1), self.dropout, self.training)
        out = (weights @ v).transpose(1, 2).reshape(b, n, d)
        return self.out_proj(out)


class EncoderLayer(nn.Module):
    """Pre-norm layer: x + attn(LN(x)); x + fc2(relu(fc1(LN(x))))."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.self_attn = SelfAttention(cfg.embed_dim, cfg.num_heads, cfg.attn_dropout)
        self.fc1 = nn.Linear(cfg.embed_dim, cfg.ffn_dim)
        self.fc2 = nn.Linear(cfg.ffn_dim, cfg.embed_dim)
        for fc in (self.fc1, self.fc2):
            nn.init.xavier_uniform_(fc.weight)
            nn.init.zeros_(fc.bias)
        self.layer_norms = nn.ModuleList([nn.LayerNorm(cfg.embed_dim) for _ in range(2)])
        self.relu_dropout, self.res_dropout = cfg.relu_dropout, cfg.res_dropout

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        y = self.self_attn(self.layer_norms[0](x), mask)
        x = x + F.dropout(y, self.res_dropout, self.training)
        y = F.dropout(F.relu(self.fc1(self.layer_norms[1](x))), self.relu_dropout, self.training)
        return x + F.dropout(self.fc2(y), self.res_dropout, self.training)


def sinusoidal_table(length: int, dim: int) -> torch.Tensor:
    """fairseq's sinusoidal table with ``length + 1`` rows; row 0 (the padding position) is zeros."""
    half = dim // 2
    freq = torch.exp(torch.arange(half, dtype=torch.float64) * -(math.log(10000) / (half - 1)))
    angles = torch.arange(length + 1, dtype=torch.float64)[:, None] * freq[None, :]
    table = torch.cat([angles.sin(), angles.cos()], dim=1)
    if dim % 2:
        table = torch.cat([table, torch.zeros(length + 1, 1, dtype=torch.float64)], dim=1)
    table[0] = 0
    return table.float()


class AudioTransformer(nn.Module):
    """Causal pre-norm transformer over the audio feature sequence; returns (B, L, D) after the final LayerNorm.

    Positions follow fairseq: step t gets position t+1, except that a step whose first feature channel is exactly 0
    counts as padding and gets the all-zero position 0 (the published code inherits this).
    """

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        n = cfg.audio_length
        self.embed_scale = math.sqrt(cfg.embed_dim)
        self.embed_dropout = cfg.embed_dropout
        self.layers = nn.ModuleList([EncoderLayer(cfg) for _ in range(cfg.transformer_layers)])
        self.layer_norm = nn.LayerNorm(cfg.embed_dim)
        self.register_buffer("positions_table", sinusoidal_table(n, cfg.embed_dim), persistent=False)
        self.register_buffer("steps", torch.arange(1, n + 1), persistent=False)
        self.register_buffer("causal_mask", torch.full((n, n), MASK_VALUE).triu(1), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        positions = torch.where(x[:, :, 0] != 0, self.steps, torch.zeros_like(self.steps))
        x = self.embed_scale * x + self.positions_table[positions]
        x = F.dropout(x, self.embed_dropout, self.training)
        for layer in self.layers:
            x = layer(x, self.causal_mask)
        return self.layer_norm(x)


# ------------------------------------------------------------------------------------------------------- fusion
class CrossModalAttention(nn.Module):
    """The audio summary attends over the video feature map: softmax over the H'xW' positions of each time slice,
    then ``x * a + x`` (residual)."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        k = cfg.embed_dim
        self.audio_attention = AudioTransformer(cfg)
        self.channel_affine = nn.Linear(cfg.video_features, k)
        self.y_affine = nn.Linear(cfg.embed_dim, k, bias=False)
        self.attn_weight_affine = nn.Linear(k, 1)

    def attention_map(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        """(B, C, T', H', W') video map, (B, C_a, L) audio features -> (B, T', H', W') attention weights."""
        summary = self.audio_attention(audio.transpose(1, 2))[:, -1]  # last time step, (B, D)
        y_k = self.y_affine(summary)[:, None, None, None, :]
        x_k = torch.tanh(self.channel_affine(video.permute(0, 2, 3, 4, 1)) + y_k)
        logits = self.attn_weight_affine(x_k).squeeze(-1)  # (B, T', H', W')
        b, t, h, w = logits.shape
        return logits.reshape(b, t, h * w).softmax(dim=-1).reshape(b, t, h, w)

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        # Deviation from the published code, on purpose: there the maps of all samples in the batch were summed
        # and applied to every sample, so a prediction depended on its batch-mates. Here each sample uses its own.
        a = self.attention_map(video, audio)[:, None]
        return video * a + video


class CFNSR(nn.Module):
    """``forward(video (B,3,T,H,W), audio (B,13,212)) -> logits (B, num_classes)``."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.video = VideoBranch(cfg)
        self.audio = AudioBranch(cfg)
        self.fusion = CrossModalAttention(cfg)
        self.audio_dropout = nn.Dropout(cfg.audio_dropout2)
        self.fc = nn.Linear(cfg.video_features + cfg.audio_features, cfg.num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv3d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")

    def forward(self, video: torch.Tensor, audio: torch.Tensor) -> torch.Tensor:
        v = self.video(video)
        a = self.audio(audio)
        v = self.fusion(v, a)
        # Equal to the published AvgPool3d((2, 7, 7)) at paper size, and valid for any video map.
        v = v.mean(dim=(2, 3, 4))
        a = self.audio_dropout(a.flatten(1))  # the *unattended* audio features
        return self.fc(torch.cat([v, a], dim=1))


def create_model(cfg: ModelConfig | str, **overrides) -> CFNSR:
    """Build a freshly initialised network from a config or a configuration name."""
    from .config import get_config

    if isinstance(cfg, str):
        cfg = get_config(cfg, **overrides)
    elif overrides:
        cfg = cfg.replace(**overrides)
    return CFNSR(cfg)
