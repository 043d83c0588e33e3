"""The SDK end to end against the local endpoint running the real worker (tiny.en, `builtin`)."""

from __future__ import annotations

import asyncio
import io
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from scribepod import (
    AsyncClient,
    AuthenticationError,
    Client,
    EndpointUnavailable,
    InvalidInput,
    JobCancelled,
    JobFailed,
    JobTimedOut,
    LocalInferenceUnavailable,
    PayloadTooLarge,
    S3Settings,
    SubmissionUncertain,
    Transcript,
    _sources,
)
from scribepod.models import Segment
from test_cli import scribepod

from conftest import API_KEY, ffmpeg, realspeech
from faultproxy import FaultProxy, delay, reject, reset_after, reset_before
from servers import free_port, moto_s3_server


@pytest.fixture
def client(endpoint: str) -> Iterator[Client]:
    with Client(base_url=endpoint, timeout=120) as made:
        yield made


@pytest.fixture(scope="module")
def long_audio(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """Two minutes of real speech: long enough to be caught running, queued or timed out."""
    path = tmp_path_factory.mktemp("long") / "long.wav"
    sample = str(sample_dir / "sample.wav")
    ffmpeg(*(arg for _ in range(4) for arg in ("-i", sample)), "-filter_complex", "concat=n=4:v=0:a=1", str(path))
    return path


@pytest.fixture(scope="module")
def large_audio(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> Path:
    """The sample twice as 48 kHz stereo float WAV: 23 MB, over RunPod's 20 MB request limit once inlined."""
    path = tmp_path_factory.mktemp("large") / "large.wav"
    sample = str(sample_dir / "sample.wav")
    ffmpeg(
        "-i",
        sample,
        "-i",
        sample,
        "-filter_complex",
        "concat=n=2:v=0:a=1",
        "-ar",
        "48000",
        "-ac",
        "2",
        "-c:a",
        "pcm_f32le",
        str(path),
    )
    assert path.stat().st_size > 20_000_000
    return path


def health_counts(base: str) -> dict[str, int]:
    jobs: dict[str, int] = httpx.get(f"{base}/health", timeout=10).json()["jobs"]
    return jobs


def test_transcribe_a_path(client: Client, sample_dir: Path) -> None:
    transcript = client.transcribe(sample_dir / "sample.wav", output_formats=["srt"])
    assert [s.id for s in transcript.speakers] == ["SPEAKER_00", "SPEAKER_01"]
    assert "new jersey" in transcript.text.lower()
    assert transcript.job is not None and transcript.job.provider == "endpoint" and transcript.job.id
    assert transcript.job.execution_time is not None and transcript.job.execution_time > 0
    assert transcript.formats["srt"] == transcript.to_srt()


def test_transcribe_video_bytes_and_file_objects(client: Client, media: dict[str, Path]) -> None:
    data = media["mp4"].read_bytes()
    from_bytes = client.transcribe(data, diarize=False)
    from_file = client.transcribe(io.BytesIO(data), diarize=False)
    assert from_bytes.text and from_bytes.text == from_file.text


def test_failed_job_surfaces_the_workers_error(client: Client) -> None:
    with pytest.raises(JobFailed) as raised:
        client.transcribe(b"these bytes are not audio")
    assert raised.value.code == "audio_decode_failed" and raised.value.job_id


def test_bad_options_fail_before_any_request(sample_dir: Path) -> None:
    with Client(base_url=f"http://127.0.0.1:{free_port()}") as nowhere:  # nothing listens there
        with pytest.raises(InvalidInput, match="beam_size"):
            nowhere.transcribe(sample_dir / "sample.wav", beam_size=0)
        with pytest.raises(InvalidInput, match="no such file"):
            nowhere.transcribe(sample_dir / "missing.wav")
        for impossible in (float("inf"), float("nan"), 0.0001, 5.0, -5.0, 30 * 24 * 3600.0):
            with pytest.raises(InvalidInput, match="execution_timeout"):
                nowhere.submit(sample_dir / "sample.wav", execution_timeout=impossible)


def test_large_input_is_compressed_to_fit_inline(
    endpoint: str, large_audio: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """23 MB of 48 kHz stereo float WAV is over RunPod's limit; as 16 kHz mono Opus it goes inline, no S3 needed."""
    sent: list[int] = []
    compress = _sources.compress_for_upload

    def counted(data: bytes, name: str, *, keep_channels: bool = False) -> bytes | None:
        sent.append(len(data))
        assert not keep_channels, "a mono job's input is mixed to mono"
        return compress(data, name, keep_channels=keep_channels)

    monkeypatch.setattr(_sources, "compress_for_upload", counted)
    with Client(base_url=endpoint, timeout=120) as client:
        transcript = client.transcribe(large_audio, diarize=False)
    assert sent == [large_audio.stat().st_size]
    assert 59.9 < transcript.duration < 60.1 and "chicago" in transcript.text.lower()


@pytest.fixture
def no_ffmpeg_for_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    """The SDK as on a machine without ffmpeg: an input over the limit cannot be compressed."""
    monkeypatch.setattr(_sources, "compress_for_upload", lambda data, name, **_: None)


@pytest.mark.usefixtures("no_ffmpeg_for_the_sdk")
def test_large_input_without_s3_fails_before_any_request(large_audio: Path) -> None:
    with Client(base_url=f"http://127.0.0.1:{free_port()}") as nowhere, pytest.raises(PayloadTooLarge, match="S3"):
        nowhere.transcribe(large_audio)


@pytest.mark.usefixtures("no_ffmpeg_for_the_sdk")
def test_large_input_goes_through_s3(endpoint: str, large_audio: Path) -> None:
    with moto_s3_server() as s3_url:
        os.environ.update(AWS_ACCESS_KEY_ID="test", AWS_SECRET_ACCESS_KEY="test", AWS_DEFAULT_REGION="us-east-1")
        s3 = boto3.client("s3", endpoint_url=s3_url)
        s3.create_bucket(Bucket="uploads")
        settings = S3Settings(bucket="uploads", endpoint_url=s3_url)
        with Client(base_url=endpoint, s3=settings, timeout=120) as client:
            transcript = client.transcribe(large_audio, diarize=False)
        assert 59.9 < transcript.duration < 60.1 and "chicago" in transcript.text.lower()
        assert s3.list_objects_v2(Bucket="uploads").get("KeyCount") == 0  # the upload was deleted afterwards


def test_transcribe_many_keeps_order_and_goes_past_failures(
    client: Client, sample_dir: Path, media: dict[str, Path]
) -> None:
    sources: list[Any] = [sample_dir / "sample.wav", media["not_audio"], media["opus"], b"\x00" * 1000]
    results = client.transcribe_many(sources, concurrency=3, diarize=False)
    assert [type(result).__name__ for result in results] == ["Transcript", "JobFailed", "Transcript", "JobFailed"]
    assert isinstance(results[1], JobFailed) and results[1].code == "audio_decode_failed"


def test_submit_status_wait(client: Client, sample_dir: Path) -> None:
    job = client.submit(sample_dir / "sample.wav")
    assert job.status() in {"IN_QUEUE", "IN_PROGRESS", "COMPLETED"}
    updates: list[dict[str, Any]] = []
    transcript = job.wait(timeout=120, on_progress=updates.append)
    assert transcript.job is not None and transcript.job.id == job.id
    assert job.status() == "COMPLETED"


def test_progress_reaches_the_callback(client: Client, long_audio: Path) -> None:
    updates: list[dict[str, Any]] = []
    client.transcribe(long_audio, on_progress=updates.append)
    assert updates and {"stage", "percent"} <= set(updates[0])
    assert [u["percent"] for u in updates] == sorted(u["percent"] for u in updates)


def test_cancel_a_queued_job(endpoint: str, long_audio: Path) -> None:
    with Client(base_url=endpoint) as client:
        running = [client.submit(long_audio, diarize=False) for _ in range(2)]  # fill both worker threads
        queued = client.submit(long_audio)
        assert queued.cancel() == "CANCELLED"
        with pytest.raises(JobCancelled):
            queued.wait(timeout=30)
        for job in running:
            job.wait(timeout=120)


def test_timeout_cancels_the_remote_job(client: Client, long_audio: Path) -> None:
    with pytest.raises(JobTimedOut) as raised:
        client.transcribe(long_audio, timeout=1.5)
    assert raised.value.job_id and client.job(raised.value.job_id).status() == "CANCELLED"


def test_endpoint_execution_timeout_is_reported(client: Client, long_audio: Path) -> None:
    job = client.submit(long_audio, execution_timeout=5.5)  # RunPod takes nothing under 5 s
    with pytest.raises(JobTimedOut):
        job.wait(timeout=60)


def test_async_client(endpoint: str, sample_dir: Path, media: dict[str, Path]) -> None:
    async def scenario() -> tuple[Transcript, list[Any]]:
        async with AsyncClient(base_url=endpoint, timeout=120) as client:
            one = await client.transcribe(sample_dir / "sample.wav")
            many = await client.transcribe_many([media["opus"], media["not_audio"]], concurrency=2, diarize=False)
            job = await client.submit(sample_dir / "sample.wav", diarize=False)
            await job.wait(timeout=60)
            assert await job.status() == "COMPLETED"
            return one, many

    one, many = asyncio.run(scenario())
    assert len(one.speakers) == 2 and one.job is not None and one.job.provider == "endpoint"
    assert isinstance(many[0], Transcript) and isinstance(many[1], JobFailed)


def test_api_key_is_checked_and_never_shown(secured_endpoint: str, sample_dir: Path) -> None:
    with Client(base_url=secured_endpoint, api_key="wrong-key") as client, pytest.raises(AuthenticationError) as raised:
        client.transcribe(sample_dir / "sample.wav", diarize=False)
    assert "wrong-key" not in str(raised.value)
    with Client(base_url=secured_endpoint, api_key=API_KEY) as client:
        assert API_KEY not in repr(client)
        assert client.transcribe(sample_dir / "sample.wav", diarize=False).text


def test_fallback_when_the_endpoint_is_down(
    sample_dir: Path, caplog: pytest.LogCaptureFixture, local_model: None
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with Client(base_url=down, max_retries=2) as strict, pytest.raises(EndpointUnavailable):
        strict.transcribe(sample_dir / "sample.wav")
    with Client(base_url=down, fallback="on_error", max_retries=2) as tolerant:
        transcript = tolerant.transcribe(sample_dir / "sample.wav")
    assert transcript.job is not None and transcript.job.provider == "local"
    assert len(transcript.speakers) == 2
    assert "transcribing locally" in caplog.text


def test_local_only_needs_no_endpoint(sample_dir: Path, local_model: None) -> None:
    with Client(fallback="local_only") as local:
        transcript = local.transcribe((sample_dir / "sample.wav").read_bytes(), diarize=False)
    assert transcript.job is not None and transcript.job.provider == "local" and transcript.text


def test_local_only_reports_progress_and_live_segments(local_model: None) -> None:
    stages: list[str] = []
    heard: list[Segment] = []
    with Client(fallback="local_only") as local:
        transcript = local.transcribe(
            realspeech("jfk.wav"), on_progress=lambda update: stages.append(update["stage"]), on_segment=heard.append
        )
    assert stages[0] == "decode" and stages[-1] == "done" and {"transcribe", "render"} <= set(stages)
    assert " ".join(segment.text for segment in heard).split() == transcript.text.split()


def test_local_inference_without_its_default_model_fails_when_the_client_is_made(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Not at the first job: the client (and the CLI) stop at once, listing the models present."""
    monkeypatch.setenv("SCRIBEPOD_MODEL", "large-v3")
    with pytest.raises(LocalInferenceUnavailable, match=r"'large-v3' is not present.*available: tiny.en"):
        Client(fallback="local_only")
    result = scribepod("--fallback", "local_only", "transcribe", "meeting.wav", env={"SCRIBEPOD_MODEL": "large-v3"})
    assert result.returncode == 2 and "SCRIBEPOD_MODEL=tiny.en" in result.stderr, result.stderr
    assert "Traceback" not in result.stderr


def test_client_needs_an_endpoint(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("SCRIBEPOD_ENDPOINT_ID", raising=False)
    monkeypatch.delenv("SCRIBEPOD_BASE_URL", raising=False)
    with pytest.raises(ValueError, match="endpoint_id"):
        Client()
    monkeypatch.setenv("SCRIBEPOD_ENDPOINT_ID", "abc123")
    with Client() as client:
        assert client.base_url == "https://api.runpod.ai/v2/abc123"


# Faults: a proxy between the SDK and the endpoint answers 429/5xx, drops connections and stalls.


def test_transient_faults_are_retried_and_each_job_completes_once(endpoint: str, sample_dir: Path) -> None:
    proxy = FaultProxy(endpoint)
    proxy.plan("POST", "/runsync", reject(429, Retry_After="1"), reject(429))
    proxy.plan("GET", "/status", reject(500), reset_before(), delay(3.0), reject(502))
    before = health_counts(endpoint)
    with proxy.running() as url, Client(base_url=url, request_timeout=2.0, timeout=120) as client:
        transcript = client.transcribe(sample_dir / "sample.wav", diarize=False)
        job = client.submit(sample_dir / "sample.wav", diarize=False)
        second = job.wait(timeout=120)
    assert transcript.text and second.text
    after = health_counts(endpoint)
    assert after["completed"] - before["completed"] == 2  # two jobs, each exactly once
    assert proxy.count("POST", "/runsync") == 3  # 429 (after which it waited Retry-After), 429, then through


def test_client_errors_are_not_retried(endpoint: str, sample_dir: Path) -> None:
    proxy = FaultProxy(endpoint)
    proxy.plan("POST", "/runsync", reject(400))
    with proxy.running() as url, Client(base_url=url) as client, pytest.raises(InvalidInput, match="HTTP 400"):
        client.transcribe(sample_dir / "sample.wav")
    assert proxy.count("POST", "/runsync") == 1


def test_ambiguous_submission_is_not_repeated(endpoint: str, sample_dir: Path) -> None:
    """POST /run reached the endpoint but the answer was lost: repeating it could queue a duplicate job."""
    proxy = FaultProxy(endpoint)
    proxy.plan("POST", "/run", reset_after())
    before = health_counts(endpoint)
    with proxy.running() as url, Client(base_url=url) as client, pytest.raises(SubmissionUncertain) as raised:
        client.submit(sample_dir / "sample.wav", diarize=False)
    assert proxy.count("POST", "/run") == 1
    assert raised.value.request == "POST /run" and raised.value.status_code is None
    counts = health_counts(endpoint)
    assert sum(counts.values()) - sum(before.values()) == len(proxy.created_jobs()) == 1  # one job was created


def test_persistent_outage_gives_up_in_bounded_time(sample_dir: Path) -> None:
    proxy = FaultProxy("http://127.0.0.1:9")
    proxy.plan("GET", "/status", *[reject(503, Retry_After="0")] * 10)
    with proxy.running() as url, Client(base_url=url, max_retries=3) as client, pytest.raises(EndpointUnavailable):
        client.job("some-job").status()
    assert proxy.count("GET", "/status") == 3


def test_fallback_without_the_engine_says_what_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real_find_spec = importlib.util.find_spec
    monkeypatch.setattr(
        importlib.util, "find_spec", lambda name, *a: None if name == "scribepod_worker" else real_find_spec(name, *a)
    )
    with pytest.raises(LocalInferenceUnavailable, match=r"pip install torch==2.13.0 ./client_sdk ."):
        Client(base_url="http://127.0.0.1:9", fallback="on_error")
