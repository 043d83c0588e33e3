"""Named speakers through the SDK and the CLI, against the local endpoint running the real worker.

MEE009 and MEE012 are enrolled from their own speech in ami_dev00 (tests/voices.py) and named in ami_dev00 and
ami_dev01 (see tests/test_speakers.py for why not both are named in ami_dev01).
"""

from __future__ import annotations

import asyncio
import json
import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from scribepod import AsyncClient, Client, JobFailed, load_voiceprints, save_voiceprints
from scribepod import voices as voices_module
from scribepod._core import JobState, enrollment_of
from scribepod.cli import build_parser, main
from scribepod.cli import voices_of as cli_voices
from scribepod.errors import InvalidInput
from scribepod.models import Segment, SpeakerSample, Transcript, Voiceprint
from scribepod.voices import split_voices
from voices import RATE, speech_alone

from conftest import realspeech
from scoring import read_rttm

PAIR = ("MEE009", "MEE012")


@pytest.fixture(scope="module")
def sample_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Each person's own speech in ami_dev00, as a WAV file a caller would enrol."""
    audio, _ = soundfile.read(realspeech("ami_dev00.wav"), dtype="float32")
    turns = read_rttm(realspeech("ami_dev00.rttm"))
    folder = tmp_path_factory.mktemp("voices")
    files = {}
    for who in PAIR:
        files[who] = folder / f"{who}.wav"
        soundfile.write(files[who], speech_alone(np.asarray(audio), turns, who), RATE, subtype="PCM_16")
    return files


class Bodies:
    """The JSON bodies a client POSTs, seen as they leave."""

    def __init__(self) -> None:
        self.sent: list[dict[str, object]] = []

    def __call__(self, request: httpx.Request) -> None:
        if request.method == "POST" and request.content:
            self.sent.append(json.loads(request.content)["input"])

    def enrolments(self) -> list[dict[str, object]]:
        return [body for body in self.sent if "enroll" in body]


@pytest.fixture
def watched(endpoint: str) -> Iterator[tuple[Client, Bodies]]:
    bodies = Bodies()
    with Client(base_url=endpoint, timeout=120) as client:
        client._http.event_hooks["request"] = [bodies]
        yield client, bodies


def named(speakers: list[object]) -> list[str]:
    return sorted(speaker.id for speaker in speakers if getattr(speaker, "match", None) is not None)  # type: ignore[attr-defined]


def _half_written(document: object, file: Any) -> None:
    file.write('{"version": 1, "voicepr')
    raise OSError(28, "No space left on device")


def test_recordings_are_enrolled_once_and_name_the_speakers(
    watched: tuple[Client, Bodies], sample_files: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, bodies = watched
    voices = {who: str(path) for who, path in sample_files.items()}
    later = client.transcribe(realspeech("ami_dev01.wav"), speakers=voices)
    assert "MEE009" in named(later.speakers)
    enrolments = bodies.enrolments()
    assert len(enrolments) == 1 and [sample["name"] for sample in enrolments[0]["enroll"]] == list(PAIR)  # type: ignore[union-attr]
    job = bodies.sent[-1]
    assert all(set(voice) == {"name", "voiceprint"} for voice in job["speakers"])  # type: ignore[union-attr]

    same = client.transcribe(realspeech("ami_dev00.wav"), speakers=voices)
    assert named(same.speakers) == sorted(PAIR)
    assert len(bodies.enrolments()) == 1  # the same recordings are not sent again
    enrolled = client.enroll(voices)
    assert len(bodies.enrolments()) == 1 and [voice.name for voice in enrolled] == list(PAIR)
    client.forget_voiceprints()
    assert client.enroll({"MEE009": voices["MEE009"]})[0].voiceprint == enrolled[0].voiceprint
    assert len(bodies.enrolments()) == 2

    saved = tmp_path / "voices.json"
    saved.write_text("{}")
    saved.chmod(0o644)  # an existing file readable by others: the saved one is not
    save_voiceprints(saved, enrolled)
    assert stat.S_IMODE(saved.stat().st_mode) == 0o600
    assert [path.name for path in tmp_path.iterdir()] == ["voices.json"]  # no temporary file left
    with monkeypatch.context() as patched:  # a save cut short (disk full) leaves the voiceprints saved before whole
        patched.setattr(voices_module.json, "dump", _half_written)
        with pytest.raises(OSError):
            save_voiceprints(saved, enrolled[:1])
    assert load_voiceprints(saved) == enrolled and [path.name for path in tmp_path.iterdir()] == ["voices.json"]
    assert load_voiceprints(saved) == enrolled
    with Client(base_url=client.base_url, timeout=120) as fresh:
        fresh_bodies = Bodies()
        fresh._http.event_hooks["request"] = [fresh_bodies]
        again = fresh.transcribe(realspeech("ami_dev00.wav"), speakers=load_voiceprints(saved))
    assert [(s.id, s.duration) for s in again.speakers] == [(s.id, s.duration) for s in same.speakers]
    assert fresh_bodies.enrolments() == []


def test_a_bad_sample_fails_before_the_recording_is_sent(watched: tuple[Client, Bodies], tmp_path: Path) -> None:
    client, bodies = watched
    quiet = tmp_path / "quiet.wav"
    soundfile.write(quiet, np.zeros(4 * RATE, dtype=np.float32), RATE)
    with pytest.raises(JobFailed) as failure:
        client.transcribe(realspeech("ami_dev00.wav"), speakers={"Quiet": quiet})
    assert (failure.value.code, failure.value.field) == ("invalid_input", "enroll.0")
    assert "the voice sample of 'Quiet'" in failure.value.message
    assert all("enroll" in body for body in bodies.sent)  # the recording itself was never sent
    with pytest.raises(InvalidInput, match="beam_sise"):  # a typo fails before any sample is sent
        client.transcribe(realspeech("ami_dev00.wav"), speakers={"Other": quiet}, beam_sise=2)
    assert len(bodies.sent) == 1
    with pytest.raises(InvalidInput, match=r"speakers\.0\.name"):
        client.transcribe(
            realspeech("ami_dev00.wav"), speakers={"SPEAKER_01": Voiceprint(embedding_model="m", vector=[1.0])}
        )
    broken = tmp_path / "broken.json"
    broken.write_text('{"version": 1, "voiceprints": [{"name": "A", "audio": "x.wav"}]}')
    with pytest.raises(InvalidInput, match="not only voiceprints"):
        load_voiceprints(broken)


def test_the_async_client_names_speakers_too(endpoint: str, sample_files: dict[str, Path]) -> None:
    enrolments: list[bytes] = []

    async def seen(request: httpx.Request) -> None:
        if b'"enroll"' in request.content:
            enrolments.append(request.content)

    async def run() -> list[str]:
        async with AsyncClient(base_url=endpoint, timeout=120) as client:
            client._http.event_hooks["request"] = [seen]
            voices = {who: path for who, path in sample_files.items()}
            at_once = await asyncio.gather(*(client.enroll(voices) for _ in range(3)))
            assert at_once[0] == at_once[1] == at_once[2]
            transcript = await client.transcribe(realspeech("ami_dev00.wav"), speakers=at_once[0])
            return named(transcript.speakers)

    assert asyncio.run(run()) == sorted(PAIR)
    assert len(enrolments) == 1  # three calls at once, one enrolment


def test_the_cli_enrols_voices_and_names_speakers(
    endpoint: str, sample_files: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    saved = tmp_path / "voices.json"
    samples = [f"{who}={path}" for who, path in sample_files.items()]
    assert main(["--base-url", endpoint, "enroll", *samples, "--out", str(saved)]) == 0
    assert "wrote 2 voiceprints" in capsys.readouterr().err
    code = main(["--base-url", endpoint, "transcribe", str(realspeech("ami_dev00.wav")), "--voiceprints", str(saved)])
    assert code == 0
    text = capsys.readouterr().out
    assert "MEE009" in text and "MEE012" in text and "SPEAKER_" not in text
    with pytest.raises(SystemExit) as usage:
        main(["--base-url", endpoint, "enroll", "Alice", "--out", str(saved)])
    assert usage.value.code == 2
    # Options that cannot combine fail before any sample is sent, and as an error, not a traceback.
    recording = str(realspeech("ami_dev00.wav"))
    assert (
        main(
            [
                "--base-url",
                "http://127.0.0.1:9",
                "transcribe",
                recording,
                "--speaker",
                f"A={recording}",
                "--multichannel",
            ]
        )
        == 1
    )
    assert "speakers: not with multichannel" in capsys.readouterr().err
    assert main(["--base-url", "http://127.0.0.1:9", "transcribe", recording, "--shards", "2", "--multichannel"]) == 1
    assert "shards do not combine with multichannel" in capsys.readouterr().err


def test_local_inference_enrols_and_names_speakers(sample_files: dict[str, Path], local_model: None) -> None:
    with Client(fallback="local_only") as local:
        transcript = local.transcribe(realspeech("ami_dev00.wav"), speakers=sample_files)
    assert named(transcript.speakers) == sorted(PAIR)
    assert transcript.job is not None and transcript.job.provider == "local"


def test_several_samples_of_one_person_are_all_enrolled() -> None:
    first, second = b"RIFF-one", b"RIFF-two"
    entries, recordings = split_voices({"Alice": [first, second]})
    assert [entry.name for entry in entries] == ["Alice", "Alice"] and len({r.key for r in recordings}) == 2
    parsed = build_parser().parse_args(["transcribe", "x.wav", "--speaker", "Al=a1.wav", "--speaker", "Al=a2.wav"])
    assert cli_voices(parsed) == {"Al": ["a1.wav", "a2.wav"]}


def test_voiceprints_from_a_newer_worker_still_load() -> None:
    answer = {
        "speakers": [{"name": "A", "voiceprint": {"embedding_model": "m", "vector": [1.0], "added_later": 1}}],
        "embedding_model": "m",
    }
    enrollment = enrollment_of(JobState(id="j", status="COMPLETED", output=answer))
    assert enrollment.speakers[0].voiceprint == Voiceprint(embedding_model="m", vector=[1.0])


def test_names_are_one_name_however_typed_and_safe_in_every_format() -> None:
    composed, decomposed = "Jos\u00e9", "Jose\u0301"
    assert SpeakerSample(name=decomposed, audio="a.wav").name == composed
    transcript = Transcript(
        text="hi",
        duration=1.0,
        segments=[Segment(id=0, start=0.0, end=1.0, text="hi", speaker="Bob <CFO> & co")],
    )
    assert "<v Bob &lt;CFO&gt; &amp; co>hi" in transcript.to_vtt()
