"""Live transcripts (README, "Live transcripts"): segments while a long job runs, by the ways that work on RunPod.

Real recordings (AMI meeting excerpts, joined to three minutes so that the ASR decodes them in several batches),
the real worker behind our endpoint and behind runpod-python's own development server, the real SDK.
"""

from __future__ import annotations

import base64
import json
import time
import wave
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any

import httpx
import pytest

from scribepod import Client
from scribepod._core import JobState, LiveSegments, transcript_of
from scribepod.errors import JobFailed
from scribepod.models import Segment, Transcript
from test_cli import scribepod

from conftest import realspeech
from servers import local_endpoint, runpod_dev_server

MEETING = ("ami_dev00", "ami_dev01", "ami_trn00", "ami_trn04", "ami_trn06", "ami_trn08")
# Two chunks per batch: on CPU each batch's segments then come seconds apart (a GPU decodes bigger batches).
LIVE_JOB: dict[str, Any] = {"batch_size": 2}


@pytest.fixture(scope="module")
def meeting(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Three minutes of AMI meeting audio: six excerpts, one after the other."""
    path = tmp_path_factory.mktemp("live") / "meeting.wav"
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        for name in MEETING:
            with wave.open(str(realspeech(f"{name}.wav"))) as clip:
                assert (clip.getnchannels(), clip.getframerate()) == (1, 16000)
                out.writeframes(clip.readframes(clip.getnframes()))
    return path


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with local_endpoint() as base:
        yield base


def words(segments: list[Segment]) -> list[str]:
    return " ".join(segment.text for segment in segments).split()


def assert_covers_once(streamed: list[Segment], transcript: Transcript) -> None:
    """Provisional segments then the final ones after them: the transcript's words, each once, in order."""
    assert words(streamed) == transcript.text.split()
    starts = [segment.start for segment in streamed]
    assert starts == sorted(starts)


def test_job_stream_yields_segments_while_the_job_runs(served: str, meeting: Path) -> None:
    with Client(base_url=served) as client:
        job = client.submit(meeting, **LIVE_JOB)
        streamed: list[Segment] = []
        seen_running: list[Segment] = []
        for segment in job.stream():
            streamed.append(segment)
            if client.job(job.id).status() == "IN_PROGRESS":
                seen_running.append(segment)
        requests_before = len(streamed)
        transcript = job.wait()
    assert seen_running, "no segment came before the job ended"
    assert all(segment.speaker is None and not segment.words for segment in seen_running), "provisional"
    assert [segment.id for segment in seen_running] == list(range(len(seen_running)))
    assert_covers_once(streamed, transcript)
    assert len(transcript.speakers) >= 2 and all(segment.speaker for segment in transcript.segments)
    assert transcript.job is not None and transcript.job.provider == "endpoint"
    assert requests_before == len(streamed)


def test_polling_status_every_5_s_misses_no_segment(served: str, meeting: Path) -> None:
    """Each /status reading carries every segment so far (ids 0..n-1), so a 5 s poller loses none."""
    audio = base64.b64encode(meeting.read_bytes()).decode()
    job_id = httpx.post(f"{served}/run", json={"input": {"audio_base64": audio, **LIVE_JOB}}).json()["id"]
    provisional: dict[int, Segment] = {}
    polls_with_segments = 0
    while True:
        state = httpx.get(f"{served}/status/{job_id}").json()
        if state["status"] != "IN_PROGRESS" and state["status"] != "IN_QUEUE":
            break
        update = state.get("output") or {}
        segments = [Segment.model_validate(raw) for raw in update.get("segments", [])]
        assert [segment.id for segment in segments] == list(range(len(segments))), "every segment so far"
        assert len(segments) >= len(provisional), "never fewer than before"
        polls_with_segments += bool(segments)
        provisional.update((segment.id, segment) for segment in segments)
        time.sleep(5)
    assert state["status"] == "COMPLETED", state
    assert polls_with_segments >= 1, "no poll saw the job's segments while it ran"
    transcript = Transcript.model_validate(state["output"])
    before = [provisional[i] for i in sorted(provisional)]
    rest = [segment for segment in transcript.segments if segment.start >= before[-1].end]
    assert_covers_once([*before, *rest], transcript)


def test_on_segment_and_the_cli_live_flag(served: str, meeting: Path) -> None:
    heard: list[Segment] = []
    with Client(base_url=served) as client:
        transcript = client.transcribe(meeting, on_segment=heard.append, **LIVE_JOB)
    assert_covers_once(heard, transcript)

    result = scribepod("--base-url", served, "transcribe", "--live", str(realspeech("jfk.wav")))
    assert result.returncode == 0, result.stderr
    live, final = result.stdout.split(f"==> {realspeech('jfk.wav')} <==\n")
    lines = live.splitlines()
    assert lines and all(line.startswith("[") and "] " in line for line in lines), result.stdout
    assert "ask not what your country can do for you" in live.lower()
    assert final.split()[0].startswith("SPEAKER_00"), "then the exact transcript, with speakers"
    assert "done (endpoint)" in result.stderr


# ---- runpod-python's own development server (`--rp_serve_api`) --------------------------------------------------


def runpod_api(stream: bool) -> AbstractContextManager[str]:
    """The worker under runpod-python's development server; `stream` selects RunPod's streaming mode."""
    return runpod_dev_server({"SCRIBEPOD_STREAM": "1" if stream else "0"})


@pytest.fixture(scope="module")
def streaming_api() -> Iterator[str]:
    with runpod_api(stream=True) as base:
        yield base


def test_streaming_mode_on_runpods_server_streams_segments_then_the_transcript(
    streaming_api: str, meeting: Path
) -> None:
    """SCRIBEPOD_STREAM=1: a generator handler. runpod's server answers /stream only for those (it runs the job
    whole, then returns every item): the updates, each with its new segments, then the transcript."""
    audio = base64.b64encode(meeting.read_bytes()).decode()
    job_id = httpx.post(f"{streaming_api}/run", json={"input": {"audio_base64": audio, **LIVE_JOB}}).json()["id"]
    answer = httpx.post(f"{streaming_api}/stream/{job_id}", timeout=600).json()  # runpod serves it as POST
    assert answer["status"] == "COMPLETED", answer
    items = [item["output"] for item in answer["stream"]]
    updates, transcript = items[:-1], Transcript.model_validate(items[-1])
    provisional = [Segment.model_validate(raw) for update in updates for raw in update["segments"]]
    assert sum(bool(update["segments"]) for update in updates) >= 2, "segments came in several updates"
    assert [segment.id for segment in provisional] == list(range(len(provisional))), "each once, in order"
    rest = [segment for segment in transcript.segments if segment.start >= provisional[-1].end]
    assert_covers_once([*provisional, *rest], transcript)


def test_streaming_mode_runsync_answers_every_item_and_the_sdk_reads_it(streaming_api: str, meeting: Path) -> None:
    """What a plain /runsync caller gets in streaming mode: a list, the transcript last. The SDK reads both the
    transcript and the live segments from it; a failed job is still a typed error."""
    heard: list[Segment] = []
    with Client(base_url=streaming_api, request_timeout=600) as client:  # its /status runs the whole job
        transcript = client.transcribe(meeting, on_segment=heard.append, **LIVE_JOB)
        assert_covers_once(heard, transcript)
        assert heard[0].speaker is None, "the first segments were the provisional ones"
        plain = httpx.post(f"{streaming_api}/runsync", json={"input": {"audio": "s3://only-bucket"}}, timeout=60)
        output = plain.json()["output"]
        assert isinstance(output, list) and json.loads(output[-1]["error"])["field"] == "audio"
        with pytest.raises(JobFailed) as failure:
            client.transcribe(realspeech("jfk.wav"), model="no-such-model")
    assert failure.value.code == "model_unavailable"


def test_default_mode_on_runpods_server_gives_on_segment_the_final_segments(sample_dir: Path) -> None:
    """runpod's server has no progress channel, so in the default mode a caller hears the segments at the end,
    with their speakers: the same callback, nothing lost."""
    heard: list[Any] = []
    with runpod_api(stream=False) as base, Client(base_url=base, request_timeout=600) as client:
        transcript = client.transcribe(sample_dir / "sample.wav", on_segment=heard.append)
    assert heard == transcript.segments and all(segment.speaker for segment in heard)


def test_live_segments_are_taken_once_from_any_mix_of_readings_then_the_rest_of_the_final_ones() -> None:
    def raw(number: int, start: float, end: float, text: str) -> dict[str, Any]:
        return {"id": number, "start": start, "end": end, "text": text}

    live = LiveSegments()
    first = live.provisional([{"stage": "transcribe", "percent": 20.0, "segments": [raw(0, 0.0, 1.0, "a")]}])
    # A later /status reading (all so far) and a /stream item (the new one) repeat segments: each is taken once.
    later = live.provisional(
        [{"segments": [raw(0, 0.0, 1.0, "a"), raw(1, 1.0, 2.0, "b c")]}, {"segments": [raw(1, 1.0, 2.0, "b c")]}]
    )
    assert [segment.text for segment in [*first, *later]] == ["a", "b c"]
    final = Transcript(
        text="a b c d",
        duration=3.0,
        segments=[
            Segment(id=0, start=0.0, end=1.0, text="a", speaker="SPEAKER_00"),
            Segment(id=1, start=1.0, end=1.5, text="b", speaker="SPEAKER_00"),  # "b c" split at a speaker change
            Segment(id=2, start=1.5, end=2.0, text="c", speaker="SPEAKER_01"),
            Segment(id=3, start=2.0, end=3.0, text="d", speaker="SPEAKER_01"),
        ],
    )
    assert [segment.text for segment in live.rest(final)] == ["d"]
    assert live.rest(final) == final.segments[3:] and LiveSegments().rest(final) == final.segments


def test_a_streaming_mode_output_list_reads_as_its_transcript_or_its_error() -> None:
    transcript = {"text": "a", "duration": 1.0, "segments": [{"id": 0, "start": 0.0, "end": 1.0, "text": "a"}]}
    update = {"stage": "transcribe", "percent": 50.0, "segments": transcript["segments"]}
    state = JobState(id="j", status="COMPLETED", output=[update, transcript])
    assert state.updates == [update] and transcript_of(state).text == "a"
    error = json.dumps({"code": "invalid_input", "message": "bad", "field": "audio"})
    with pytest.raises(JobFailed, match="bad"):
        transcript_of(JobState(id="j", status="COMPLETED", output=[{"error": error}]))
