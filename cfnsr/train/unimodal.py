"""The published recipe's unimodal stages: the video ResNeXt and the audio MFCCNet, each alone with its classifier
(their best weights initialise the fused network's branches; see ``trainer.pretrain_unimodal``)."""

from __future__ import annotations

from torch import nn

from ..model.config import ModelConfig
from ..model.network import AudioBranch, VideoBranch


class VideoOnly(nn.Module):
    """The published unimodal 3D ResNeXt (with the ReLU after its stem) and its classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.video = VideoBranch(cfg.replace(stem_relu=True))
        self.fc = nn.Linear(cfg.video_features, cfg.num_classes)

    def forward(self, video, audio):
        return self.fc(self.video(video).mean(dim=(2, 3, 4)))


class AudioOnly(nn.Module):
    """The published unimodal MFCCNet and its classifier."""

    def __init__(self, cfg: ModelConfig):
        super().__init__()
        self.config = cfg
        self.audio = AudioBranch(cfg)
        self.dropout2 = nn.Dropout(cfg.audio_dropout2)
        self.fc1 = nn.Linear(cfg.audio_features, cfg.num_classes)

    def forward(self, video, audio):
        return self.fc1(self.dropout2(self.audio(audio).flatten(1)))
