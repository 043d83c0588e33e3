"""The bad-input corpus: every malformed job gets a contract error naming what is wrong, and the worker goes on.

Each case goes through `handler.handle` exactly as RunPod (or the local endpoint) delivers a job. None may raise,
none may come back as `internal`, and a good job after all of them must still be transcribed.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from scribepod.models import ErrorInfo
from scribepod_worker import handler
from scribepod_worker.engine import Engine

from conftest import ROOT, with_settings

GOOD_AUDIO = json.loads((ROOT / "test_input.json").read_text())["input"]["audio_base64"]

# (job as delivered, expected code, expected field); the field is None where the contract names none.
BAD_JOBS: list[tuple[str, Any, str, str | None]] = [
    ("job is null", None, "invalid_input", "input"),
    ("job is an array", [{"input": {"audio": "x"}}], "invalid_input", "input"),
    ("job is a string", "transcribe this", "invalid_input", "input"),
    ("job is a number", 42, "invalid_input", "input"),
    ("job has no input", {"id": "j"}, "invalid_input", "input"),
    ("input is null", {"id": "j", "input": None}, "invalid_input", "input"),
    ("input is an array", {"id": "j", "input": [GOOD_AUDIO]}, "invalid_input", "input"),
    ("input is a string", {"id": "j", "input": "https://example.com/a.mp3"}, "invalid_input", "input"),
    ("no audio source", {"id": "j", "input": {}}, "invalid_input", "audio"),
    (
        "two audio sources",
        {"id": "j", "input": {"audio": "a.wav", "audio_base64": GOOD_AUDIO}},
        "invalid_input",
        "audio",
    ),
    ("audio is a number", {"id": "j", "input": {"audio": 12}}, "invalid_input", "audio"),
    ("audio is a list", {"id": "j", "input": {"audio": ["a.wav"]}}, "invalid_input", "audio"),
    ("audio is empty", {"id": "j", "input": {"audio": ""}}, "invalid_input", "audio"),
    ("base64 of stars", {"id": "j", "input": {"audio_base64": "****"}}, "invalid_input", "audio_base64"),
    (
        "base64 with symbols",
        {"id": "j", "input": {"audio_base64": "this is %%% not base64!"}},
        "invalid_input",
        "audio_base64",
    ),
    ("base64 empty", {"id": "j", "input": {"audio_base64": ""}}, "invalid_input", "audio_base64"),
    (
        "data URL, no data",
        {"id": "j", "input": {"audio_base64": "data:audio/wav;base64,"}},
        "invalid_input",
        "audio_base64",
    ),
    ("unsupported scheme", {"id": "j", "input": {"audio": "ftp://example.com/a.wav"}}, "invalid_input", "audio"),
    ("URL without host", {"id": "j", "input": {"audio": "https:///a.wav"}}, "invalid_input", "audio"),
    ("s3 URI without key", {"id": "j", "input": {"audio": "s3://bucket"}}, "invalid_input", "audio"),
    (
        "unknown field",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "speaker_count": 2}},
        "invalid_input",
        "speaker_count",
    ),
    (
        "count is a string",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "num_speakers": "two"}},
        "invalid_input",
        "num_speakers",
    ),
    (
        "count below 1",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "num_speakers": -1}},
        "invalid_input",
        "num_speakers",
    ),
    (
        "min over max",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "min_speakers": 5, "max_speakers": 2}},
        "invalid_input",
        "min_speakers",
    ),
    (
        "bool as count",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "max_speakers": True}},
        "invalid_input",
        "max_speakers",
    ),
    (
        "unknown format",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "output_formats": ["docx"]}},
        "invalid_input",
        "output_formats.0",
    ),
    (
        "formats not a list",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "output_formats": "srt"}},
        "invalid_input",
        "output_formats",
    ),
    (
        "temperature too hot",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "temperature": 7}},
        "invalid_input",
        "temperature",
    ),
    (
        "empty temperatures",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "temperature": []}},
        "invalid_input",
        "temperature",
    ),
    ("beam of zero", {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "beam_size": 0}}, "invalid_input", "beam_size"),
    (
        "huge batch",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "batch_size": 10**9}},
        "invalid_input",
        "batch_size",
    ),
    ("unknown task", {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "task": "summarize"}}, "invalid_input", "task"),
    (
        "language too long",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "language": "english please"}},
        "invalid_input",
        "language",
    ),
    ("model path", {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "model": "/etc"}}, "model_unavailable", "model"),
    (
        "model parent dir",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "model": "../../models"}},
        "model_unavailable",
        "model",
    ),
    (
        "model name 10k long",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "model": "m" * 10_000}},
        "model_unavailable",
        "model",
    ),
    (
        "s3Config is a list",
        {"id": "j", "input": {"audio": "s3://bucket/key"}, "s3Config": ["key"]},
        "invalid_input",
        "s3Config",
    ),
    (
        "language as a name",
        {"id": "j", "input": {"audio_base64": GOOD_AUDIO, "language": "english"}},
        "invalid_input",
        "language",
    ),
    (
        "s3Config region a number",
        {"id": "j", "input": {"audio": "s3://bucket/key"}, "s3Config": {"region": 5}},
        "invalid_input",
        "s3Config.region",
    ),
    (
        "s3Config keys not strings",
        {"id": "j", "input": {"audio": "s3://bucket/key"}, "s3Config": {"accessId": ["x"], "accessSecret": {}}},
        "invalid_input",
        "s3Config.accessId",
    ),
]


@pytest.mark.parametrize(("job", "code", "field"), [case[1:] for case in BAD_JOBS], ids=[case[0] for case in BAD_JOBS])
def test_a_malformed_job_gets_a_contract_error(worker: Engine, job: Any, code: str, field: str | None) -> None:
    output = handler.handle(job)
    assert set(output) == {"error"}, f"expected an error, got {str(output)[:300]}"
    error = ErrorInfo.model_validate(json.loads(output["error"]))
    assert (error.code, error.field) == (code, field), error
    assert str(ROOT) not in error.message and "/tmp" not in error.message  # no internal paths


@pytest.mark.parametrize("allow_local_files", [True, False])
def test_a_path_too_long_for_the_filesystem_is_a_fetch_error(worker: Engine, allow_local_files: bool) -> None:
    """ENAMETOOLONG must not escape as `internal`; with local files off it is refused before the filesystem."""
    with_settings(worker, allow_local_files=allow_local_files)
    output = handler.handle({"id": "j", "input": {"audio": "a" * 100_000}})
    error = ErrorInfo.model_validate(json.loads(output["error"]))
    assert error.code == ("audio_fetch_failed" if allow_local_files else "invalid_input") and error.field == "audio"
    assert len(error.message) < 500  # the 100 kB name is not echoed back


def test_the_worker_goes_on_after_the_whole_corpus(worker: Engine, tmp_path: Path) -> None:
    """Every bad job in a row on one engine, then a good one: it is transcribed as if nothing had happened."""
    for _, job, code, _ in BAD_JOBS:
        assert json.loads(handler.handle(job)["error"])["code"] == code
    output = handler.handle({"id": "good", "input": {"audio_base64": GOOD_AUDIO, "model": "tiny.en"}})
    assert "error" not in output, output
    assert output["segments"] and output["text"].strip()
