"""Named speakers: voices enrolled from real recordings, recognised in other real recordings, one name per speaker.

People are enrolled from their own reference speech where nobody else talks (tests/voices.py). ami_dev00 and
ami_dev01 are two excerpts of one meeting with the same two people (MEE009, MEE012); ami_trn04 and ami_trn08 are other
meetings whose speakers are enrolled nowhere.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
import soundfile

from scribepod.models import ErrorInfo, Transcript, TranscriptionRequest
from scribepod_worker import handler
from scribepod_worker.diarize import Diarization, SpeakerTurn
from scribepod_worker.engine import Engine
from scribepod_worker.errors import WorkerError
from scribepod_worker.identify import MATCH_THRESHOLD, EnrolledVoice, recognise, voiceprint
from scribepod_worker.stop import JobStopped, StopSignal
from voices import RATE, naming, owner, speech_alone, wav_base64

from conftest import b64, realspeech
from scoring import read_rttm
from servers import runpod_dev_server

PAIR = ("MEE009", "MEE012")


def clip(name: str) -> tuple[np.ndarray, list[tuple[float, float, str]]]:
    audio, rate = soundfile.read(realspeech(f"{name}.wav"), dtype="float32")
    assert rate == RATE
    return np.asarray(audio), read_rttm(realspeech(f"{name}.rttm"))


@pytest.fixture(scope="module")
def pair_samples() -> list[dict[str, str]]:
    """MEE009 and MEE012 as a caller would enrol them: their own speech in ami_dev00, nobody else talking."""
    audio, turns = clip("ami_dev00")
    return [{"name": who, "audio_base64": wav_base64(speech_alone(audio, turns, who))} for who in PAIR]


def ok(job_input: dict[str, Any]) -> dict[str, Any]:
    output = handler.handle({"id": "names", "input": job_input})
    assert "error" not in output, output.get("error")
    return output


def failed(job_input: dict[str, Any]) -> ErrorInfo:
    output = handler.handle({"id": "names", "input": job_input})
    assert set(output) == {"error"}, f"expected a failure, got {str(output)[:300]}"
    return ErrorInfo.model_validate(json.loads(output["error"]))


def test_people_enrolled_from_one_excerpt_are_named_in_another(
    worker: Engine, pair_samples: list[dict[str, str]]
) -> None:
    transcript = Transcript.model_validate(
        ok({"audio": str(realspeech("ami_dev01.wav")), "speakers": pair_samples, "output_formats": ["rttm"]})
    )
    _, turns = clip("ami_dev01")
    identification = transcript.identification
    assert identification is not None
    assert identification.enrolled == list(PAIR)
    assert identification.threshold == MATCH_THRESHOLD
    assert identification.embedding_model == worker.diarizer().embedding_model
    named = [speaker for speaker in transcript.speakers if speaker.match is not None]
    assert "MEE009" in [speaker.id for speaker in named], transcript.speakers  # the one who talks most
    for speaker in transcript.speakers:
        assert speaker.similarities is not None and set(speaker.similarities) == set(PAIR)
        if speaker.match is None:
            assert speaker.id.startswith("SPEAKER_")
            continue
        # A name goes only to the person it belongs to, from that person's sample, at or above the threshold.
        assert speaker.id == speaker.match.name == owner(transcript, turns, transcript.duration, speaker.id)
        assert speaker.match.sample == PAIR.index(speaker.id)
        assert speaker.match.similarity == speaker.similarities[speaker.id] >= MATCH_THRESHOLD
    assert sorted(identification.not_found) == sorted(set(PAIR) - {speaker.id for speaker in named})
    unnamed = sorted(speaker.id for speaker in transcript.speakers if speaker.match is None)
    assert unnamed == [f"SPEAKER_{number:02d}" for number in range(len(unnamed))]  # numbered among themselves
    assert {segment.speaker for segment in transcript.segments} <= {speaker.id for speaker in transcript.speakers}
    assert "MEE009" in transcript.formats["rttm"]
    # The builtin diarizer puts much of MEE012's speech in MEE009's cluster in this excerpt (README, "Named
    # speakers"): names follow clusters, so that speech is named MEE009; MEE009's own is named right.
    scores = naming(transcript, turns, transcript.duration, set(PAIR))
    assert scores["MEE009"]["right"] >= 0.5 * scores["MEE009"]["seconds"], scores
    assert scores["MEE009"]["named_wrongly"] == 0, scores


def test_speakers_of_other_meetings_take_no_enrolled_name(worker: Engine, pair_samples: list[dict[str, str]]) -> None:
    for name in ("ami_trn04", "ami_trn08"):
        transcript = Transcript.model_validate(ok({"audio": str(realspeech(f"{name}.wav")), "speakers": pair_samples}))
        assert transcript.speakers, name
        assert all(speaker.match is None and speaker.id.startswith("SPEAKER_") for speaker in transcript.speakers)
        assert all(max((s.similarities or {}).values()) < MATCH_THRESHOLD for s in transcript.speakers)
        assert transcript.identification is not None
        assert transcript.identification.not_found == list(PAIR)


def test_an_enroll_job_gives_voiceprints_that_name_speakers_as_the_recordings_do(
    worker: Engine, pair_samples: list[dict[str, str]]
) -> None:
    enrollment = ok({"enroll": pair_samples})
    assert set(enrollment) == {"speakers", "embedding_model", "timings"}
    prints = enrollment["speakers"]
    assert [voice["name"] for voice in prints] == list(PAIR)
    for voice in prints:
        assert set(voice) == {"name", "voiceprint"}
        assert voice["voiceprint"]["embedding_model"] == enrollment["embedding_model"]
        assert np.linalg.norm(voice["voiceprint"]["vector"]) == pytest.approx(1.0, abs=1e-4)
        assert voice["voiceprint"]["seconds"] > 3
    audio = str(realspeech("ami_dev00.wav"))
    by_recording = Transcript.model_validate(ok({"audio": audio, "speakers": pair_samples}))
    by_voiceprint = Transcript.model_validate(ok({"audio": audio, "speakers": prints}))
    # In the excerpt they were enrolled from, both people are found, each under their own name.
    assert sorted(s.id for s in by_recording.speakers if s.match is not None) == sorted(PAIR)
    assert [s.id for s in by_voiceprint.speakers] == [s.id for s in by_recording.speakers]
    for first, second in zip(by_recording.speakers, by_voiceprint.speakers, strict=True):
        assert first.similarities is not None and second.similarities is not None
        for name in PAIR:
            assert second.similarities[name] == pytest.approx(first.similarities[name], abs=1e-3)
    assert "enroll" in by_recording.timings and "enroll" in by_voiceprint.timings


def test_a_job_without_speakers_keeps_its_output_as_before(worker: Engine) -> None:
    output = ok({"audio_base64": b64(realspeech("jfk.wav"))})
    assert "identification" not in output
    assert all(set(speaker) == {"id", "duration"} for speaker in output["speakers"])


def test_names_go_one_to_one_best_pair_first() -> None:
    alice, bob = np.array([1.0, 0.0, 0.0]), np.array([0.0, 1.0, 0.0])
    centroids = {
        "a": np.array([0.9, 0.1, 0.3]),  # closest to Alice
        "b": np.array([0.8, 0.55, 0.0]),  # close to Alice too, but closer to Bob than "a" is
        "c": np.array([0.0, 0.0, 1.0]),  # nobody enrolled
    }
    voices = [EnrolledVoice("Alice", 0, alice), EnrolledVoice("Bob", 1, bob), EnrolledVoice("Alice", 2, -alice)]
    recognition = recognise(centroids, voices, "model", 0.5)
    assert recognition.names == {"a": "Alice", "b": "Bob"}
    assert recognition.matches["a"].sample == 0  # the better of Alice's two samples
    assert recognition.identification.enrolled == ["Alice", "Bob"]
    assert recognition.identification.not_found == []
    assert recognition.similarities["c"] == {"Alice": 0.0, "Bob": 0.0}
    # A speaker keeps its best name even where another assignment would name more speakers: "x" is 0.9 from Alice
    # and 0.7 from Bob, "y" 0.75 from Alice and 0.2 from Bob; maximising the sum would name "x" Bob to give "y" Alice.
    bob = np.array([0.5, np.sqrt(0.75), 0.0])
    crossed = recognise(
        {"x": np.array([0.9, 0.2887, 0.3266]), "y": np.array([0.75, -0.2021, 0.6298])},
        [EnrolledVoice("Alice", 0, np.array([1.0, 0.0, 0.0])), EnrolledVoice("Bob", 1, bob)],
        "model",
        0.5,
    )
    assert crossed.similarities["x"] == pytest.approx({"Alice": 0.9, "Bob": 0.7}, abs=1e-3)
    assert crossed.names == {"x": "Alice"}
    stricter = recognise(centroids, voices, "model", 0.9)
    assert stricter.names == {"a": "Alice"}  # "b" is 0.57 from Bob and 0.82 from Alice: it stays unnamed
    assert stricter.identification.not_found == ["Bob"]


def test_a_voiceprint_of_another_model_or_shape_is_refused(worker: Engine, pair_samples: list[dict[str, str]]) -> None:
    audio = str(realspeech("ami_dev00.wav"))
    vector = [0.1] * 192
    error = failed(
        {"audio": audio, "speakers": [{"name": "A", "voiceprint": {"embedding_model": "x", "vector": vector}}]}
    )
    assert (error.code, error.field) == ("invalid_input", "speakers.0.voiceprint.embedding_model")
    assert "'x'" in error.message and worker.diarizer().embedding_model in error.message
    assert "0.1" not in error.message  # a voiceprint's values are never echoed
    model = worker.diarizer().embedding_model
    wrong_shape = {"name": "B", "voiceprint": {"embedding_model": model, "vector": [0.1] * 10}}
    error = failed({"audio": audio, "speakers": [pair_samples[0], wrong_shape]})
    assert (error.code, error.field) == ("invalid_input", "speakers.1.voiceprint.vector")
    assert "has 10 values" in error.message and "gives 192" in error.message
    silence = wav_base64(np.zeros(5 * RATE, dtype=np.float32))  # no speaker to compare it with: refused all the same
    error = failed({"audio_base64": silence, "speakers": [wrong_shape]})
    assert (error.code, error.field) == ("invalid_input", "speakers.0.voiceprint.vector")


def test_bad_samples_are_refused_naming_the_sample(worker: Engine, tmp_path: Path) -> None:
    audio = str(realspeech("ami_dev00.wav"))
    silence = wav_base64(np.zeros(5 * RATE, dtype=np.float32))
    error = failed({"audio": audio, "speakers": [{"name": "Quiet", "audio_base64": silence}]})
    assert (error.code, error.field) == ("invalid_input", "speakers.0")
    assert "0.0 s of speech" in error.message
    long_sample = wav_base64(np.resize(clip("ami_dev00")[0], 150 * RATE))
    error = failed({"audio": audio, "speakers": [{"name": "Long", "audio_base64": long_sample}]})
    assert (error.code, error.field) == ("audio_too_long", "speakers.0.audio_base64")
    assert "a voice sample may last 120 s" in error.message
    error = failed({"enroll": [{"name": "Broken", "audio_base64": "bm90IGF1ZGlv"}]})
    assert error.code == "audio_decode_failed" and error.field is not None and error.field.startswith("enroll.0")
    missing = tmp_path / "nobody.wav"
    error = failed({"audio": audio, "speakers": [{"name": "Gone", "audio": str(missing)}]})
    assert error.field == "speakers.0.audio" and str(tmp_path) not in error.message


@pytest.mark.parametrize(
    ("job_input", "field", "says"),
    [
        ({"speakers": [{"name": "SPEAKER_03", "audio": "a.wav"}]}, "speakers.0.name", "SPEAKER_00"),
        ({"speakers": [{"name": "A", "audio": "a.wav", "audio_base64": "AAAA"}]}, "speakers.0", "exactly one"),
        ({"speakers": [{"name": "A", "audio": "a.wav"}], "diarize": False}, "speakers", "needs diarize"),
        ({"speakers": [{"name": "A", "audio": "a.wav"}], "multichannel": True}, "speakers", "channel_names"),
        ({"speaker_threshold": 0.7}, "speaker_threshold", "needs speakers"),
        ({"speakers": []}, "speakers", "at least 1"),
        (
            {"speakers": [{"name": "A", "voiceprint": {"embedding_model": "m", "vector": [0.5, float("nan")]}}]},
            "speakers.0.voiceprint.vector",
            "finite",
        ),
        ({"speakers": [{"name": " A", "audio": "a.wav"}]}, "speakers.0.name", "spaces"),
        (
            {"speakers": [{"name": "A", "voiceprint": {"embedding_model": "m", "vector": [5e-324] * 192}}]},
            "speakers.0.voiceprint.vector",
            "unit length",
        ),
    ],
)
def test_requests_with_bad_speakers_are_refused_naming_the_field(
    worker: Engine, job_input: dict[str, Any], field: str, says: str
) -> None:
    error = failed({"audio": "https://example.com/a.wav", **job_input})
    assert (error.code, error.field) == ("invalid_input", field)
    assert says in error.message


def test_an_enroll_job_takes_recordings_only(worker: Engine) -> None:
    error = failed({"enroll": [{"name": "A", "voiceprint": {"embedding_model": "m", "vector": [1.0]}}]})
    assert (error.code, error.field) == ("invalid_input", "enroll")
    error = failed({"enroll": [{"name": "A", "audio": "a.wav"}], "language": "en"})
    assert error.field == "language" and "unknown field" in error.message


def test_samples_and_voiceprints_stay_out_of_the_logs(
    worker: Engine, pair_samples: list[dict[str, str]], caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    prints = ok({"enroll": pair_samples})["speakers"]
    ok({"audio": str(realspeech("ami_dev01.wav")), "speakers": [*prints, {"name": "Extra", **pair_samples[0]}]})
    failed({"audio": "https://example.com/a.wav", "speakers": [{**prints[0], "name": "SPEAKER_1"}]})
    logged = caplog.text
    for sample in pair_samples:
        assert sample["audio_base64"][100:160] not in logged
    for voice in prints:
        for value in voice["voiceprint"]["vector"][:20]:
            assert repr(value) not in logged
    # the `worker` fixture checks that no temporary file (a sample's audio included) is left behind


def test_the_deployed_worker_logs_no_sample_voiceprint_or_transcript(
    pair_samples: list[dict[str, str]], tmp_path: Path
) -> None:
    """RunPod's logger logs every job's input and output whole at DEBUG, its default: the worker sets INFO."""
    log = tmp_path / "worker.log"
    with runpod_dev_server(log=log) as base:
        enrolled = httpx.post(f"{base}/runsync", json={"input": {"enroll": pair_samples}}, timeout=120).json()
        prints = enrolled["output"]["speakers"]
        job = {"input": {"audio_base64": b64(realspeech("jfk.wav")), "speakers": prints}}
        transcript = httpx.post(f"{base}/runsync", json=job, timeout=120).json()["output"]
    logged = log.read_text(errors="replace")
    assert "Started." in logged or "Finished." in logged, logged[-2000:]  # the log was captured at all
    assert pair_samples[0]["audio_base64"][1000:1060] not in logged
    for value in prints[0]["voiceprint"]["vector"][:10]:
        assert repr(value) not in logged
    assert transcript["text"] and transcript["text"][:40] not in logged


def test_a_stop_during_enrolment_ends_the_job(engine: Engine, pair_samples: list[dict[str, str]]) -> None:
    """Stopped while a minute-long sample is being diarized: the job ends there, before the recording is decoded."""
    audio, turns = clip("ami_dev00")
    long_sample = {
        "name": "MEE009",
        "audio_base64": wav_base64(np.resize(speech_alone(audio, turns, "MEE009"), 60 * RATE)),
    }
    request = TranscriptionRequest.model_validate(
        {"audio": str(realspeech("ami_dev01.wav")), "speakers": [long_sample]}
    )
    stop = StopSignal()
    stages: list[str] = []
    timer = threading.Timer(0.6, stop.set, ["test"])
    timer.start()
    started = time.perf_counter()
    with pytest.raises(JobStopped):
        engine.run(request, progress=lambda stage, percent: stages.append(stage), stop=stop)
    timer.cancel()
    assert stages == ["enroll"], stages  # never reached the recording's decoding
    assert time.perf_counter() - started < 0.6 + 1.5


def test_an_official_worker_request_with_speakers_fails_on_its_own_fields(
    worker: Engine, pair_samples: list[dict[str, str]]
) -> None:
    """`translate: true` (the official worker's) runs a second pass without speakers: its error, not `internal`."""
    error = failed({"audio": str(realspeech("jfk.wav")), "translate": True, "speakers": pair_samples[:1]})
    assert (error.code, error.field) == ("invalid_input", "translate")


class _NoEmbeddings:
    """A diarizer that finds speech but gives no speaker embeddings, as pyannote 3.x."""

    name = "pyannote"
    embedding_model = ""
    embedding_size = None

    def diarize(self, audio: np.ndarray, hint: object, progress: object = None) -> Diarization:
        return Diarization([SpeakerTurn(0.0, 5.0, "A")])


def test_a_diarizer_without_embeddings_says_it_cannot_recognise_voices() -> None:
    with pytest.raises(WorkerError) as refused:
        voiceprint(_NoEmbeddings(), np.zeros(RATE, dtype=np.float32), "speakers.0")  # type: ignore[arg-type]
    assert refused.value.code == "model_unavailable" and "gives no speaker embeddings" in refused.value.message


def test_an_error_lists_at_most_twenty_problems() -> None:
    error = WorkerError.invalid_fields([(f"speakers.0.voiceprint.vector.{i}", "not a number") for i in range(50)])
    assert error.message.startswith("50 invalid fields: not a number;") and error.message.endswith("; and 30 more")
