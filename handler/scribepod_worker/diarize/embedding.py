"""Speech regions and sliding-window speaker embeddings on the original (untrimmed) time axis.

resemblyzer's own `preprocess_wav` trims silences, which would shift every timestamp, so the mel
frames are computed here on the raw audio (matching resemblyzer's mel recipe exactly) and the
GE2E encoder is run on frame windows cut from them.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import librosa
import numpy as np
import torch
from faster_whisper.vad import VadOptions, get_speech_timestamps
from resemblyzer import VoiceEncoder  # type: ignore[import-untyped, unused-ignore]
from resemblyzer import hparams as rz  # type: ignore[import-untyped, unused-ignore]

from scribepod_worker.diarize.base import SAMPLE_RATE

FRAME_HOP = SAMPLE_RATE * rz.mel_window_step // 1000  # 160 samples = 10 ms per mel frame
FRAME_SECONDS = FRAME_HOP / SAMPLE_RATE
_N_FFT = SAMPLE_RATE * rz.mel_window_length // 1000  # 400 samples = 25 ms
# resemblyzer normalises training audio to this loudness; its mel is not log-compressed, so level matters.
_TARGET_DBFS = float(rz.audio_norm_target_dBFS)
_MEL_CHUNK_FRAMES = 6000  # bounds the STFT scratch memory to ~10 MB whatever the region length
_ENCODER_BATCH = 256

ProgressCallback = Callable[[float], None]
_VAD_BLOCK_SAMPLES = 600 * SAMPLE_RATE  # 10 minutes


@dataclass(frozen=True)
class Windows:
    """Embedded windows: frame span [start, stop) on the 10 ms grid and a unit-norm embedding each."""

    start: np.ndarray  # int64 (n,)
    stop: np.ndarray  # int64 (n,)
    embedding: np.ndarray  # float32 (n, 256)


def speech_regions(
    audio: np.ndarray, vad: VadOptions, progress: ProgressCallback | None = None
) -> list[tuple[int, int]]:
    """Silero VAD speech regions as [start, stop) mel-frame indices.

    The VAD runs on blocks of `_VAD_BLOCK_SAMPLES`: faster-whisper pads a copy of its whole input and builds a
    second, framed copy, ~1 GB of scratch for two hours. Speech running across a block edge is joined again.
    """
    regions: list[tuple[int, int]] = []
    for first in range(0, audio.size, _VAD_BLOCK_SAMPLES):
        block = audio[first : first + _VAD_BLOCK_SAMPLES]
        for stamp in get_speech_timestamps(block, vad, sampling_rate=SAMPLE_RATE):
            start, stop = (first + stamp["start"]) // FRAME_HOP, -(-(first + stamp["end"]) // FRAME_HOP)
            if stop <= start:
                continue
            if first and stamp["start"] == 0 and regions and regions[-1][1] >= first // FRAME_HOP:
                regions[-1] = (regions[-1][0], max(stop, regions[-1][1]))
            else:
                regions.append((start, stop))
        if progress is not None:
            progress(min(1.0, (first + block.size) / audio.size))
    return regions


def _window_starts(length: int, window: int, hop: int) -> list[int]:
    """Offsets of `window`-frame windows every `hop` frames covering `length` frames end to end.

    The last window is aligned to the end so no speech is left out; a region shorter than one window
    yields a single window of the whole region (the LSTM accepts any length).
    """
    if length <= window:
        return [0]
    starts = list(range(0, length - window + 1, hop))
    if starts[-1] != length - window:
        starts.append(length - window)
    return starts


class WindowEmbedder:
    """resemblyzer's GE2E encoder on raw-audio mel windows; holds the model so it loads once."""

    def __init__(self) -> None:
        self._encoder = VoiceEncoder(device="cpu", verbose=False).eval()
        self._mel_basis = librosa.filters.mel(sr=SAMPLE_RATE, n_fft=_N_FFT, n_mels=rz.mel_n_channels)
        self._fft_window = np.hanning(_N_FFT + 1)[:-1].astype(np.float32)  # periodic Hann, as librosa

    def embed(
        self,
        audio: np.ndarray,
        regions: list[tuple[int, int]],
        window: int,
        hop: int,
        progress: ProgressCallback | None = None,
    ) -> Windows:
        """Embed sliding windows over each speech region; windows of equal length share a batch.

        Regions are processed one at a time and batches flushed as they fill, so memory stays bounded
        on long recordings. `progress` gets the fraction of speech embedded after each flushed batch.
        """
        gain = _loudness_gain(audio, regions)
        spans: list[tuple[int, int]] = []
        chunks: list[tuple[list[int], np.ndarray]] = []
        pending: dict[int, tuple[list[int], list[np.ndarray]]] = {}
        total, done = sum(stop - start for start, stop in regions), 0
        for start, stop in regions:
            mel = self._mel(audio, start, stop) * gain
            for offset in _window_starts(stop - start, window, hop):
                frames = mel[offset : offset + window]
                indices, batch = pending.setdefault(len(frames), ([], []))
                indices.append(len(spans))
                batch.append(frames)
                spans.append((start + offset, start + offset + len(frames)))
                if len(batch) == _ENCODER_BATCH:
                    chunks.append((indices, self._encode(batch)))
                    del pending[len(frames)]
                    if progress is not None:
                        progress(min(1.0, (done + offset) / total))
            done += stop - start
        chunks.extend((indices, self._encode(batch)) for indices, batch in pending.values())
        embeddings = np.zeros((len(spans), rz.model_embedding_size), dtype=np.float32)
        for indices, out in chunks:
            embeddings[indices] = out
        bounds = np.array(spans, dtype=np.int64).reshape(-1, 2)
        return Windows(bounds[:, 0], bounds[:, 1], embeddings)

    def _encode(self, batch: list[np.ndarray]) -> np.ndarray:
        with torch.inference_mode():
            out: np.ndarray = self._encoder(torch.from_numpy(np.stack(batch))).numpy()
        return out

    def _mel(self, audio: np.ndarray, start: int, stop: int) -> np.ndarray:
        """Power mel frames `start..stop` exactly as librosa's centred STFT would give them."""
        chunks = []
        for first in range(start, stop, _MEL_CHUNK_FRAMES):
            last = min(stop, first + _MEL_CHUNK_FRAMES)
            lo, hi = first * FRAME_HOP - _N_FFT // 2, (last - 1) * FRAME_HOP + _N_FFT // 2
            piece = audio[max(lo, 0) : min(hi, audio.size)]
            piece = np.pad(piece, (max(0, -lo), max(0, hi - audio.size)))
            framed = np.lib.stride_tricks.sliding_window_view(piece, _N_FFT)[::FRAME_HOP]
            power = np.abs(np.fft.rfft(framed * self._fft_window, axis=1)) ** 2
            chunks.append((power @ self._mel_basis.T).astype(np.float32))
        return np.concatenate(chunks)


def _loudness_gain(audio: np.ndarray, regions: list[tuple[int, int]]) -> float:
    """Power gain that brings the speech to resemblyzer's training loudness (-30 dBFS).

    Summed region by region in float64 pieces of at most `_MEL_CHUNK_FRAMES` frames: a mask and a float64 copy of
    all the speech would cost ~1.4 GB for two hours.
    """
    energy, count = 0.0, 0
    step = _MEL_CHUNK_FRAMES * FRAME_HOP
    for start, stop in regions:
        for first in range(start * FRAME_HOP, min(stop * FRAME_HOP, audio.size), step):
            piece = audio[first : min(first + step, stop * FRAME_HOP)].astype(np.float64)
            energy += float(np.dot(piece, piece))
            count += piece.size
    rms = float(np.sqrt(energy / count)) if count else 0.0
    if rms <= 1e-9:
        return 1.0
    return float(10 ** ((_TARGET_DBFS - 20 * np.log10(rms)) / 10))
