"""The worker through RunPod's own machinery: local test mode and the `--rp_serve_api` development server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from scribepod.models import ErrorInfo, Transcript

from conftest import ROOT, b64
from scoring import diarization_error_rate, read_rttm
from servers import capture_server, runpod_dev_server

ENV = {**os.environ, "SCRIBEPOD_MODEL": "tiny.en", "SCRIBEPOD_DIARIZER": "builtin", "SCRIBEPOD_DEVICE": "cpu"}


def python(*args: str, cwd: Path = ROOT, env: dict[str, str] = ENV) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, *args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_local_mode_runs_test_input_json_and_prints_the_transcript() -> None:
    result = python("-m", "scribepod_worker")
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line for line in result.stdout.splitlines() if line.startswith("[")]
    assert len(lines) >= 4
    assert {line.split("] ")[1].split(":")[0] for line in lines} == {"SPEAKER_00", "SPEAKER_01"}
    assert "summary" in result.stdout and "warm-up incomplete" not in result.stderr


def test_local_mode_failure_exits_non_zero_with_the_contract_error(tmp_path: Path) -> None:
    result = python(
        "-m", "scribepod_worker", "--test_input", json.dumps({"input": {"audio_base64": "bm90IGF1ZGlv"}}), cwd=tmp_path
    )
    assert result.returncode == 1
    assert '"code": "audio_decode_failed"' in result.stdout


def test_help_lists_the_commands_without_starting_the_worker() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "scribepod_worker.cli", "--help"], env=ENV, capture_output=True, text=True, check=False
    )
    assert result.returncode == 0 and "scribepod-worker serve" in result.stdout
    assert result.stderr == ""  # nothing was loaded: no start-up log lines


@pytest.mark.parametrize(
    ("job", "message"),
    [
        ('{"input": ', "--test_input is not valid JSON"),
        ('["a"]', '--test_input must be a job object with an "input"'),
        (
            '{"input": {"audio": "a.wav", "modle": "tiny.en", "language": "english"}}',
            "--test_input is not a valid job: 2 invalid fields: unknown field 'modle'; language: use the language's",
        ),
    ],
)
def test_a_bad_test_input_is_refused_before_the_warm_up(tmp_path: Path, job: str, message: str) -> None:
    result = python("-m", "scribepod_worker", "--test_input", job, cwd=tmp_path)
    assert result.returncode == 1 and message in result.stderr
    assert "Traceback" not in result.stderr and "ready in" not in result.stderr


@pytest.fixture(scope="module")
def api() -> Iterator[str]:
    with runpod_dev_server() as base:
        yield base


def test_runsync_on_the_development_server(api: str, sample_dir: Path) -> None:
    response = httpx.post(
        f"{api}/runsync", json={"input": {"audio_base64": b64(sample_dir / "sample.wav")}}, timeout=120
    )
    body = response.json()
    assert response.status_code == 200 and body["status"] == "COMPLETED", body
    transcript = Transcript.model_validate(body["output"])
    assert len(transcript.speakers) == 2
    der = diarization_error_rate(
        read_rttm(sample_dir / "sample.rttm"), [(t.start, t.end, t.speaker) for t in transcript.turns]
    )
    assert der <= 0.15


def test_runsync_failure_then_success(api: str, sample_dir: Path) -> None:
    body = httpx.post(f"{api}/runsync", json={"input": {"audio": "s3://only-bucket"}}, timeout=60).json()
    assert body["status"] == "FAILED"
    error = ErrorInfo.model_validate(json.loads(body["error"]))
    assert (error.code, error.field) == ("invalid_input", "audio")
    body = httpx.post(
        f"{api}/runsync",
        json={"input": {"audio_base64": b64(sample_dir / "sample.wav"), "diarize": False}},
        timeout=120,
    ).json()
    assert body["status"] == "COMPLETED" and body["output"]["text"]


PROGRESS_SCRIPT = """
import json, sys, time
from scribepod_worker import handler
job = {"id": "job-7", "input": {"audio": sys.argv[1]}}
output = handler.handle(job)
time.sleep(1.5)  # progress updates go out on daemon threads
print(json.dumps({"ok": "error" not in output, "text": output.get("text")}))
"""


def test_progress_reaches_runpods_job_webhook(sample_dir: Path) -> None:
    """With RunPod's webhook configured, stage/percent updates are POSTed as IN_PROGRESS results for the job."""
    with capture_server() as (base, received):
        env = {
            **ENV,
            "RUNPOD_WEBHOOK_POST_OUTPUT": f"{base}/done/$ID?gpu=test",
            "RUNPOD_POD_ID": "pod-1",
            "SCRIBEPOD_ALLOW_LOCAL_FILES": "1",
        }
        result = python("-c", PROGRESS_SCRIPT, str(sample_dir / "sample.wav"), env=env)
    outcome = json.loads(result.stdout.splitlines()[-1])
    assert result.returncode == 0 and outcome["ok"], result.stderr[-2000:]
    updates = [json.loads(body) for path, body in received if path.startswith("/done/job-7")]
    assert updates and all(update["status"] == "IN_PROGRESS" for update in updates)
    # Each update is its own request on its own thread, so they may arrive out of order: sort by percent.
    progress = sorted((update["output"]["percent"], update["output"]["stage"]) for update in updates)
    assert progress[0] == (0.0, "decode") and progress[-1] == (100.0, "done")
    assert {"transcribe", "render"} <= {stage for _, stage in progress}
    # Live transcripts on RunPod: each update carries every segment so far, so the fullest one has the output's words.
    fullest = max((update["output"]["segments"] for update in updates), key=len)
    assert [segment["id"] for segment in fullest] == list(range(len(fullest))) and fullest
    assert " ".join(segment["text"] for segment in fullest).split() == outcome["text"].split()
