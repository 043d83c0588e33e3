"""The `scribepod` command line against the local endpoint: outputs and the exit codes scripts rely on."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import API_KEY
from servers import free_port


def scribepod(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    command = Path(sys.executable).with_name("scribepod")  # the venv's console script, whatever PATH says
    assert command.is_file(), "the scribepod console script is not installed"
    return subprocess.run(
        [str(command), *args],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        env={**os.environ, **(env or {})},
    )


def test_transcribe_prints_srt_with_speakers(endpoint: str, sample_dir: Path) -> None:
    result = scribepod("--base-url", endpoint, "transcribe", str(sample_dir / "sample.wav"), "--format", "srt")
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("1\n00:00:") and "[SPEAKER_01]" in result.stdout
    assert "[1/1] sample.wav: done (endpoint): 2 speakers" in result.stderr
    # Progress lines: stage and percent, as far as polling saw them (a short stage can pass between two polls).
    assert re.search(r"^\[0/1\] sample\.wav: (decode|transcribe|diarize|render) \d+%$", result.stderr, re.M)


def test_several_inputs_to_a_folder_with_one_failure(
    endpoint: str, sample_dir: Path, media: dict[str, Path], tmp_path: Path
) -> None:
    inputs = [str(sample_dir / "sample.wav"), str(media["not_audio"]), str(media["opus"])]
    result = scribepod("--base-url", endpoint, "transcribe", *inputs, "--format", "json", "--out", str(tmp_path))
    assert result.returncode == 1  # one job failed
    assert sorted(path.name for path in tmp_path.iterdir()) == ["sample.json"]  # both named "sample": last wins
    assert json.loads((tmp_path / "sample.json").read_text())["speakers"]
    assert "notes.txt: FAILED: audio_decode_failed" in result.stderr
    assert "[3/3]" in result.stderr


def test_environment_configures_the_endpoint(endpoint: str, sample_dir: Path) -> None:
    result = scribepod(
        "transcribe", str(sample_dir / "sample.wav"), "--no-diarize", "--quiet", env={"SCRIBEPOD_BASE_URL": endpoint}
    )
    assert result.returncode == 0 and result.stderr == "" and "New Jersey" in result.stdout


def test_health_and_status(endpoint: str) -> None:
    health = scribepod("--base-url", endpoint, "health")
    assert health.returncode == 0 and "jobs" in json.loads(health.stdout)
    missing = scribepod("--base-url", endpoint, "status", "no-such-job")
    assert missing.returncode == 1 and "does not know job no-such-job" in missing.stderr


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["transcribe"], 2, "required"),
        (["transcribe", "x.wav", "--concurrency", "0"], 2, "at least 1"),
        (["--base-url", "http://127.0.0.1:{port}", "health"], 4, "failed"),
        (["health"], 2, "give --endpoint ID or --base-url URL"),  # command-line advice, not Python's
    ],
)
def test_exit_codes(args: list[str], code: int, message: str) -> None:
    result = scribepod(*(arg.format(port=free_port()) for arg in args))
    assert result.returncode == code and message in result.stderr


def test_refused_key_exits_3(secured_endpoint: str, sample_dir: Path) -> None:
    result = scribepod(
        "--base-url", secured_endpoint, "transcribe", str(sample_dir / "sample.wav"), env={"RUNPOD_API_KEY": "nope"}
    )
    assert result.returncode == 3 and "refused the API key" in result.stderr
    keyless = scribepod("--base-url", secured_endpoint, "health", env={"RUNPOD_API_KEY": "", "SCRIBEPOD_API_KEY": ""})
    assert keyless.returncode == 3 and "none was sent" in keyless.stderr
    ok = scribepod("--base-url", secured_endpoint, "health", env={"RUNPOD_API_KEY": API_KEY})
    assert ok.returncode == 0
