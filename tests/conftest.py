"""Shared fixtures: the real tiny.en model and `builtin` diarizer, the pyannote sample, media files made with ffmpeg."""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from scribepod_worker import handler
from scribepod_worker.config import WorkerSettings
from scribepod_worker.engine import Engine

from servers import local_endpoint

ROOT = Path(__file__).resolve().parent.parent
SAMPLE_DIR = Path(os.environ.get("SCRIBEPOD_SAMPLE_DIR", ROOT / ".cache" / "sample"))
# Real recordings with references (AMI excerpts, JFK): beside the checkout, in CI too.
REALSPEECH = Path(os.environ.get("SCRIBEPOD_REALSPEECH_DIR", ROOT.parent / "shared" / "realspeech"))


def realspeech(name: str) -> Path:
    """A file of the real-speech set, or a clear failure naming where it was expected (not a libsndfile error)."""
    path = REALSPEECH / name
    if not path.is_file():
        pytest.fail(f"{path} is missing: the real recordings are expected in ../shared/realspeech beside the checkout")
    return path


def ffmpeg(*args: str) -> None:
    subprocess.run(["ffmpeg", "-y", "-hide_banner", "-loglevel", "error", *args], check=True)


def b64(path: Path) -> str:
    return base64.b64encode(path.read_bytes()).decode()


@pytest.fixture(scope="session")
def sample_dir() -> Path:
    """pyannote.audio's two-speaker sample (wav, rttm, stm), unpacked by scripts/setup.sh."""
    if not (SAMPLE_DIR / "sample.wav").is_file():
        pytest.fail(f"pyannote sample missing at {SAMPLE_DIR}: run `bash scripts/setup.sh` first")
    return SAMPLE_DIR


@pytest.fixture(scope="session")
def settings() -> WorkerSettings:
    return WorkerSettings(
        model="tiny.en", device="cpu", diarizer="builtin", allow_local_files=True, allow_private_urls=True
    )


@pytest.fixture(scope="session")
def engine(settings: WorkerSettings) -> Engine:
    """One warmed-up engine for the whole session, as a worker process would have."""
    built = Engine(settings)
    built.warm_up()
    return built


@pytest.fixture
def job_tmp(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private temp dir for whatever the test runs, which must be empty again afterwards."""
    folder = tmp_path / "jobtmp"
    folder.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(folder))
    yield folder
    assert list(folder.iterdir()) == [], "a job left temporary files behind"


@pytest.fixture
def worker(engine: Engine, job_tmp: Path) -> Iterator[Engine]:
    """The engine installed in the handler, with a private temp dir so tests can see what a job leaves behind."""
    original = engine.settings
    handler.set_engine(engine)
    yield engine
    engine.settings = original


@pytest.fixture
def local_model(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local inference reads the worker's settings from the environment, like the worker itself."""
    monkeypatch.setenv("SCRIBEPOD_MODEL", "tiny.en")
    monkeypatch.setenv("SCRIBEPOD_DIARIZER", "builtin")


def with_settings(engine: Engine, **changes: object) -> None:
    """Change an engine's settings for one test (the `worker` fixture restores them)."""
    engine.settings = dataclasses.replace(engine.settings, **changes)  # type: ignore[arg-type]


@pytest.fixture(scope="session")
def media(tmp_path_factory: pytest.TempPathFactory, sample_dir: Path) -> dict[str, Path]:
    """Test media made with a real ffmpeg: video with the sample's audio, silence, noise, truncated and broken files."""
    out = tmp_path_factory.mktemp("media")
    sample = sample_dir / "sample.wav"
    files = {
        "mp4": out / "sample.mp4",
        "opus": out / "sample.ogg",
        "silence": out / "silence.wav",
        "noise": out / "noise.flac",
        "no_audio": out / "video_only.mp4",
    }
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        "color=c=blue:s=160x120:r=10",
        "-i",
        str(sample),
        "-shortest",
        "-c:v",
        "libx264",
        "-pix_fmt",
        "yuv420p",
        "-c:a",
        "aac",
        str(files["mp4"]),
    )
    ffmpeg("-i", str(sample), "-c:a", "libopus", "-b:a", "24k", str(files["opus"]))
    ffmpeg("-f", "lavfi", "-i", "anullsrc=r=16000:cl=mono", "-t", "20", str(files["silence"]))
    ffmpeg("-f", "lavfi", "-i", "anoisesrc=r=16000:a=0.02:c=pink", "-t", "20", str(files["noise"]))
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64:rate=5", "-t", "2", "-pix_fmt", "yuv420p", str(files["no_audio"]))
    data = files["mp4"].read_bytes()
    files["truncated_mp4"] = out / "truncated.mp4"
    files["truncated_mp4"].write_bytes(data[: len(data) // 3])
    files["not_audio"] = out / "notes.txt"
    files["not_audio"].write_text("these are meeting notes, not a recording\n" * 50)
    files["empty"] = out / "empty.wav"
    files["empty"].write_bytes(b"")
    return files


API_KEY = "sk-test-not-a-real-key-123456"
# The SDK's presigned upload URLs point at moto on loopback, which the worker refuses by default.
PRIVATE_URLS = {"SCRIBEPOD_ALLOW_PRIVATE_URLS": "1"}


@pytest.fixture(scope="session")
def endpoint() -> Iterator[str]:
    """The local RunPod-compatible endpoint running the real worker, shared by the SDK and CLI tests."""
    with local_endpoint("--concurrency", "2", env=PRIVATE_URLS) as base:
        yield base


@pytest.fixture(scope="module")
def secured_endpoint() -> Iterator[str]:
    with local_endpoint("--api-key", API_KEY) as base:
        yield base
