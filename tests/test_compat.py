"""Drop-in for runpod-workers/worker-faster_whisper: its payloads run here, its output keys come back beside ours, and
one answer names every invalid field."""

from __future__ import annotations

import base64
import json
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from tokenizers import Tokenizer

from scribepod.models import ErrorInfo, Segment, Transcript
from scribepod_worker import compat, handler
from scribepod_worker.config import WorkerSettings
from scribepod_worker.engine import Engine
from scribepod_worker.errors import WorkerError
from scribepod_worker.transcribe import resolve_model

from conftest import ROOT, with_settings
from servers import recording_file_server

# The official worker's test_input.json, verbatim (runpod-workers/worker-faster_whisper at bd500dc, 2025-05-09).
THEIR_TEST_INPUT = json.loads("""
{
  "input": {
    "audio": "https://github.com/runpod-workers/sample-inputs/raw/main/audio/gettysburg.wav",
    "model": "turbo",
    "transcription": "plain text",
    "translate": false,
    "temperature": 0,
    "best_of": 5,
    "beam_size": 5,
    "suppress_tokens": "-1",
    "condition_on_previous_text": false,
    "temperature_increment_on_fallback": 0.2,
    "compression_ratio_threshold": 2.4,
    "logprob_threshold": -1,
    "no_speech_threshold": 0.6
  }
}
""")
# Our own test_input.json's audio: a few seconds of speech.
SHORT_AUDIO = base64.b64decode(json.loads((ROOT / "test_input.json").read_text())["input"]["audio_base64"])


def failed(job: Any) -> ErrorInfo:
    output = handler.handle(job)
    assert set(output) == {"error"}, f"expected a failure, got {str(output)[:300]}"
    return ErrorInfo.model_validate(json.loads(output["error"]))


@pytest.fixture
def served_audio(tmp_path: Path) -> Any:
    """Their sample's URL path, served on loopback with our short speech."""
    audio = tmp_path / "gettysburg.wav"
    audio.write_bytes(SHORT_AUDIO)
    with recording_file_server({"gettysburg.wav": audio}) as server:
        yield server


def test_their_test_input_runs_unchanged_but_for_the_model(worker: Engine, served_audio: Any) -> None:
    job_input = {**THEIR_TEST_INPUT["input"], "model": "tiny.en", "audio": f"{served_audio.base}/gettysburg.wav"}
    output = handler.handle({"id": "official", "input": job_input})
    assert "error" not in output, output["error"]
    transcript = Transcript.model_validate(output)  # ours, all of it
    assert transcript.text and transcript.segments and transcript.model == "tiny.en" and output["device"] == "cpu"
    # Theirs beside it, in predict.py's shapes: "plain text" is its plain_text.
    assert output["detected_language"] == "en"
    assert output["transcription"] == " ".join(segment.text.lstrip() for segment in transcript.segments)
    assert output["translation"] is None
    assert "word_timestamps" not in output  # it adds the key only when asked


def test_their_unchanged_test_input_names_the_missing_model_and_what_is_present(worker: Engine) -> None:
    error = failed({"id": "official", **THEIR_TEST_INPUT})
    assert (error.code, error.field) == ("model_unavailable", "model")
    assert error.message == "model 'turbo' (large-v3-turbo) is not present on this worker; available: tiny.en"


def test_their_model_names_stand_for_the_models_present(worker: Engine, tmp_path: Path, served_audio: Any) -> None:
    """`turbo` runs large-v3-turbo where it is baked (here a link to tiny.en under that name), with their formats."""
    packaged = resolve_model("tiny.en", worker.settings).path
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "large-v3-turbo").symlink_to(packaged, target_is_directory=True)
    with_settings(worker, model_dir=tmp_path / "models")
    output = handler.handle(
        {
            "id": "turbo",
            "input": {
                "audio": f"{served_audio.base}/gettysburg.wav",
                "model": "turbo",
                "transcription": "srt",
                "word_timestamps": True,
            },
        }
    )
    assert "error" not in output, output["error"]
    assert output["model"] == "large-v3-turbo"
    cues = output["transcription"].split("\n\n")
    assert cues[-1] == "" and re.fullmatch(r"1\n\d\d:\d\d:\d\d,\d{3} --> \d\d:\d\d:\d\d,\d{3}\n\S.*", cues[0])
    words = output["word_timestamps"]
    assert words and all(set(word) == {"word", "start", "end"} for word in words)
    assert [word["word"] for word in words] == [w["word"] for s in output["segments"] for w in s["words"]]


def test_an_alias_resolves_only_to_a_model_that_is_present(tmp_path: Path) -> None:
    for name in ("large-v3-turbo", "base"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "model.bin").write_bytes(b"")
        (tmp_path / name / "config.json").write_text("{}")
    settings = WorkerSettings(model="tiny.en", model_dir=tmp_path, device="cpu")
    assert resolve_model("turbo", settings).name == "large-v3-turbo"
    assert resolve_model("base", settings).path == tmp_path / "base"
    assert resolve_model("tiny.en", settings).name == "tiny.en"
    (tmp_path / "large-v3-turbo" / "model.bin").unlink()
    for absent in ("turbo", "small", "large-v2", "distil-large-v3"):
        with pytest.raises(WorkerError) as raised:
            resolve_model(absent, settings)
        assert raised.value.code == "model_unavailable"
        assert raised.value.message.endswith("available: base, tiny.en")


def test_their_request_maps_onto_our_options() -> None:
    fields, asked, problems = compat.to_ours(THEIR_TEST_INPUT["input"])
    assert problems == [] and asked == compat.OfficialRequest()
    assert fields["temperature"] == [0.0, 0.2, 0.4, 0.6, 0.8, 1.0]
    assert (fields["log_prob_threshold"], fields["suppress_tokens"], fields["condition_on_previous_text"]) == (
        -1,
        [-1],
        False,
    )
    assert not set(fields) & {"transcription", "translate", "logprob_threshold", "temperature_increment_on_fallback"}
    fields, _, _ = compat.to_ours({"enable_vad": False, "temperature": 0.5, "temperature_increment_on_fallback": None})
    assert fields == {"vad_filter": False, "temperature": [0.5]}


@pytest.mark.parametrize(("start", "increment"), [(0.0, 0.2), (0.5, 0.3), (0.1, 0.1), (1.0, 0.2), (0.0, 1.0)])
def test_the_temperature_ladder_is_theirs(start: float, increment: float) -> None:
    theirs = np.arange(start, 1.0 + 1e-6, increment)
    assert compat.temperature_ladder(start, increment) == pytest.approx(list(theirs))


def test_every_invalid_field_is_named_in_one_answer(worker: Engine) -> None:
    error = failed(
        {
            "id": "bad",
            "input": {
                "audio": "https://example.com/a.wav",
                "transcription": "docx",
                "translate": "yes",
                "suppress_tokens": "a,b",
                "enable_vad": "no",
                "beam_size": 0,
            },
        }
    )
    assert (error.code, error.field) == ("invalid_input", "transcription")
    assert error.message.startswith("5 invalid fields: transcription: must be one of plain_text")
    for name in ("translate:", "suppress_tokens:", "enable_vad:", "beam_size:"):
        assert name in error.message
    error = failed(
        {"id": "bad", "input": {"audio_base64": "AAAA", "speaker_count": 2, "num_speakers": "two", "beam_size": 0}}
    )
    assert (error.code, error.field) == ("invalid_input", "speaker_count")
    assert error.message.startswith("3 invalid fields: unknown field 'speaker_count'; num_speakers: ")
    error = failed({"id": "bad", "input": {"audio": "https://example.com/a.wav", "model": ["turbo"]}})
    assert (error.code, error.field) == ("invalid_input", "model")


def test_translate_with_a_model_that_cannot_fails_before_any_fetch(worker: Engine, served_audio: Any) -> None:
    error = failed({"id": "t", "input": {"audio": f"{served_audio.base}/gettysburg.wav", "translate": True}})
    assert (error.code, error.field) == ("invalid_input", "translate")
    assert served_audio.requests == []


def test_their_text_formats_are_written_as_they_write_them() -> None:
    segments = [
        Segment(id=0, start=0.0, end=1.5, text=" Four score"),
        Segment(id=1, start=61.25, end=3725.5, text=" and --> seven"),
    ]
    assert compat.format_segments("plain_text", segments) == "Four score and --> seven"
    assert compat.format_segments("formatted_text", segments) == "Four score\nand --> seven"
    assert compat.format_segments("srt", segments) == (
        "1\n00:00:00,000 --> 00:00:01,500\nFour score\n\n2\n00:01:01,250 --> 01:02:05,500\nand -> seven\n\n"
    )
    assert compat.format_segments("vtt", segments) == (
        "00:00:00.000 --> 00:00:01.500\nFour score\n\n00:01:01.250 --> 01:02:05.500\nand -> seven\n\n"
    )
    translated = Transcript(text="x", duration=2.0, segments=segments[:1])
    output = compat.official_output(
        Transcript(text="", duration=2.0, language="de"), compat.OfficialRequest(translate=True), translated
    )
    assert output == {"detected_language": "de", "transcription": "", "translation": "Four score"}


def test_their_decoding_options_reach_faster_whisper(worker: Engine) -> None:
    """`suppress_tokens` (which their worker accepts and drops) is honoured: the suppressed word is not written."""
    audio = base64.b64encode(SHORT_AUDIO).decode()
    plain = handler.handle({"id": "a", "input": {"audio_base64": audio, "diarize": False, "suppress_tokens": "-1"}})
    assert " patch" in plain["transcription"]
    tokenizer = Tokenizer.from_file(str(resolve_model("tiny.en", worker.settings).path / "tokenizer.json"))
    (token,) = tokenizer.encode(" patch", add_special_tokens=False).ids
    job = {"audio_base64": audio, "diarize": False, "suppress_tokens": f"-1,{token}"}
    suppressed = handler.handle({"id": "b", "input": job})
    assert " patch" not in suppressed["transcription"] and suppressed["text"]
