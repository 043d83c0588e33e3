"""The `lite` diarizer: CPU-only, offline, every weight shipped inside PyPI wheels.

Pipeline: Silero VAD (bundled with faster-whisper) -> 1.5 s windows every 0.5 s inside speech ->
resemblyzer GE2E embeddings -> agglomerative clustering with a distance threshold (speaker count) ->
k-means partition refined on all windows -> with two or more speakers, a second pass of 1.0 s windows
every 0.25 s scored against centroids refined on those windows -> per-10 ms speaker scores blended from
every window covering a frame, both window lengths mixed -> turns that follow the VAD's speech, split
where the best-scoring speaker changes.
"""

from __future__ import annotations

import heapq
import os
from dataclasses import dataclass, field

import numpy as np
import torch
from faster_whisper.vad import VadOptions

from scribepod_worker.diarize.base import SAMPLE_RATE, SpeakerCountHint, SpeakerTurn
from scribepod_worker.diarize.clustering import ClusteringOptions, cluster_speakers, refine_centroids, single_speaker
from scribepod_worker.diarize.embedding import (
    FRAME_SECONDS,
    ProgressCallback,
    WindowEmbedder,
    Windows,
    speech_regions,
)

# Share of the diarizer's progress taken by the VAD (measured ~10% of its time on long recordings).
_VAD_SHARE = 0.1


@dataclass(frozen=True)
class LiteDiarizerOptions:
    """Tunables of the lite diarizer; the defaults are the measured sweet spot for speed and DER."""

    # Embedding window and hop in seconds. resemblyzer was trained on 1.6 s partials; 1.5 s with a
    # 0.5 s hop keeps 10 minutes of speech at ~1.5 s of CPU while each frame is seen by 3 windows.
    window: float = 1.5
    hop: float = 0.5
    # Longer windows that decide only whether there is one speaker or several (see clustering.py). The hop
    # grows past `count_hop` so that no more than `count_windows` are embedded: enough to judge, and the pass
    # costs the same for an hour as for ten minutes.
    count_window: float = 2.5
    count_hop: float = 0.5
    count_windows: int = 400
    # Shorter windows on a denser grid, used only to place speaker changes once the speakers are known
    # (two or more): a 1.5 s window cannot resolve the sub-second turns of a lively conversation.
    # `fine_weight` is their share of the frame scores (the rest is the 1.5 s windows'): short windows
    # alone localise changes well but flip whole turns more often; the blend was the most stable on the
    # real sample (DER 12.6% vs 19.8% with 1.5 s windows only). Costs ~2x the embedding time; 0 disables.
    fine_window: float = 1.0
    fine_hop: float = 0.25
    fine_weight: float = 0.7
    # Silero VAD: probability threshold, shortest pause that splits speech, padding kept around speech
    # (0.1 s: turns hug the words yet keep soft word edges the VAD misses) and the shortest blip that
    # still counts as speech.
    vad_threshold: float = 0.5
    min_silence: float = 0.3
    speech_pad: float = 0.1
    min_speech: float = 0.1
    # Speaker runs shorter than this inside continuous speech are given to a neighbouring speaker:
    # a window-based embedding cannot resolve a real turn that short, so such runs are flicker.
    min_turn: float = 0.3
    clustering: ClusteringOptions = field(default_factory=ClusteringOptions)
    # CPU threads for the embedding model (torch's setting is restored after each call).
    threads: int = min(4, os.cpu_count() or 1)


class LiteDiarizer:
    """Who spoke when, on CPU, without network access or model downloads."""

    name = "lite"

    def __init__(self, options: LiteDiarizerOptions | None = None) -> None:
        self.options = options or LiteDiarizerOptions()
        self._embedder = WindowEmbedder()
        self._vad = VadOptions(
            threshold=self.options.vad_threshold,
            min_silence_duration_ms=round(self.options.min_silence * 1000),
            speech_pad_ms=round(self.options.speech_pad * 1000),
            min_speech_duration_ms=round(self.options.min_speech * 1000),
        )

    def diarize(
        self, audio: np.ndarray, hint: SpeakerCountHint, progress: ProgressCallback | None = None
    ) -> list[SpeakerTurn]:
        """Return turns in time order for 16 kHz mono float32 `audio` ([] when there is no speech).

        `progress` gets the fraction done, so a long recording can report its diarization while ASR is finished.
        """
        audio = np.ascontiguousarray(audio, dtype=np.float32).reshape(-1)
        if audio.size < SAMPLE_RATE // 10:
            return []
        regions = speech_regions(audio, self._vad, _share(progress, 0.0, _VAD_SHARE))
        if not regions:
            return []
        window = round(self.options.window / FRAME_SECONDS)
        hop = round(self.options.hop / FRAME_SECONDS)
        fine_share = 0.5 if self.options.fine_weight > 0 else 0.0  # embedding costs ~ windows; fine has 2x
        coarse = _share(progress, _VAD_SHARE + (1 - _VAD_SHARE - fine_share) / 3, 1.0 - fine_share)
        previous_threads = torch.get_num_threads()
        torch.set_num_threads(self.options.threads)
        try:
            one_voice = self._one_voice(audio, regions, hint)
            windows = self._embedder.embed(audio, regions, window, hop, coarse)
            reliable = (windows.stop - windows.start) >= window * 2 // 3
            centroids = cluster_speakers(windows.embedding, reliable, hint, self.options.clustering, one_voice)
            n_frames = int(max(stop for _, stop in regions))
            scores = _frame_scores(windows, centroids, n_frames)
            if len(centroids) > 1 and self.options.fine_weight > 0:
                fine_window = round(self.options.fine_window / FRAME_SECONDS)
                fine_hop = round(self.options.fine_hop / FRAME_SECONDS)
                fine = self._embedder.embed(
                    audio, regions, fine_window, fine_hop, _share(progress, 1.0 - fine_share, 1.0)
                )
                iterations = self.options.clustering.refine_iterations
                fine_centroids = refine_centroids(fine.embedding, centroids, iterations)
                scores = (1 - self.options.fine_weight) * scores + self.options.fine_weight * _frame_scores(
                    fine, fine_centroids, n_frames
                )
        finally:
            torch.set_num_threads(previous_threads)
        labels = np.full(n_frames, -1, dtype=np.int64)
        for start, stop in regions:
            labels[start:stop] = np.argmax(scores[start:stop], axis=1)
        min_run = round(self.options.min_turn / FRAME_SECONDS)
        return _turns(labels, regions, min_run)

    def _one_voice(self, audio: np.ndarray, regions: list[tuple[int, int]], hint: SpeakerCountHint) -> bool | None:
        """The long windows' one-or-several verdict, skipped when the hint already fixes the count."""
        if hint.num_speakers is not None or hint.max_speakers == 1:
            return None
        window = round(self.options.count_window / FRAME_SECONDS)
        speech_frames = sum(stop - start for start, stop in regions)
        hop = max(round(self.options.count_hop / FRAME_SECONDS), speech_frames // self.options.count_windows)
        long = self._embedder.embed(audio, regions, window, hop)  # bounded: at most `count_windows` windows
        full_length = (long.stop - long.start) >= window * 2 // 3
        return single_speaker(long.embedding[full_length], self.options.clustering)


def _share(progress: ProgressCallback | None, low: float, high: float) -> ProgressCallback | None:
    """`progress` for one step that spans [low, high] of the whole."""
    if progress is None:
        return None
    return lambda fraction: progress(low + (high - low) * fraction)


def _frame_scores(windows: Windows, centroids: np.ndarray, n_frames: int) -> np.ndarray:
    """Standardised speaker scores per 10 ms frame, (n_frames, k).

    Each window votes its similarity to every centroid onto the frames it covers, weighted by a Hann
    taper so a frame is decided mostly by the windows centred on it; this places speaker changes
    between window hops instead of at window edges. Scores are centred across speakers per frame and
    scaled by their spread over all frames, so window lengths with different similarity ranges can be
    blended on an equal footing.
    """
    scores = windows.embedding @ centroids.T
    lengths = windows.stop - windows.start
    frame_index = np.concatenate([np.arange(s, e) for s, e in zip(windows.start, windows.stop, strict=True)])
    taper = np.concatenate([np.hanning(length + 2)[1:-1] for length in lengths])
    owner = np.repeat(np.arange(len(lengths)), lengths)
    weight = np.bincount(frame_index, weights=taper, minlength=n_frames)
    covered = weight > 0
    votes: np.ndarray = (
        np.stack(
            [
                np.bincount(frame_index, weights=taper * scores[owner, k], minlength=n_frames)
                for k in range(len(centroids))
            ],
            axis=1,
        )
        / np.maximum(weight, 1e-12)[:, None]
    )  # mean score per frame; frames no window covers stay at 0
    votes -= votes.mean(axis=1, keepdims=True)
    spread = float(np.sqrt(np.mean(np.square(votes[covered])))) if covered.any() else 0.0
    standardised: np.ndarray = votes / spread if spread > 1e-12 else votes
    return standardised


def _turns(labels: np.ndarray, regions: list[tuple[int, int]], min_run: int) -> list[SpeakerTurn]:
    """Runs of one speaker inside each speech region, short runs absorbed by their neighbours."""
    turns = []
    for start, stop in regions:
        runs = _absorb_short_runs(_runs(labels[start:stop]), min_run)
        for offset, length, speaker in runs:
            begin = start + offset
            turns.append(
                SpeakerTurn(
                    start=round(begin * FRAME_SECONDS, 3),
                    end=round((begin + length) * FRAME_SECONDS, 3),
                    speaker=f"lite_{speaker}",
                )
            )
    return turns


def _runs(labels: np.ndarray) -> list[tuple[int, int, int]]:
    """(offset, length, label) for each run of equal labels."""
    edges = np.flatnonzero(np.diff(labels)) + 1
    starts = np.concatenate([[0], edges])
    lengths = np.diff(np.concatenate([starts, [len(labels)]]))
    return [(int(s), int(n), int(labels[s])) for s, n in zip(starts, lengths, strict=True)]


def _absorb_short_runs(runs: list[tuple[int, int, int]], min_run: int) -> list[tuple[int, int, int]]:
    """Give each too-short run to its longer neighbour, shortest first, then merge equal neighbours.

    `runs` alternate labels (as `_runs` gives them). A heap of the short runs (earliest first among equals) and a
    linked list make this O(n log n): rescanning every run per absorption was quadratic in a long region's runs.
    """
    offsets = [offset for offset, _, _ in runs]
    lengths = [length for _, length, _ in runs]
    labels = [label for _, _, label in runs]
    before = list(range(-1, len(runs) - 1))
    after = [*range(1, len(runs)), -1]
    alive = [True] * len(runs)
    heap = [(length, offset, i) for i, (offset, length, _) in enumerate(runs) if length < min_run]
    heapq.heapify(heap)
    remaining = len(runs)
    while heap and remaining > 1:
        length, _, i = heapq.heappop(heap)
        if not alive[i] or lengths[i] != length:
            continue  # absorbed, or grown since it was queued
        neighbours = [j for j in (before[i], after[i]) if j >= 0]
        target = max(neighbours, key=lambda j: lengths[j])  # the left one when both are as long
        labels[i] = labels[target]
        survivor = i
        for j in (before[i], after[i]):  # merge with the neighbours that now carry the same label
            if j < 0 or labels[j] != labels[survivor]:
                continue
            left, right = (j, survivor) if j == before[survivor] else (survivor, j)
            lengths[left] += lengths[right]
            alive[right] = False
            after[left] = after[right]
            if after[right] >= 0:
                before[after[right]] = left
            remaining -= 1
            survivor = left
        if lengths[survivor] < min_run:
            heapq.heappush(heap, (lengths[survivor], offsets[survivor], survivor))
    return [(offsets[i], lengths[i], labels[i]) for i in range(len(runs)) if alive[i]]
