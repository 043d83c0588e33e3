"""CAM++ speaker embeddings (3D-Speaker's `campplus_cn_en_common`, 192-dim), with a Kaldi-compatible fbank in torch.

Ours rather than imported: 3D-Speaker is not on PyPI, and its feature code needs torchaudio, whose PyPI build does not
match our CPU torch (nor can pyannote.audio import beside it). The network is the published CAM++ layout, written
small, with module names that match the checkpoint's state dict so it loads strictly.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from pathlib import Path
from typing import cast

import torch
from torch import nn
from torch.nn import functional

SAMPLE_RATE = 16_000
FRAME_LENGTH = 400  # 25 ms
FRAME_SHIFT = 160  # 10 ms
NUM_MEL_BINS = 80
_FFT_SIZE = 512


def _kaldi_mel_banks() -> torch.Tensor:
    """Kaldi's triangular mel filters (20 Hz to Nyquist, mel = 1127 ln(1 + f/700)) as (bins, fft_size/2 + 1)."""

    def mel(hz: torch.Tensor | float) -> torch.Tensor:
        return 1127.0 * torch.log1p(torch.as_tensor(hz, dtype=torch.float64) / 700.0)

    low, high = mel(20.0), mel(SAMPLE_RATE / 2)
    delta = (high - low) / (NUM_MEL_BINS + 1)
    edges = low + delta * torch.arange(NUM_MEL_BINS + 2, dtype=torch.float64)
    left, center, right = edges[:-2, None], edges[1:-1, None], edges[2:, None]
    bins = mel(torch.arange(_FFT_SIZE // 2, dtype=torch.float64) * SAMPLE_RATE / _FFT_SIZE)[None, :]
    up = (bins - left) / (center - left)
    down = (right - bins) / (right - center)
    weights = torch.clamp(torch.minimum(up, down), min=0.0)
    return functional.pad(weights, (0, 1)).float()  # Kaldi leaves the Nyquist bin out


class KaldiFbank(nn.Module):
    """80-bin log-mel fbank as Kaldi computes it: 25 ms Povey window, 10 ms shift, DC removal, pre-emphasis 0.97,
    power spectrum, no dither, snip edges. Input (batch, samples) in any scale; output (batch, frames, 80)."""

    def __init__(self) -> None:
        super().__init__()
        n = torch.arange(FRAME_LENGTH, dtype=torch.float64)
        povey = (0.5 - 0.5 * torch.cos(2 * math.pi * n / (FRAME_LENGTH - 1))) ** 0.85
        self.register_buffer("window", povey.float(), persistent=False)
        self.register_buffer("mel_banks", _kaldi_mel_banks(), persistent=False)

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        frames = waveforms.unfold(-1, FRAME_LENGTH, FRAME_SHIFT)
        frames = frames - frames.mean(dim=-1, keepdim=True)
        previous = torch.cat([frames[..., :1], frames[..., :-1]], dim=-1)
        frames = (frames - 0.97 * previous) * cast(torch.Tensor, self.window)
        power = torch.fft.rfft(frames, n=_FFT_SIZE).abs().pow(2)
        energies = power @ cast(torch.Tensor, self.mel_banks).T
        return torch.log(torch.clamp(energies, min=torch.finfo(torch.float32).eps))


def _bn_relu(channels: int) -> nn.Sequential:
    return nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(channels), relu=nn.ReLU(inplace=True)))


class _ResBlock(nn.Module):
    def __init__(self, channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(channels, channels, 3, stride=(stride, 1), padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)
        self.shortcut = nn.Sequential()
        if stride != 1:
            self.shortcut = nn.Sequential(
                nn.Conv2d(channels, channels, 1, stride=(stride, 1), bias=False), nn.BatchNorm2d(channels)
            )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.bn2(self.conv2(functional.relu(self.bn1(self.conv1(x)))))
        return functional.relu(out + self.shortcut(x))


class _Head(nn.Module):
    """2-D convolutional front end over (frequency, time); folds frequency into channels: 32 x 80/8 = 320."""

    def __init__(self, channels: int = 32) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(1, channels, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(channels)
        self.layer1 = nn.Sequential(_ResBlock(channels, 2), _ResBlock(channels, 1))
        self.layer2 = nn.Sequential(_ResBlock(channels, 2), _ResBlock(channels, 1))
        self.conv2 = nn.Conv2d(channels, channels, 3, stride=(2, 1), padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = functional.relu(self.bn1(self.conv1(x.unsqueeze(1))))
        out = functional.relu(self.bn2(self.conv2(self.layer2(self.layer1(out)))))
        return out.flatten(1, 2)


class _CamLayer(nn.Module):
    """Context-aware masking: a local conv gated by utterance-mean plus 100-frame segment-mean context."""

    def __init__(self, channels: int, out_channels: int, dilation: int) -> None:
        super().__init__()
        self.linear_local = nn.Conv1d(channels, out_channels, 3, padding=dilation, dilation=dilation, bias=False)
        self.linear1 = nn.Conv1d(channels, channels // 2, 1)
        self.relu = nn.ReLU(inplace=True)
        self.linear2 = nn.Conv1d(channels // 2, out_channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        frames = x.shape[-1]
        segments = functional.avg_pool1d(x, kernel_size=100, stride=100, ceil_mode=True)
        context = x.mean(-1, keepdim=True) + segments.repeat_interleave(100, dim=-1)[..., :frames]
        gate = torch.sigmoid(self.linear2(self.relu(self.linear1(context))))
        local: torch.Tensor = self.linear_local(x)
        return local * gate


class _DenseLayer(nn.Module):
    def __init__(self, channels: int, dilation: int) -> None:
        super().__init__()
        self.nonlinear1 = _bn_relu(channels)
        self.linear1 = nn.Conv1d(channels, 128, 1, bias=False)
        self.nonlinear2 = _bn_relu(128)
        self.cam_layer = _CamLayer(128, 32, dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, self.cam_layer(self.nonlinear2(self.linear1(self.nonlinear1(x))))], dim=1)


class _Transit(nn.Module):
    def __init__(self, channels: int) -> None:
        super().__init__()
        self.nonlinear = _bn_relu(channels)
        self.linear = nn.Conv1d(channels, channels // 2, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(self.nonlinear(x))  # type: ignore[no-any-return]


class _Tdnn(nn.Module):
    def __init__(self, channels: int, out_channels: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(channels, out_channels, 5, stride=2, padding=2, bias=False)
        self.nonlinear = _bn_relu(out_channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x))  # type: ignore[no-any-return]


class _StatsPool(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.mean(dim=-1), x.std(dim=-1)], dim=-1)


class _Dense(nn.Module):
    def __init__(self, channels: int, dimension: int) -> None:
        super().__init__()
        self.linear = nn.Conv1d(channels, dimension, 1, bias=False)
        self.nonlinear = nn.Sequential(OrderedDict(batchnorm=nn.BatchNorm1d(dimension, affine=False)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.nonlinear(self.linear(x.unsqueeze(-1)).squeeze(-1))  # type: ignore[no-any-return]


class CamPlusPlus(nn.Module):
    """CAM++: FCM head, TDNN, three densely connected CAM blocks, statistics pooling, 192-dim embedding."""

    def __init__(self, dimension: int = 192) -> None:
        super().__init__()
        self.dimension = dimension
        self.fbank = KaldiFbank()
        self.head = _Head()
        layers: OrderedDict[str, nn.Module] = OrderedDict(tdnn=_Tdnn(320, 128))
        channels = 128
        for index, (num_layers, dilation) in enumerate([(12, 1), (24, 2), (16, 2)], start=1):
            layers[f"block{index}"] = nn.Sequential(
                OrderedDict((f"tdnnd{i + 1}", _DenseLayer(channels + i * 32, dilation)) for i in range(num_layers))
            )
            channels += num_layers * 32
            layers[f"transit{index}"] = _Transit(channels)
            channels //= 2
        layers["out_nonlinear"] = _bn_relu(channels)
        layers["stats"] = _StatsPool()
        layers["dense"] = _Dense(channels * 2, dimension)
        self.xvector = nn.Sequential(layers)

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """(batch, frames, 80) mean-normalised fbank -> (batch, dimension)."""
        return self.xvector(self.head(features.transpose(1, 2)))  # type: ignore[no-any-return]

    def features(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, samples) 16 kHz -> (batch, frames, 80) fbank, each row set to zero mean over time (3D-Speaker)."""
        feats: torch.Tensor = self.fbank(waveforms)
        return feats - feats.mean(dim=1, keepdim=True)

    @torch.inference_mode()
    def embed(self, waveforms: torch.Tensor) -> torch.Tensor:
        """(batch, samples) float32 16 kHz, at least 25 ms -> (batch, dimension) embeddings (not normalised)."""
        device = next(self.parameters()).device
        embeddings: torch.Tensor = self(self.features(waveforms.to(device=device, dtype=torch.float32)))
        return embeddings


def load_campplus(path: Path, device: str = "cpu") -> CamPlusPlus:
    """Build CAM++, load the 3D-Speaker state dict strictly, and put it in eval mode on `device`."""
    state = torch.load(path, map_location="cpu", weights_only=True)
    dimension = int(state["xvector.dense.linear.weight"].shape[0])
    model = CamPlusPlus(dimension)
    model.load_state_dict(state, strict=True)
    return model.eval().to(device)
