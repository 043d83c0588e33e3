"""Speaker attribution: overlap, nearest turn, splitting at speaker changes, labels by first appearance."""

from __future__ import annotations

from scribepod_worker.attribute import attribute_speakers, relabel
from scribepod_worker.diarize.base import SpeakerTurn
from scribepod_worker.transcribe import AsrSegment, AsrWord


def words(*spans: tuple[float, float, str]) -> tuple[AsrWord, ...]:
    return tuple(AsrWord(start=s, end=e, word=f" {w}", probability=0.9) for s, e, w in spans)


def test_labels_follow_first_appearance_and_skip_empty_turns() -> None:
    turns = relabel([SpeakerTurn(5, 6, "b"), SpeakerTurn(1, 2, "z"), SpeakerTurn(3, 3, "q"), SpeakerTurn(7, 8, "z")])
    assert [(t.start, t.speaker) for t in turns] == [(1, "SPEAKER_00"), (5, "SPEAKER_01"), (7, "SPEAKER_00")]


def test_segment_is_split_where_the_speaker_changes() -> None:
    segment = AsrSegment(
        start=0.0,
        end=4.0,
        text=" Hello there. Hi back.",
        avg_logprob=-0.2,
        no_speech_prob=0.01,
        words=words((0.0, 0.5, "Hello"), (0.5, 1.0, "there."), (2.0, 2.4, "Hi"), (2.4, 3.9, "back.")),
    )
    result = attribute_speakers([segment], [SpeakerTurn(0.0, 1.6, "a"), SpeakerTurn(1.6, 4.0, "b")])
    assert [(s.text, s.speaker, s.start, s.end) for s in result.segments] == [
        ("Hello there.", "SPEAKER_00", 0.0, 1.0),
        ("Hi back.", "SPEAKER_01", 2.0, 3.9),
    ]
    assert [s.id for s in result.segments] == [0, 1]
    assert all({w.speaker for w in s.words} == {s.speaker} for s in result.segments)
    assert result.segments[1].avg_logprob == -0.2
    assert [(s.id, s.duration) for s in result.speakers] == [("SPEAKER_00", 1.6), ("SPEAKER_01", 2.4)]


def test_greatest_overlap_wins_among_overlapping_turns() -> None:
    segment = AsrSegment(start=0, end=3, text=" word", words=words((1.0, 2.0, "word")))
    turns = [SpeakerTurn(0.0, 1.3, "long"), SpeakerTurn(0.5, 1.2, "short"), SpeakerTurn(1.1, 2.5, "mid")]
    assert attribute_speakers([segment], turns).segments[0].speaker == "SPEAKER_02"  # "mid" covers 0.9 s


def test_long_turn_that_started_early_still_counts() -> None:
    # The best turn starts long before the word, with shorter turns between: bisection must look past them.
    turns = [SpeakerTurn(0.0, 100.0, "host"), SpeakerTurn(10.0, 11.0, "guest"), SpeakerTurn(20.0, 21.0, "guest")]
    segment = AsrSegment(start=50, end=51, text=" yes", words=words((50.0, 51.0, "yes")))
    assert attribute_speakers([segment], turns).segments[0].speaker == "SPEAKER_00"


def test_word_between_turns_goes_to_the_nearest() -> None:
    turns = [SpeakerTurn(0.0, 1.0, "a"), SpeakerTurn(5.0, 6.0, "b")]
    near_b = AsrSegment(start=4.0, end=4.5, text=" um", words=words((4.0, 4.5, "um")))
    near_a = AsrSegment(start=1.2, end=1.4, text=" uh", words=words((1.2, 1.4, "uh")))
    after_all = AsrSegment(start=9.0, end=9.5, text=" bye", words=words((9.0, 9.5, "bye")))
    result = attribute_speakers([near_b, near_a, after_all], turns)
    assert [(s.text, s.speaker) for s in result.segments] == [
        ("uh", "SPEAKER_00"),
        ("um", "SPEAKER_01"),
        ("bye", "SPEAKER_01"),
    ]


def test_segments_without_words_use_their_own_span() -> None:
    turns = [SpeakerTurn(0.0, 1.0, "a"), SpeakerTurn(1.0, 9.0, "b")]
    result = attribute_speakers([AsrSegment(start=2.0, end=8.0, text=" long answer")], turns)
    assert (result.segments[0].speaker, result.segments[0].text) == ("SPEAKER_01", "long answer")


def test_no_diarization_leaves_speakers_null() -> None:
    result = attribute_speakers([AsrSegment(start=0, end=1, text=" hi", words=words((0.0, 1.0, "hi")))], None)
    assert result.segments[0].speaker is None and result.segments[0].words[0].speaker is None
    assert result.speakers == [] and result.turns == []


def test_overlapping_segments_are_clipped_in_time_order() -> None:
    first = AsrSegment(start=0.0, end=2.5, text=" one", words=words((0.0, 2.5, "one")))
    second = AsrSegment(start=2.0, end=3.0, text=" two", words=words((2.0, 3.0, "two")))
    result = attribute_speakers([second, first], [SpeakerTurn(0, 3, "a")])
    assert [(s.text, s.start, s.end) for s in result.segments] == [("one", 0.0, 2.5), ("two", 2.5, 3.0)]


def test_speaker_time_counts_own_overlaps_once() -> None:
    result = attribute_speakers([], [SpeakerTurn(0, 4, "a"), SpeakerTurn(2, 6, "a"), SpeakerTurn(3, 5, "b")])
    assert [(s.id, s.duration) for s in result.speakers] == [("SPEAKER_00", 6.0), ("SPEAKER_01", 2.0)]
