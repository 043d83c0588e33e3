"""Stage 3b: who the speakers are. Enrolled voice samples become voiceprints (with the diarizer's own embedding
model), and each speaker the diarizer found takes the name of the voiceprint its centroid is close enough to.

A voiceprint is a sample's dominant voice as the diarizer hears it: the sample is diarized like any recording and
the centroid of its longest-speaking speaker is kept. Centroids of a recording's speakers are built the same way,
so the two compare directly (cosine). Names go one to one, best pair first: the most similar (speaker, name) pair
is matched, then the most similar of those left, so two speakers never share a name and no speaker loses its best
name to make room for another; a pair below `MATCH_THRESHOLD` is no match.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scribepod.models import Identification, SpeakerMatch, Voiceprint
from scribepod_worker.diarize import Diarizer, SpeakerCountHint
from scribepod_worker.errors import WorkerError

# Least cosine similarity between a speaker's centroid and a voiceprint for the speaker to take its name. Chosen on
# tuning clips only (bench/speakers.py; bench/RESULTS.md): the same person in another half of a clip scored 0.56 to
# 0.80 with CAM++, other people at most 0.42.
MATCH_THRESHOLD = 0.5
# A sample is refused with less speech than this by its dominant voice: its voiceprint would be noise.
MIN_SAMPLE_SPEECH_S = 1.0
# Longest sample decoded: a minute of speech is plenty, and enrolment diarizes the whole sample.
MAX_SAMPLE_S = 120.0


@dataclass(frozen=True)
class EnrolledVoice:
    """One sample's voiceprint, with its name and its index in the request."""

    name: str
    sample: int
    vector: np.ndarray


@dataclass(frozen=True)
class Recognition:
    """What `recognise` found: the names given to the diarizer's labels, and what to report per label."""

    names: dict[str, str]
    matches: dict[str, SpeakerMatch]
    similarities: dict[str, dict[str, float]]
    identification: Identification


def voiceprint(
    diarizer: Diarizer, audio: np.ndarray, field: str, progress: Callable[[float], None] | None = None
) -> Voiceprint:
    """The voiceprint of the voice that speaks longest in `audio` (16 kHz mono float32)."""
    diarization = diarizer.diarize(audio, SpeakerCountHint(), progress=progress)
    spoken: dict[str, float] = {}
    for turn in diarization.turns:
        spoken[turn.speaker] = spoken.get(turn.speaker, 0.0) + max(0.0, turn.end - turn.start)
    if spoken and not diarization.centroids:
        raise no_embeddings(diarizer)
    voiced = {label: seconds for label, seconds in spoken.items() if label in diarization.centroids}
    if not voiced or max(voiced.values()) < MIN_SAMPLE_SPEECH_S:
        found = max(voiced.values(), default=0.0)
        raise WorkerError(
            "invalid_input",
            f"{field}: the sample holds {found:.1f} s of speech; a voice sample needs at least "
            f"{MIN_SAMPLE_SPEECH_S:.0f} s (3 to 60 s of the person speaking alone is best)",
            field,
        )
    label = max(voiced, key=lambda name: voiced[name])
    vector = np.asarray(diarization.centroids[label], dtype=np.float64)
    vector /= max(float(np.linalg.norm(vector)), 1e-8)
    return Voiceprint(
        embedding_model=diarizer.embedding_model,
        vector=[round(float(value), 6) for value in vector],
        seconds=round(voiced[label], 3),
    )


def no_embeddings(diarizer: Diarizer) -> WorkerError:
    return WorkerError(
        "model_unavailable",
        f"this worker's {diarizer.name} diarizer gives no speaker embeddings, so it cannot recognise voices "
        "(`speakers`): use the builtin diarizer or pyannote 4",
        "speakers",
    )


def enrolled_voice(name: str, sample: int, print_: Voiceprint, diarizer: Diarizer) -> EnrolledVoice:
    """A voiceprint checked against this worker's embedding model, as a unit vector."""
    field = f"speakers.{sample}.voiceprint"
    if print_.embedding_model != diarizer.embedding_model:
        raise WorkerError(
            "invalid_input",
            f"{field}.embedding_model: the voiceprint was made by {print_.embedding_model!r}, but this worker's "
            f"{diarizer.name} diarizer embeds voices with {diarizer.embedding_model!r}: voices of two models do not "
            "compare. Enrol the sample again on this worker (an `enroll` job) or send the recording itself.",
            f"{field}.embedding_model",
        )
    if diarizer.embedding_size is not None and len(print_.vector) != diarizer.embedding_size:
        raise WorkerError(
            "invalid_input",
            f"{field}.vector: has {len(print_.vector)} values, but {diarizer.embedding_model!r} gives "
            f"{diarizer.embedding_size}",
            f"{field}.vector",
        )
    vector = np.asarray(print_.vector, dtype=np.float64)
    return EnrolledVoice(name, sample, vector / np.linalg.norm(vector))


def recognise(
    centroids: Mapping[str, np.ndarray],
    voices: Sequence[EnrolledVoice],
    embedding_model: str,
    threshold: float | None = None,
) -> Recognition:
    """Name the diarizer's labels after the enrolled voices their centroids match, one to one.

    A name's similarity to a speaker is that of its best sample (`threshold` None: `MATCH_THRESHOLD`)."""
    threshold = MATCH_THRESHOLD if threshold is None else threshold
    enrolled = list(dict.fromkeys(voice.name for voice in voices))
    labels = list(centroids)
    best = np.full((len(labels), len(enrolled)), -1.0)
    best_sample = np.zeros((len(labels), len(enrolled)), dtype=np.int64)
    for row, label in enumerate(labels):
        centroid = np.asarray(centroids[label], dtype=np.float64)
        centroid /= max(float(np.linalg.norm(centroid)), 1e-8)
        for voice in voices:
            if voice.vector.shape != centroid.shape:
                raise WorkerError(
                    "invalid_input",
                    f"speakers.{voice.sample}.voiceprint.vector: has {voice.vector.size} values, but "
                    f"{embedding_model!r} gives {centroid.size}",
                    f"speakers.{voice.sample}.voiceprint.vector",
                )
            column = enrolled.index(voice.name)
            similarity = float(centroid @ voice.vector)
            if similarity > best[row, column]:
                best[row, column], best_sample[row, column] = similarity, voice.sample
    names: dict[str, str] = {}
    matches: dict[str, SpeakerMatch] = {}
    # Best pair first: the most similar (speaker, name) pair at or above the threshold is matched, then the next of a
    # speaker and a name both still free, and so on; a speaker never gives up its best name to make room for another.
    pairs = sorted(
        ((best[row, column], row, column) for row in range(len(labels)) for column in range(len(enrolled))),
        key=lambda pair: (-pair[0], pair[1], pair[2]),
    )
    for similarity, row, column in pairs:
        if similarity < threshold:
            break
        if labels[row] in names or enrolled[column] in names.values():
            continue
        names[labels[row]] = enrolled[column]
        matches[labels[row]] = SpeakerMatch(
            name=enrolled[column], sample=int(best_sample[row, column]), similarity=round(float(similarity), 4)
        )
    similarities = {
        label: {name: round(float(best[row, column]), 4) for column, name in enumerate(enrolled)}
        for row, label in enumerate(labels)
    }
    identification = Identification(
        threshold=threshold,
        embedding_model=embedding_model,
        enrolled=enrolled,
        not_found=[name for name in enrolled if name not in names.values()],
    )
    return Recognition(names, matches, similarities, identification)
