"""pyannote segmentation-3.0 (PyanNet, MIT) in plain torch: 10 s of 16 kHz audio -> per-frame powerset scores.

Ours rather than pyannote.audio's: pyannote.audio cannot import beside our CPU torch (its torchaudio dependency is a
CUDA build on PyPI), and the model is small. The layers and state-dict names follow PyanNet so the published
checkpoint loads strictly: SincNet (asteroid-filterbanks' parametrised sinc filterbank, recomputed here from
`low_hz_`/`band_hz_`), a 4-layer bidirectional LSTM, two linear layers and a 7-class powerset log-softmax
(3 local speakers, at most 2 at once).
"""

from __future__ import annotations

import pickle
import types
from pathlib import Path
from typing import Any, cast

import torch
from torch import nn
from torch.nn import functional

SAMPLE_RATE = 16_000
CHUNK_SAMPLES = 10 * SAMPLE_RATE
# Receptive field of one output frame and the hop between frames, in samples (SincNet stride 10, three max pools).
FRAME_SIZE = 991
FRAME_STEP = 270
LOCAL_SPEAKERS = 3
# Powerset classes in pyannote's order: nobody, each speaker alone, then each pair.
POWERSET: tuple[tuple[int, ...], ...] = ((), (0,), (1,), (2,), (0, 1), (0, 2), (1, 2))


def num_frames(samples: int) -> int:
    """Output frames for `samples` input samples (589 for a 10 s chunk)."""
    frames = (samples - 251) // 10 + 1  # sinc filterbank: 251 taps, stride 10
    frames = (frames // 3 - 4) // 3 - 4  # max pool 3, 5-tap conv, twice
    return frames // 3  # last max pool


class _SincFilterbank(nn.Module):
    """80 band-pass filters (40 cosine + 40 sine) of 251 taps from learned cut-offs, as asteroid's ParamSincFB."""

    def __init__(self, filters: int = 80, taps: int = 251, min_low_hz: float = 50.0, min_band_hz: float = 50.0) -> None:
        super().__init__()
        half = taps // 2
        self.min_low_hz, self.min_band_hz = min_low_hz, min_band_hz
        self.low_hz_ = nn.Parameter(torch.zeros(filters // 2, 1))
        self.band_hz_ = nn.Parameter(torch.zeros(filters // 2, 1))
        self.register_buffer("window_", torch.hamming_window(taps, periodic=False)[:half])
        self.register_buffer("n_", 2 * torch.pi * torch.arange(-half, 0.0).view(1, -1) / SAMPLE_RATE)

    def filters(self) -> torch.Tensor:
        low = self.min_low_hz + self.low_hz_.abs()
        high = torch.clamp(low + self.min_band_hz + self.band_hz_.abs(), self.min_low_hz, SAMPLE_RATE / 2)
        band = high - low
        n, window = cast(torch.Tensor, self.n_), cast(torch.Tensor, self.window_)
        sin_high, sin_low = torch.sin(high @ n), torch.sin(low @ n)
        cos_high, cos_low = torch.cos(high @ n), torch.cos(low @ n)
        cos_left = (sin_high - sin_low) / (n / 2) * window
        sin_left = (cos_low - cos_high) / (n / 2) * window
        cos_filters = torch.cat([cos_left, 2 * band, cos_left.flip(1)], dim=1)
        sin_filters = torch.cat([sin_left, torch.zeros_like(band), -sin_left.flip(1)], dim=1)
        return (torch.cat([cos_filters, sin_filters]) / (2 * torch.cat([band, band]))).unsqueeze(1)


class _Encoder(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.filterbank = _SincFilterbank()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return functional.conv1d(x, self.filterbank.filters(), stride=10)


class _SincNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.wav_norm1d = nn.InstanceNorm1d(1, affine=True)
        self.conv1d = nn.ModuleList([_Encoder(), nn.Conv1d(80, 60, 5), nn.Conv1d(60, 60, 5)])
        self.pool1d = nn.ModuleList([nn.MaxPool1d(3, stride=3) for _ in range(3)])
        self.norm1d = nn.ModuleList([nn.InstanceNorm1d(c, affine=True) for c in (80, 60, 60)])

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        out: torch.Tensor = self.wav_norm1d(waveforms)
        for index, (conv, pool, norm) in enumerate(zip(self.conv1d, self.pool1d, self.norm1d, strict=True)):
            out = conv(out)
            if index == 0:
                out = out.abs()
            out = functional.leaky_relu(norm(pool(out)))
        return out


class PyanNet(nn.Module):
    """(batch, samples) 16 kHz -> (batch, frames, 7) powerset log-probabilities."""

    def __init__(self) -> None:
        super().__init__()
        self.sincnet = _SincNet()
        self.lstm = nn.LSTM(60, 128, num_layers=4, bidirectional=True, batch_first=True)
        self.linear = nn.ModuleList([nn.Linear(256, 128), nn.Linear(128, 128)])
        self.classifier = nn.Linear(128, len(POWERSET))

    def forward(self, waveforms: torch.Tensor) -> torch.Tensor:
        out, _ = self.lstm(self.sincnet(waveforms.unsqueeze(1)).transpose(1, 2))
        for linear in self.linear:
            out = functional.leaky_relu(linear(out))
        return functional.log_softmax(self.classifier(out), dim=-1)


class _Placeholder:
    """Stands in for pyannote.audio's pickled metadata classes (task specifications), which we do not need."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self.args = args

    def __setstate__(self, state: Any) -> None:
        self.state = state


class _Unpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if module.split(".", maxsplit=1)[0] in {"pyannote", "pytorch_lightning", "lightning", "lightning_fabric"}:
            return type(name, (_Placeholder,), {})
        return super().find_class(module, name)


_PICKLE = types.SimpleNamespace(Unpickler=_Unpickler, load=pickle.load, __name__="pickle")


def load_segmentation(path: Path, device: str = "cpu") -> PyanNet:
    """Load segmentation-3.0's Lightning checkpoint without pyannote.audio (its metadata classes are stubbed out)."""
    checkpoint = torch.load(path, map_location="cpu", weights_only=False, pickle_module=_PICKLE)
    model = PyanNet()
    model.load_state_dict(checkpoint["state_dict"], strict=True)
    return model.eval().to(device)


def powerset_to_multilabel(log_probs: torch.Tensor) -> torch.Tensor:
    """(..., 7) powerset scores -> (..., 3) 0/1 activity of each local speaker from the most likely class."""
    mapping = torch.zeros(len(POWERSET), LOCAL_SPEAKERS, dtype=torch.uint8, device=log_probs.device)
    for index, speakers in enumerate(POWERSET):
        mapping[index, list(speakers)] = 1
    return mapping[log_probs.argmax(dim=-1)]
