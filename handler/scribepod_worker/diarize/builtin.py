"""The `builtin` diarizer: pyannote 3.x's recipe on real models, offline, in plain torch.

Pipeline (as pyannote's SpeakerDiarization 3.x): 10 s windows every `step` seconds -> segmentation-3.0 gives each
window's local speakers (up to 3, overlap included) -> CAM++ embeds every active (window, local speaker) from that
speaker's frames (its overlap-free frames when there are enough) -> centroid-linkage agglomerative clustering on
cosine distance estimates the count (or honours the caller's hints) -> each window's local speakers go to distinct
clusters (Hungarian assignment) -> per-frame activations of each global speaker are summed over the windows that
cover the frame, and at every frame the top-k speakers are kept, k being the local speaker count averaged over those
windows -> turns, overlapping where two speakers talk at once.

Windows are processed in blocks so hours of audio never hold more than one block's audio and features at a time.
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from scipy.cluster.hierarchy import fcluster, linkage
from scipy.optimize import linear_sum_assignment

from scribepod_worker.diarize.base import SAMPLE_RATE, Diarization, SpeakerCountHint, SpeakerTurn
from scribepod_worker.diarize.campp import FRAME_LENGTH, FRAME_SHIFT, CamPlusPlus, load_campplus
from scribepod_worker.diarize.segmentation import (
    CHUNK_SAMPLES,
    FRAME_SIZE,
    FRAME_STEP,
    LOCAL_SPEAKERS,
    PyanNet,
    load_segmentation,
    num_frames,
    powerset_to_multilabel,
)
from scribepod_worker.diarize.weights import FILES, campplus_checkpoint, require_weights, segmentation_checkpoint

CHUNK_FRAMES = num_frames(CHUNK_SAMPLES)
# Segmentation frame under each 10 ms fbank frame of a window (by their centres).
_FBANK_TO_FRAME = np.clip(
    np.rint(
        (np.arange((CHUNK_SAMPLES - FRAME_LENGTH) // FRAME_SHIFT + 1) * FRAME_SHIFT + FRAME_LENGTH / 2 - FRAME_SIZE / 2)
        / FRAME_STEP
    ).astype(np.int64),
    0,
    CHUNK_FRAMES - 1,
)


@dataclass(frozen=True)
class BuiltinOptions:
    """Tunables, chosen on ami_dev00, ami_trn00, ami_trn06, pyannote's sample and synthetic voices only."""

    # Hop between 10 s windows. pyannote uses 1 s; every window costs a segmentation pass and up to 3 embeddings, so
    # long recordings use `step`, while short ones shrink it (down to `min_step`) to get at least `min_windows`.
    step: float = 10.0
    min_step: float = 1.0
    min_windows: int = 20
    # Windows per block: the unit of the work list and of progress (0.9 of it is spread over the blocks).
    block: int = 16
    # Windows per pass through the segmentation model and fbank, and fbank sequences per CAM++ pass: on one CPU
    # thread each pass takes a few tenths of a second, and a progress report follows each, so a stopped job (the
    # engine's progress callback raises) ends within about a second. Per-window results do not depend on them.
    segment_batch: int = 4
    embed_batch: int = 8
    # Speech embedded per (window, local speaker): CAM++ is the main cost and saturates after a few seconds.
    embed_max_seconds: float = 3.0
    # Shorter embeddings are assigned to a speaker but do not vote on how many speakers there are.
    cluster_min_seconds: float = 0.5
    # Centroid-linkage stop on Euclidean distance between unit-length CAM++ embeddings (sqrt(2 - 2 cos)).
    threshold: float = 0.85
    # Clusters smaller than this many embeddings (capped at 10% of them) are not counted as speakers.
    min_cluster_size: int = 3
    # Most embeddings clustered hierarchically (memory is quadratic); the rest are assigned to the centroids.
    max_clustered: int = 3000
    # Torch threads while diarizing. The diarizer runs beside ASR, which takes the other cores: one thread on a
    # 2-core machine (two would only spin against ASR's threads).
    threads: int = max(1, min(4, (os.cpu_count() or 1) // 2))
    # Run CAM++ in bfloat16 on CPUs with native support (AVX-512 BF16/AMX): ~2.5x faster, embeddings within
    # cosine 0.999 of float32. Segmentation stays float32 (its LSTM's decisions drift in bfloat16).
    bfloat16: bool = True


@dataclass
class _Window:
    """One processed window: its start (samples), local activity (frames, 3) and per-speaker embeddings."""

    start: int
    activity: np.ndarray
    embeddings: dict[int, tuple[np.ndarray, float]]


def campplus_model_name() -> str:
    """The CAM++ checkpoint's name and pinned sha256 (the weights directory is verified against it at load)."""
    checkpoint = campplus_checkpoint(Path())
    return f"{checkpoint.stem}@sha256:{FILES[checkpoint.as_posix()][1][:16]}"


class BuiltinDiarizer:
    name = "builtin"
    embedding_model = campplus_model_name()

    def __init__(self, weights: Path, device: str = "cpu", options: BuiltinOptions | None = None) -> None:
        require_weights(weights)
        self.options = options or BuiltinOptions()
        self.device = device
        self.segmentation: PyanNet = load_segmentation(segmentation_checkpoint(weights), device)
        self.embedding: CamPlusPlus = load_campplus(campplus_checkpoint(weights), device)
        self.embedding_size: int | None = self.embedding.dimension
        self._bfloat16 = self.options.bfloat16 and device == "cpu" and _native_bfloat16()

    def diarize(
        self, audio: np.ndarray, hint: SpeakerCountHint, progress: Callable[[float], None] | None = None
    ) -> Diarization:
        report = progress or (lambda fraction: None)
        report(0.0)
        audio = np.asarray(audio, dtype=np.float32).reshape(-1)
        if audio.size == 0:
            report(1.0)
            return Diarization([])
        previous_threads = torch.get_num_threads()
        if self.device == "cpu":
            torch.set_num_threads(self.options.threads)
        try:
            starts = _window_starts(audio.size, self._step(audio.size))
            windows: list[_Window] = []
            done = 0.0
            for index in range(0, len(starts), self.options.block):
                windows.extend(
                    self._process(audio, starts[index : index + self.options.block], functools.partial(report, done))
                )
                done = 0.9 * len(windows) / len(starts)
                report(done)
        finally:
            torch.set_num_threads(previous_threads)
        diarization = self._assemble(windows, audio.size, hint, functools.partial(report, done))
        report(1.0)
        return diarization

    def _step(self, samples: int) -> int:
        """The window hop in samples for a recording of `samples`."""
        spread = (samples - CHUNK_SAMPLES) / SAMPLE_RATE / self.options.min_windows
        return round(max(self.options.min_step, min(self.options.step, spread)) * SAMPLE_RATE)

    @torch.inference_mode()
    def _process(self, audio: np.ndarray, starts: list[int], tick: Callable[[], None]) -> list[_Window]:
        """Segment and embed one block of windows, calling `tick` after each model pass."""
        activities, fbanks = [], []
        for first in range(0, len(starts), self.options.segment_batch):
            some = starts[first : first + self.options.segment_batch]
            batch = np.zeros((len(some), CHUNK_SAMPLES), dtype=np.float32)
            for row, start in enumerate(some):
                piece = audio[start : start + CHUNK_SAMPLES]
                batch[row, : piece.size] = piece
            waveforms = torch.from_numpy(batch).to(self.device)
            activities.append(powerset_to_multilabel(self.segmentation(waveforms)).cpu().numpy())
            fbanks.append(self.embedding.fbank(waveforms).cpu().numpy())
            tick()
        activity, fbank = np.concatenate(activities), np.concatenate(fbanks)
        max_frames = round(self.options.embed_max_seconds * 100)
        pending: list[tuple[int, int, np.ndarray, float]] = []
        for row in range(len(starts)):
            overlap = activity[row].sum(axis=1) > 1
            for speaker in range(LOCAL_SPEAKERS):
                active = activity[row, :, speaker].astype(bool)
                if not active.any():
                    continue
                clean = active & ~overlap
                frames = clean if clean.sum() * FRAME_STEP >= 0.5 * SAMPLE_RATE else active
                feats = fbank[row][frames[_FBANK_TO_FRAME]]
                if feats.shape[0] < 10:
                    continue
                seconds = feats.shape[0] / 100
                if feats.shape[0] > max_frames:
                    offset = (feats.shape[0] - max_frames) // 2
                    feats = feats[offset : offset + max_frames]
                pending.append((row, speaker, feats, seconds))
        embeddings = self._embed_in_passes([item[2] for item in pending], tick)
        windows = [_Window(start, activity[row], {}) for row, start in enumerate(starts)]
        for (row, speaker, _, seconds), vector in zip(pending, embeddings, strict=True):
            windows[row].embeddings[speaker] = (vector, seconds)
        return windows

    def _embed_in_passes(self, features: list[np.ndarray], tick: Callable[[], None]) -> list[np.ndarray]:
        """`_embed` over `embed_batch` sequences at a time, calling `tick` after each; sorted by length first, so
        each pass holds one or two of `_embed`'s equal-length batches."""
        results: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(features)
        order = sorted(range(len(features)), key=lambda index: features[index].shape[0])
        for first in range(0, len(order), self.options.embed_batch):
            members = order[first : first + self.options.embed_batch]
            for index, vector in zip(members, self._embed([features[i] for i in members]), strict=True):
                results[index] = vector
            tick()
        return results

    def _embed(self, features: list[np.ndarray]) -> list[np.ndarray]:
        """Embed variable-length fbank sequences in batches of equal length: each is tiled up to the next 0.5 s."""
        results: list[np.ndarray] = [np.zeros(0, dtype=np.float32)] * len(features)
        buckets: dict[int, list[int]] = {}
        for index, feats in enumerate(features):
            buckets.setdefault(math.ceil(feats.shape[0] / 50) * 50, []).append(index)
        for length, members in buckets.items():
            stacked = np.stack([np.take(features[i], np.arange(length) % len(features[i]), axis=0) for i in members])
            batch = torch.from_numpy(stacked).to(self.device)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=self._bfloat16):
                vectors = self.embedding(batch - batch.mean(dim=1, keepdim=True)).float().cpu().numpy()
            for index, vector in zip(members, vectors, strict=True):
                results[index] = vector
        return results

    def _assemble(
        self, windows: list[_Window], samples: int, hint: SpeakerCountHint, tick: Callable[[], None]
    ) -> Diarization:
        """Cluster the windows' speakers and rebuild the turns, calling `tick` between the steps."""
        tick()
        keys = [(w, s) for w, window in enumerate(windows) for s in window.embeddings]
        if not keys:
            return Diarization([])
        vectors = np.stack([windows[w].embeddings[s][0] for w, s in keys]).astype(np.float64)
        vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-8)
        seconds = np.array([windows[w].embeddings[s][1] for w, s in keys])
        centroids = self._cluster(vectors, seconds, hint)
        tick()
        similarity = vectors @ centroids.T
        assignment: dict[tuple[int, int], int] = {}
        rows_of: dict[int, list[int]] = {}
        for row, (w, _) in enumerate(keys):
            rows_of.setdefault(w, []).append(row)
        for rows in rows_of.values():
            for row, cluster in _assign(similarity[rows]).items():
                assignment[keys[rows[row]]] = cluster
        turns = _reconstruct(windows, assignment, len(centroids), samples)
        speaking = {turn.speaker for turn in turns}
        by_label = {_label(cluster): centroid.astype(np.float32) for cluster, centroid in enumerate(centroids)}
        return Diarization(turns, {label: centroid for label, centroid in by_label.items() if label in speaking})

    def _cluster(self, vectors: np.ndarray, seconds: np.ndarray, hint: SpeakerCountHint) -> np.ndarray:
        """Unit-length centroids of the speakers found (or asked for), from the embeddings long enough to vote."""
        voters = vectors[seconds >= self.options.cluster_min_seconds]
        if len(voters) < 2:
            voters = vectors
        if len(voters) > self.options.max_clustered:
            voters = voters[np.linspace(0, len(voters) - 1, self.options.max_clustered).astype(int)]
        if len(voters) == 1:
            return voters
        low, high = _bounds(hint, len(voters))
        tree = linkage(voters, method="centroid", metric="euclidean")
        min_size = max(1, min(self.options.min_cluster_size, round(0.1 * len(voters))))
        labels = fcluster(tree, self.options.threshold, criterion="distance")
        if not low <= _large_count(labels, min_size) <= high:
            target = low if _large_count(labels, min_size) < low else high
            labels = _cut_for(tree, len(voters), target, min_size)
        return _centroids(voters, labels, min_size)


def _native_bfloat16() -> bool:
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        return False


def _window_starts(samples: int, step: int) -> list[int]:
    """Window starts every `step`; the last window ends with the audio (or is padded when it is shorter)."""
    if samples <= CHUNK_SAMPLES:
        return [0]
    starts = list(range(0, samples - CHUNK_SAMPLES + 1, step))
    if starts[-1] + CHUNK_SAMPLES < samples:
        starts.append(samples - CHUNK_SAMPLES)
    return starts


def _bounds(hint: SpeakerCountHint, count: int) -> tuple[int, int]:
    if hint.num_speakers is not None:
        return min(hint.num_speakers, count), min(hint.num_speakers, count)
    low = min(hint.min_speakers or 1, count)
    return low, max(low, min(hint.max_speakers or count, count))


def _large_count(labels: np.ndarray, min_size: int) -> int:
    return int((np.bincount(labels) >= min_size).sum())


def _cut_for(tree: np.ndarray, count: int, target: int, min_size: int) -> np.ndarray:
    """The coarsest cut of the dendrogram with `target` large clusters (or as close to it as there is)."""
    best, best_gap = fcluster(tree, target, criterion="maxclust"), count
    for clusters in range(target, min(count, target + 50) + 1):
        labels = fcluster(tree, clusters, criterion="maxclust")
        gap = abs(_large_count(labels, min_size) - target)
        if gap < best_gap:
            best, best_gap = labels, gap
        if gap == 0:
            break
    return np.asarray(best)


def _centroids(vectors: np.ndarray, labels: np.ndarray, min_size: int) -> np.ndarray:
    """Centroids of the large clusters (all clusters when none is large), unit length."""
    sizes = np.bincount(labels)
    keep = [label for label in np.unique(labels) if sizes[label] >= min_size] or list(np.unique(labels))
    centroids = np.stack([vectors[labels == label].mean(axis=0) for label in keep])
    return np.asarray(centroids / np.maximum(np.linalg.norm(centroids, axis=1, keepdims=True), 1e-8))


def _assign(similarity: np.ndarray) -> dict[int, int]:
    """A window's local speakers -> distinct clusters, maximising similarity; extras go to their nearest cluster."""
    rows, columns = linear_sum_assignment(-similarity)
    chosen = dict(zip(rows.tolist(), columns.tolist(), strict=True))
    for row in range(similarity.shape[0]):
        chosen.setdefault(row, int(similarity[row].argmax()))
    return chosen


def _reconstruct(
    windows: list[_Window], assignment: dict[tuple[int, int], int], speakers: int, samples: int
) -> list[SpeakerTurn]:
    """Sum each speaker's activity over the windows covering a frame; keep the top-k, k = mean local count."""
    frames = round(windows[-1].start / FRAME_STEP) + CHUNK_FRAMES
    activation = np.zeros((frames, speakers), dtype=np.float32)
    count = np.zeros(frames, dtype=np.float32)
    coverage = np.zeros(frames, dtype=np.float32)
    for w, window in enumerate(windows):
        offset = round(window.start / FRAME_STEP)
        span = slice(offset, offset + CHUNK_FRAMES)
        count[span] += window.activity.sum(axis=1)
        coverage[span] += 1
        clustered = np.zeros((CHUNK_FRAMES, speakers), dtype=np.float32)
        for local in range(LOCAL_SPEAKERS):
            cluster = assignment.get((w, local))
            if cluster is not None:
                clustered[:, cluster] = np.maximum(clustered[:, cluster], window.activity[:, local])
        activation[span] += clustered
    speakers_now = np.rint(count / np.maximum(coverage, 1)).astype(np.int64)
    order = np.argsort(-activation, axis=1, kind="stable")
    ranks = np.empty_like(order)
    np.put_along_axis(ranks, order, np.arange(speakers)[None, :].repeat(frames, axis=0), axis=1)
    active = (ranks < speakers_now[:, None]) & (activation > 0)
    duration = samples / SAMPLE_RATE
    turns = [
        SpeakerTurn(start, end, _label(speaker))
        for speaker in range(speakers)
        for start, end in _runs(active[:, speaker], duration)
    ]
    return sorted(turns, key=lambda turn: (turn.start, turn.end, turn.speaker))


def _label(cluster: int) -> str:
    return f"SPEAKER_{cluster:02d}"


def _runs(active: np.ndarray, duration: float) -> Iterator[tuple[float, float]]:
    """Time spans of consecutive active frames; frame f spans its centre +- half a hop, clipped to the audio."""
    padded = np.concatenate([[False], active, [False]])
    edges = np.flatnonzero(np.diff(padded.astype(np.int8)))
    for first, stop in zip(edges[::2], edges[1::2], strict=True):
        start = (first * FRAME_STEP + (FRAME_SIZE - FRAME_STEP) / 2) / SAMPLE_RATE
        end = (stop * FRAME_STEP + (FRAME_SIZE - FRAME_STEP) / 2) / SAMPLE_RATE
        start, end = max(0.0, start), min(duration, end)
        if end > start:
            yield round(start, 3), round(end, 3)
