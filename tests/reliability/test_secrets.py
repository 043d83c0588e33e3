"""Credentials never reach the worker's logs or its error messages: URL passwords, presigned signatures, keys."""

from __future__ import annotations

import base64
import json
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from scribepod.redaction import RedactingFilter, redact

from conftest import ROOT
from servers import LOCAL_WORKER_ENV, file_server, free_port, wait_for

PASSWORD = "hunter2-url-password"
SIGNATURE = "f00dfacecafe0123456789abcdef"
CREDENTIAL = "AKIAIOSFODNN7EXAMPLE"
API_KEY = "rpa_secret_api_key_0123456789"
SECRETS = (PASSWORD, SIGNATURE, CREDENTIAL, API_KEY)


def signed_url(base: str, name: str) -> str:
    """A URL with a password and a presigned query, as jobs send them."""
    host = base.removeprefix("http://")
    query = f"X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential={CREDENTIAL}%2F20261124&X-Amz-Signature={SIGNATURE}"
    return f"http://reader:{PASSWORD}@{host}/{name}?{query}"


@pytest.mark.parametrize(
    "text",
    [
        f"GET http://reader:{PASSWORD}@example.com/a.mp3 failed",
        f"HTTP Request: GET https://b.s3.amazonaws.com/k.wav?X-Amz-Credential={CREDENTIAL}&X-Amz-Signature={SIGNATURE}",
        f"headers: {{'Authorization': 'Bearer {API_KEY}'}}",
        f"Authorization: {API_KEY}",
        f"retrying with X-Amz-Signature={SIGNATURE}",
        f"echo {{'HTTP_AUTHORIZATION': '{API_KEY}'}}",
        f'echo {{"authorization": ["{API_KEY}"]}}',
        f"headers X-Amz-Signature: {SIGNATURE}",
        f"in https%3A%2F%2Fs3.amazonaws.com%2Fk%3FX-Amz-Signature%3D{SIGNATURE}%26X-Amz-Credential%3D{CREDENTIAL}",
        f'config {{"aws_secret_access_key": "{API_KEY}", "accessSecret": "{SIGNATURE}"}}',
    ],
)
def test_redact_removes_every_kind_of_secret(text: str) -> None:
    cleaned = redact(text)
    assert not any(secret in cleaned for secret in SECRETS), cleaned
    assert cleaned.split()[0] == text.split(maxsplit=1)[0]  # the rest of the line is kept


def test_the_filter_redacts_arguments_and_tracebacks() -> None:
    try:
        raise ValueError(f"could not open http://u:{PASSWORD}@host/x")
    except ValueError:
        record = logging.LogRecord(
            "t", logging.ERROR, __file__, 1, "fetch %s failed", (signed_url("http://h", "a"),), None
        )
        record.exc_info = sys.exc_info()
    RedactingFilter().filter(record)
    written = logging.Formatter().format(record)
    assert "fetch http://" in written and "ValueError" in written
    assert not any(secret in written for secret in SECRETS), written


def test_serve_logs_no_credentials(tmp_path: Path) -> None:
    """The local endpoint at its default INFO level, given signed URLs for a good file and a missing one."""
    clip = tmp_path / "clip.ogg"
    clip.write_bytes(base64.b64decode(json.loads((ROOT / "test_input.json").read_text())["input"]["audio_base64"]))
    port = free_port()
    log_file = tmp_path / "serve.log"
    with file_server({"clip.ogg": clip}) as files, log_file.open("wb") as log:
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "scribepod_worker.cli",
                "serve",
                "--port",
                str(port),
                "--api-key",
                API_KEY,
                "--state-dir",
                str(tmp_path / "state"),
            ],
            cwd=ROOT,
            env={**os.environ, **LOCAL_WORKER_ENV, "SCRIBEPOD_ALLOW_PRIVATE_URLS": "1", "SCRIBEPOD_API_KEY": ""},
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        try:
            base = f"http://127.0.0.1:{port}"
            wait_for(f"{base}/health", timeout=120)
            headers = {"Authorization": f"Bearer {API_KEY}"}
            outputs = []
            for name in ("clip.ogg", "missing.ogg"):
                job = {"input": {"audio": signed_url(files, name), "model": "tiny.en"}}
                outputs.append(httpx.post(f"{base}/runsync", json=job, headers=headers, timeout=120).json())
            time.sleep(0.5)  # the last log lines
        finally:
            process.terminate()
            process.wait(timeout=20)
    assert outputs[0]["status"] == "COMPLETED", outputs[0]
    assert outputs[1]["status"] == "FAILED" and "404" in outputs[1]["error"], outputs[1]
    written = log_file.read_text() + json.dumps(outputs)
    assert "job" in written  # the log did capture the jobs
    leaked = [secret for secret in SECRETS if secret in written]
    assert not leaked, f"{leaked} found in:\n{written[-3000:]}"
