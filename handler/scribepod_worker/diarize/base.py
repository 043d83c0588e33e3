"""The diarizer interface shared by every backend: audio in, speaker turns (and each speaker's voice) out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

SAMPLE_RATE = 16_000


@dataclass(frozen=True)
class SpeakerTurn:
    """One stretch of speech by one speaker, in seconds from the start of the audio.

    `speaker` is the backend's own label; the engine renames labels to SPEAKER_00.. by first appearance.
    """

    start: float
    end: float
    speaker: str


@dataclass(frozen=True)
class SpeakerCountHint:
    """What the caller knows about the number of speakers (all optional)."""

    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


@dataclass(frozen=True)
class Diarization:
    """A diarizer's result for one recording.

    `centroids` maps a turn label to the unit-length mean of that speaker's voice embeddings, in the space of the
    diarizer's `embedding_model`; a speaker may have none (empty for backends that do not expose them). They travel
    with the turns, not on the diarizer, because one diarizer serves several jobs at once."""

    turns: list[SpeakerTurn]
    centroids: dict[str, np.ndarray] = field(default_factory=dict)


class Diarizer(Protocol):
    """Who spoke when. Implementations load their models once and are reused across jobs."""

    name: str
    embedding_model: str
    """Names the speaker-embedding model (down to its weights) behind `Diarization.centroids`: centroids compare
    only with centroids of the same `embedding_model`."""
    embedding_size: int | None
    """How many values a centroid has, where known before any audio is diarized (None: known only then)."""

    def diarize(
        self, audio: np.ndarray, hint: SpeakerCountHint, progress: Callable[[float], None] | None = None
    ) -> Diarization:
        """Return turns in time order for 16 kHz mono float32 `audio` (overlapping turns are allowed), with the
        speakers' centroids.

        `progress`, when given, receives the fraction done (0..1) now and then, from the diarizer's own thread."""
        ...
