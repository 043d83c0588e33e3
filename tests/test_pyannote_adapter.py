"""The pyannote backend's adapter, tested with pyannote.core objects (pyannote.audio itself cannot import beside the
dev venv's torch; tests/test_pyannote_real.py runs the real pipeline where it can)."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from pyannote.core import Annotation, Segment

from scribepod_worker.config import WorkerSettings
from scribepod_worker.diarize import default_diarizer_name, load_diarizer
from scribepod_worker.diarize.base import SpeakerCountHint, SpeakerTurn
from scribepod_worker.diarize.pyannote import PyannoteDiarizer, hint_arguments, progress_hook, turns_from_output
from scribepod_worker.errors import WorkerError


def annotation(*turns: tuple[float, float, str]) -> Annotation:
    result = Annotation(uri="meeting")
    for index, (start, end, label) in enumerate(turns):
        result[Segment(start, end), index] = label
    return result


@dataclass
class DiarizeOutput:
    """The shape of pyannote.audio 4's pipeline result (speaker_diarization + exclusive_speaker_diarization)."""

    speaker_diarization: Annotation
    exclusive_speaker_diarization: Annotation


def test_annotation_from_pyannote_3_becomes_sorted_turns() -> None:
    output = annotation((4.0, 6.5, "SPEAKER_01"), (0.5, 4.2, "SPEAKER_00"), (5.0, 5.0, "SPEAKER_00"))
    assert turns_from_output(output, 10.0) == [
        SpeakerTurn(0.5, 4.2, "SPEAKER_00"),
        SpeakerTurn(4.0, 6.5, "SPEAKER_01"),
    ]


def test_turns_are_clipped_to_the_audio() -> None:
    """pyannote pads the last window, so a turn can end after the audio does; one that starts after it goes."""
    output = annotation((0.0, 4.0, "A"), (3.5, 6.2, "B"), (6.0, 6.4, "A"), (-0.1, 0.5, "B"))
    assert turns_from_output(output, 6.0) == [
        SpeakerTurn(0.0, 0.5, "B"),
        SpeakerTurn(0.0, 4.0, "A"),
        SpeakerTurn(3.5, 6.0, "B"),
    ]


def test_pyannote_4_exclusive_diarization_is_preferred() -> None:
    output = DiarizeOutput(
        speaker_diarization=annotation((0.0, 4.2, "A"), (4.0, 6.0, "B")),
        exclusive_speaker_diarization=annotation((0.0, 4.0, "A"), (4.0, 6.0, "B")),
    )
    assert turns_from_output(output, 6.0) == [SpeakerTurn(0.0, 4.0, "A"), SpeakerTurn(4.0, 6.0, "B")]


def test_only_given_hints_are_passed() -> None:
    assert hint_arguments(SpeakerCountHint()) == {}
    assert hint_arguments(SpeakerCountHint(num_speakers=3)) == {"num_speakers": 3}
    assert hint_arguments(SpeakerCountHint(min_speakers=2, max_speakers=5)) == {"min_speakers": 2, "max_speakers": 5}


def test_diarize_sends_a_waveform_and_the_hints() -> None:
    calls: list[dict[str, Any]] = []

    def pipeline(file: dict[str, Any], **kwargs: Any) -> DiarizeOutput:
        calls.append({"file": file, **kwargs})
        if "hook" in kwargs:
            kwargs["hook"]("segmentation", None, total=2, completed=2)
        return DiarizeOutput(annotation((0.0, 1.0, "S1")), annotation((0.0, 1.3, "S1")))

    import torch

    diarizer = object.__new__(PyannoteDiarizer)
    diarizer._pipeline = pipeline
    diarizer._torch = torch
    audio = np.zeros(16_000, dtype=np.float32)
    assert diarizer.diarize(audio, SpeakerCountHint(min_speakers=2, max_speakers=4)).turns == [
        SpeakerTurn(0.0, 1.0, "S1")
    ]
    (call,) = calls
    assert call["file"]["sample_rate"] == 16_000 and tuple(call["file"]["waveform"].shape) == (1, 16_000)
    assert (call["min_speakers"], call["max_speakers"]) == (2, 4) and "num_speakers" not in call
    assert "hook" not in call  # no progress asked for, no hook
    assert diarizer.diarize(np.zeros(0, dtype=np.float32), SpeakerCountHint()).turns == [] and len(calls) == 1
    seen: list[float] = []
    diarizer.diarize(audio, SpeakerCountHint(), seen.append)
    assert seen == [0.25, 1.0]  # the pipeline's steps, then done when it returns


def test_progress_over_pyannotes_steps_never_goes_down() -> None:
    """pyannote counts each step from zero (0, 1, 0, 0.5, 1 per step); the job sees one rising fraction."""
    seen: list[float] = []
    hook = progress_hook(seen.append)
    hook("segmentation", None, file=None, total=4, completed=0)
    hook("segmentation", None, file=None, total=4, completed=2)
    hook("segmentation", None, file=None, total=4, completed=6)  # pyannote overshoots on its last batch
    hook("segmentation", object())  # steps without counts report nothing
    hook("speaker_counting", object())
    hook("embeddings", None, total=10, completed=0)
    hook("embeddings", None, total=10, completed=5)
    hook("segmentation", None, total=4, completed=1)  # an earlier step again: nothing lower is reported
    hook("embeddings", None, total=10, completed=10)
    hook("discrete_diarization", object())
    assert seen == pytest.approx([0.125, 0.25, 0.6, 0.95])


def test_missing_pipeline_directory_is_model_unavailable(tmp_path: Path) -> None:
    for directory in (None, tmp_path / "nowhere", tmp_path):
        with pytest.raises(WorkerError) as raised:
            PyannoteDiarizer(directory, "cpu")
        assert raised.value.code == "model_unavailable"
        assert "SCRIBEPOD_PYANNOTE_DIR" in raised.value.message or "config.yaml is missing" in raised.value.message


@pytest.mark.skipif(importlib.util.find_spec("pyannote.audio") is not None, reason="pyannote.audio is installed")
def test_unimportable_pyannote_is_model_unavailable_and_names_builtin(tmp_path: Path) -> None:
    (tmp_path / "config.yaml").write_text("pipeline:\n  name: pyannote.audio.pipelines.SpeakerDiarization\n")
    with pytest.raises(WorkerError) as raised:
        load_diarizer("pyannote", WorkerSettings(pyannote_dir=tmp_path), "cpu")
    assert raised.value.code == "model_unavailable" and "SCRIBEPOD_DIARIZER=builtin" in raised.value.message


def test_default_backend_follows_the_pipeline_directory(tmp_path: Path) -> None:
    assert default_diarizer_name(WorkerSettings()) == "builtin"
    assert default_diarizer_name(WorkerSettings(pyannote_dir=tmp_path)) == "builtin"
    (tmp_path / "config.yaml").write_text("version: 4\n")
    assert default_diarizer_name(WorkerSettings(pyannote_dir=tmp_path)) == "pyannote"
    assert default_diarizer_name(WorkerSettings(pyannote_dir=tmp_path, diarizer="builtin")) == "builtin"
