"""The wire models and renderers: what the contract promises callers, held to exact outputs."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from scribepod.models import Segment, Transcript, TranscriptionRequest, Turn, Word


def transcript() -> Transcript:
    return Transcript(
        text="Hello there. Hi <you> & me.",
        language="en",
        duration=5.0,
        segments=[
            Segment(
                id=0,
                start=1.02,
                end=2.5,
                text="Hello there.",
                speaker="SPEAKER_00",
                words=[Word(start=1.02, end=1.3, word=" Hello", probability=0.9, speaker="SPEAKER_00")],
            ),
            Segment(id=1, start=2.6, end=3661.25, text="Hi <you> & me.", speaker="SPEAKER_01"),
        ],
        turns=[Turn(start=0.98, end=2.55, speaker="SPEAKER_00"), Turn(start=2.5, end=3661.3, speaker="SPEAKER_01")],
    )


def test_srt() -> None:
    assert transcript().to_srt() == (
        "1\n00:00:01,020 --> 00:00:02,500\n[SPEAKER_00] Hello there.\n\n"
        "2\n00:00:02,600 --> 01:01:01,250\n[SPEAKER_01] Hi <you> & me.\n"
    )


def test_vtt_escapes_and_tags_voices() -> None:
    assert transcript().to_vtt() == (
        "WEBVTT\n\n00:00:01.020 --> 00:00:02.500\n<v SPEAKER_00>Hello there.\n\n"
        "00:00:02.600 --> 01:01:01.250\n<v SPEAKER_01>Hi &lt;you&gt; &amp; me.\n"
    )


def test_text_groups_consecutive_segments_of_a_speaker() -> None:
    t = transcript()
    t.segments.append(Segment(id=2, start=3662, end=3663, text="Still me.", speaker="SPEAKER_01"))
    assert t.to_text() == "SPEAKER_00: Hello there.\nSPEAKER_01: Hi <you> & me. Still me.\n"


def test_text_without_speakers() -> None:
    t = Transcript(
        text="a b",
        duration=2,
        segments=[Segment(id=0, start=0, end=1, text="a"), Segment(id=1, start=1, end=2, text="b")],
    )
    assert t.to_text() == "a\nb\n"


def test_rttm_renders_the_turns() -> None:
    assert transcript().to_rttm("meeting") == (
        "SPEAKER meeting 1 0.980 1.570 <NA> <NA> SPEAKER_00 <NA> <NA>\n"
        "SPEAKER meeting 1 2.500 3658.800 <NA> <NA> SPEAKER_01 <NA> <NA>\n"
    )
    with pytest.raises(ValueError, match="whitespace"):
        transcript().to_rttm("my meeting")


def test_empty_transcript_renders_empty_documents() -> None:
    empty = Transcript(text="", duration=3.0)
    assert (empty.to_srt(), empty.to_text(), empty.to_rttm(), empty.to_vtt()) == ("", "", "", "WEBVTT\n")


def test_response_keeps_fields_from_a_newer_worker() -> None:
    parsed = Transcript.model_validate({"text": "", "duration": 1.0, "summary": "new in v2"})
    assert parsed.model_dump()["summary"] == "new in v2"


def test_request_defaults_match_the_contract() -> None:
    request = TranscriptionRequest(audio="https://example.com/a.wav")
    options = request.options()
    assert (options.task, options.word_timestamps, options.vad_filter, options.beam_size, options.diarize) == (
        "transcribe",
        True,
        True,
        5,
        True,
    )
    assert options.output_formats == [] and options.batch_size is None and options.temperature is None


@pytest.mark.parametrize(
    "bad",
    [
        {"num_speakers": 5, "max_speakers": 3},
        {"num_speakers": 1, "min_speakers": 2},
        {"output_formats": ["srt", "srt"]},
        {"temperature": []},
        {"temperature": [0.0, -0.2]},
        {"language": "x"},
        {"batch_size": 0},
    ],
)
def test_request_rejects_impossible_values(bad: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        TranscriptionRequest.model_validate({"audio": "https://example.com/a.wav", **bad})


def test_temperature_accepts_a_number_or_a_ladder() -> None:
    assert TranscriptionRequest(audio="x", temperature=0).temperature == 0
    assert TranscriptionRequest.model_validate({"audio": "x", "temperature": [0.0, 0.4]}).temperature == [0.0, 0.4]
