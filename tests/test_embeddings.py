"""`return_embeddings`: each speaker's centroid in the diarizer's embedding space, so that the speakers of separate
jobs on parts of one recording (the SDK's shards) can be linked. Real speech, the real tiny.en and builtin engine."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile as sf
from pyannote.core import Annotation
from scipy.optimize import linear_sum_assignment

from scribepod.models import ErrorInfo, Transcript, TranscriptionOptions
from scribepod_worker import handler
from scribepod_worker.attribute import attribute_speakers
from scribepod_worker.diarize.base import SpeakerCountHint, SpeakerTurn
from scribepod_worker.diarize.pyannote import PyannoteDiarizer, centroids_from_output, embedding_model_name
from scribepod_worker.engine import Engine
from scribepod_worker.transcribe import AsrSegment
from test_pyannote_adapter import annotation

from conftest import realspeech
from scoring import read_rttm

SAMPLE_RATE = 16_000
# The pyannote sample (30 s, two speakers) cut in a pause between two turns: both halves hold both voices.
SAMPLE_CUT_S = 17.95
AMI_CLIPS = ("ami_dev00", "ami_dev01", "ami_trn00")

Reference = list[tuple[float, float, str]]


@dataclass(frozen=True)
class Job:
    transcript: Transcript
    reference: Reference  # on the job's own clock

    def vectors(self) -> dict[str, np.ndarray]:
        return {speaker.id: np.asarray(speaker.embedding) for speaker in self.transcript.speakers if speaker.embedding}

    def overlap(self) -> dict[str, dict[str, float]]:
        """Output speaker -> reference speaker -> seconds their turns share."""
        shared: dict[str, dict[str, float]] = {}
        for turn in self.transcript.turns:
            for start, end, speaker in self.reference:
                seconds = min(end, turn.end) - max(start, turn.start)
                if seconds > 0:
                    shared.setdefault(turn.speaker, {}).setdefault(speaker, 0.0)
                    shared[turn.speaker][speaker] += seconds
        return shared

    def who(self) -> dict[str, str]:
        """Each output speaker -> the reference speaker its turns overlap most."""
        return {speaker: max(counts, key=counts.__getitem__) for speaker, counts in self.overlap().items()}

    def most_of(self, reference_speaker: str) -> str:
        """The output speaker that has most of `reference_speaker`'s speech."""
        shared = self.overlap()
        return max(shared, key=lambda speaker: shared[speaker].get(reference_speaker, 0.0))


def _shifted(reference: Reference, start: float, end: float) -> Reference:
    return [(max(a, start) - start, min(b, end) - start, who) for a, b, who in reference if min(b, end) > max(a, start)]


@pytest.fixture(scope="module")
def jobs(engine: Engine, sample_dir: Path) -> dict[str, Job]:
    """One job with `return_embeddings` per AMI clip and per half of the sample."""
    options = TranscriptionOptions(return_embeddings=True)
    done = {}
    for name in AMI_CLIPS:
        audio, _ = sf.read(realspeech(f"{name}.wav"), dtype="float32")
        done[name] = Job(engine.transcribe_audio(audio, options), read_rttm(realspeech(f"{name}.rttm")))
    sample, _ = sf.read(sample_dir / "sample.wav", dtype="float32")
    reference = read_rttm(sample_dir / "sample.rttm")
    cut = round(SAMPLE_CUT_S * SAMPLE_RATE)
    for name, piece, start, end in (
        ("sample_head", sample[:cut], 0.0, SAMPLE_CUT_S),
        ("sample_tail", sample[cut:], SAMPLE_CUT_S, sample.size / SAMPLE_RATE),
    ):
        done[name] = Job(engine.transcribe_audio(piece, options), _shifted(reference, start, end))
    return done


def _cosines(first: Job, second: Job) -> tuple[list[str], list[str], np.ndarray]:
    a, b = first.vectors(), second.vectors()
    return list(a), list(b), np.array([[float(a[x] @ b[y]) for y in b] for x in a])


def test_each_speaker_gets_a_unit_centroid_and_nothing_else_changes(engine: Engine, jobs: dict[str, Job]) -> None:
    """Every speaker carries a unit-length vector of CAM++'s dimension, named by `embedding_model`; without the
    option the same job's transcript is exactly what it was (no embedding, no model name)."""
    embedded = jobs["ami_dev00"].transcript
    diarizer: Any = engine.diarizer()
    assert embedded.embedding_model == diarizer.embedding_model
    assert embedded.embedding_model is not None and embedded.embedding_model.startswith("campplus_cn_en_common@")
    assert len(embedded.speakers) >= 2
    for speaker in embedded.speakers:
        assert speaker.embedding is not None and len(speaker.embedding) == diarizer.embedding.dimension == 192
        assert abs(float(np.linalg.norm(speaker.embedding)) - 1.0) < 1e-4

    audio, _ = sf.read(realspeech("ami_dev00.wav"), dtype="float32")
    plain = engine.transcribe_audio(audio, TranscriptionOptions())
    assert plain.embedding_model is None and all(speaker.embedding is None for speaker in plain.speakers)
    without = embedded.model_copy(
        update={
            "embedding_model": None,
            "speakers": [s.model_copy(update={"embedding": None}) for s in embedded.speakers],
        }
    )
    assert without.model_dump(exclude={"timings"}) == plain.model_dump(exclude={"timings"})


def test_the_same_voices_pair_up_across_shards(jobs: dict[str, Job]) -> None:
    """Two halves of one recording, as two jobs: the best one-to-one cosine pairing of their speakers is the pairing
    the reference gives (which need not follow the labels: each job numbers its speakers by first appearance), and
    every matched pair is more alike than any unmatched one."""
    head, tail = jobs["sample_head"], jobs["sample_tail"]
    rows, columns, cosine = _cosines(head, tail)
    print(f"sample halves: {rows} x {columns} cosines\n{np.round(cosine, 3)}")
    assert len(rows) == len(columns) == 2
    expected = {(x, y) for x in rows for y in columns if head.who()[x] == tail.who()[y]}
    assert len(expected) == 2, f"the diarizer did not find both voices in both halves: {head.who()}, {tail.who()}"
    best_rows, best_columns = linear_sum_assignment(-cosine)
    assert {(rows[r], columns[c]) for r, c in zip(best_rows, best_columns, strict=True)} == expected
    matched = [cosine[rows.index(x), columns.index(y)] for x, y in expected]
    unmatched = [cosine[r, c] for r in range(2) for c in range(2) if (rows[r], columns[c]) not in expected]
    assert min(matched) > max(unmatched) + 0.15


def test_a_meetings_speaker_links_across_excerpts_and_not_to_another_meeting(jobs: dict[str, Job]) -> None:
    """ami_dev00 and ami_dev01 are two excerpts of one meeting. The speakers that have most of MEE009's speech (by the
    RTTM) in each are more alike across them than any other pair of their speakers, and than any pair with a speaker
    of another meeting (ami_trn00). (MEE012 is left out: in ami_dev01 the builtin diarizer merges most of MEE012's
    speech into MEE009's speaker, so no speaker of that job stands for MEE012.)"""
    dev00, dev01, other = jobs["ami_dev00"], jobs["ami_dev01"], jobs["ami_trn00"]
    x, y = dev00.most_of("MEE009"), dev01.most_of("MEE009")
    rows, columns, cosine = _cosines(dev00, dev01)
    print(f"ami_dev00 x ami_dev01: {rows} x {columns}, reference {dev00.who()} / {dev01.who()}\n{np.round(cosine, 3)}")
    matched = cosine[rows.index(x), columns.index(y)]
    others = [cosine[r, c] for r in range(len(rows)) for c in range(len(columns)) if (rows[r], columns[c]) != (x, y)]
    strangers, _, across = _cosines(other, dev00)
    print(f"ami_trn00 x ami_dev00: {strangers} x {rows}\n{np.round(across, 3)}")
    assert matched > max(others) + 0.15
    assert matched > across.max() + 0.15


def test_return_embeddings_needs_diarization(worker: Engine) -> None:
    output = handler.handle(
        {"id": "test", "input": {"audio": str(realspeech("jfk.wav")), "diarize": False, "return_embeddings": True}}
    )
    error = ErrorInfo.model_validate(json.loads(output["error"]))
    assert (error.code, error.field) == ("invalid_input", "return_embeddings") and "diarize" in error.message


def test_centroids_follow_the_relabelling() -> None:
    """Output speakers are renamed by first appearance; each keeps its own backend label's centroid."""
    late, early = np.array([1.0, 0.0], np.float32), np.array([0.6, 0.8], np.float32)
    turns = [SpeakerTurn(5.0, 6.0, "b"), SpeakerTurn(1.0, 2.0, "z"), SpeakerTurn(3.0, 3.0, "q")]
    segment = AsrSegment(start=1.0, end=6.0, text="hi")
    result = attribute_speakers([segment], turns, {"b": late, "z": early, "q": late})
    assert [(s.id, s.embedding) for s in result.speakers] == [("SPEAKER_00", [0.6, 0.8]), ("SPEAKER_01", [1.0, 0.0])]
    assert all(s.embedding is None for s in attribute_speakers([segment], turns).speakers)


@dataclass
class DiarizeOutput:
    """The shape of pyannote.audio 4's pipeline result: `speaker_embeddings` rows in `labels()` order, zero rows
    for speakers its clustering did not produce."""

    speaker_diarization: Annotation
    exclusive_speaker_diarization: Annotation
    speaker_embeddings: np.ndarray | None = None


def test_pyannote_4_speaker_embeddings_become_unit_centroids() -> None:
    import torch

    turns = annotation((0.0, 2.0, "SPEAKER_01"), (2.0, 4.0, "SPEAKER_00"), (4.0, 5.0, "SPEAKER_02"))
    output = DiarizeOutput(turns, turns, np.array([[3.0, 4.0], [0.0, 2.0], [0.0, 0.0]]))
    diarizer = object.__new__(PyannoteDiarizer)
    diarizer._pipeline = lambda file, **kwargs: output
    diarizer._torch = torch
    diarization = diarizer.diarize(np.zeros(SAMPLE_RATE * 5, np.float32), SpeakerCountHint())
    assert {label: vector.tolist() for label, vector in diarization.centroids.items()} == {
        "SPEAKER_00": pytest.approx([0.6, 0.8]),
        "SPEAKER_01": pytest.approx([0.0, 1.0]),
    }
    assert {t.speaker for t in diarization.turns} == {"SPEAKER_00", "SPEAKER_01", "SPEAKER_02"}
    assert centroids_from_output(annotation((0.0, 1.0, "A"))) == {}  # pyannote 3.x: an Annotation alone
    assert centroids_from_output(DiarizeOutput(turns, turns)) == {}


def test_pyannote_embedding_model_is_named_without_paths(tmp_path: Path) -> None:
    pipeline = tmp_path / "community-1"
    (pipeline / "embedding").mkdir(parents=True)
    (pipeline / "embedding" / "pytorch_model.bin").write_bytes(b"weights")
    config = pipeline / "config.yaml"
    config.write_text("pipeline:\n  params:\n    embedding: $model/embedding\n")
    name = embedding_model_name(config)
    assert name == f"pyannote-embedding@sha256:{hashlib.sha256(b'weights').hexdigest()[:16]}"
    config.write_text("pipeline:\n  params:\n    embedding: pyannote/wespeaker-voxceleb-resnet34-LM\n")
    assert embedding_model_name(config) == "pyannote/wespeaker-voxceleb-resnet34-LM"
    config.write_text("pipeline:\n  params:\n    embedding: /nowhere/model.bin\n")
    assert embedding_model_name(config) == "pyannote:community-1"
