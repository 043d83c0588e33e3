"""The diarizer interface shared by every backend: audio in, speaker turns out."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
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


class Diarizer(Protocol):
    """Who spoke when. Implementations load their models once and are reused across jobs."""

    name: str

    def diarize(
        self, audio: np.ndarray, hint: SpeakerCountHint, progress: Callable[[float], None] | None = None
    ) -> list[SpeakerTurn]:
        """Return turns in time order for 16 kHz mono float32 `audio`; overlapping turns are allowed.

        `progress`, when given, receives the fraction done (0..1) now and then, from the diarizer's own thread."""
        ...
