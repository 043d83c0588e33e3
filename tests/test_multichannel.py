"""Multichannel recordings: real speech played one speaker per channel from its RTTM, through the real handler.

The stereo files are the pyannote sample and an AMI excerpt with each reference speaker's turns on their own
channel (silence elsewhere), so the RTTM says which channel every word must land on.
"""

from __future__ import annotations

import json
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import soundfile

from scribepod import Client
from scribepod._sources import compress_for_upload
from scribepod.cli import build_parser
from scribepod.cli import request_options as cli_options
from scribepod.models import ErrorInfo, Transcript, TranscriptionOptions, TranscriptionRequest, Turn
from scribepod_worker import handler
from scribepod_worker.channels import comparable_text, dominance, is_call, remove_crosstalk
from scribepod_worker.decode import SAMPLE_RATE, decode_audio
from scribepod_worker.engine import Engine
from scribepod_worker.stop import JobStopped, StopSignal
from scribepod_worker.transcribe import AsrSegment, AsrWord
from voices import owner, speaker_channels, speakers_by_first_turn

from conftest import ffmpeg, realspeech, with_settings
from scoring import read_rttm

Reference = list[tuple[float, float, str]]


@dataclass(frozen=True)
class Call:
    """A stereo file made from a real recording, and which reference speaker each channel holds."""

    path: Path
    reference: Reference
    speakers: list[str]  # by channel


def one_speaker_per_channel(recording: Path, rttm: Path, out: Path, bleed_db: float | None = None) -> Call:
    """Each of the first two RTTM speakers (by first turn) on a channel of their own; with `bleed_db`, each channel
    also carries the other at that level (a headset hearing the other side)."""
    audio = decode_audio(recording, 600.0)
    reference = read_rttm(rttm)
    speakers = speakers_by_first_turn(reference)[:2]
    channels = speaker_channels(audio, reference, speakers)
    if bleed_db is not None:
        gain = 10.0 ** (bleed_db / 20.0)
        channels = [channels[0] + gain * channels[1], channels[1] + gain * channels[0]]
    soundfile.write(out, np.stack(channels, axis=1), SAMPLE_RATE, subtype="PCM_16")
    return Call(out, reference, speakers)


@pytest.fixture(scope="module")
def sample_call(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Call:
    out = tmp_path_factory.mktemp("calls") / "sample_stereo.wav"
    return one_speaker_per_channel(sample_dir / "sample.wav", sample_dir / "sample.rttm", out)


@pytest.fixture(scope="module")
def bleeding_call(sample_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Call:
    out = tmp_path_factory.mktemp("calls") / "sample_bleed.wav"
    return one_speaker_per_channel(sample_dir / "sample.wav", sample_dir / "sample.rttm", out, bleed_db=-20.0)


def ok(job_input: dict[str, Any]) -> Transcript:
    output = handler.handle({"id": "mc", "input": job_input})
    assert "error" not in output, output.get("error")
    return Transcript.model_validate(output)


def failed(job_input: dict[str, Any]) -> ErrorInfo:
    output = handler.handle({"id": "mc", "input": job_input})
    assert set(output) == {"error"}, f"expected a failure, got {str(output)[:300]}"
    return ErrorInfo.model_validate(json.loads(output["error"]))


def attribution(transcript: Transcript, call: Call, labels: list[str]) -> tuple[int, list[str]]:
    """(words checked, words on the wrong channel): a word is checked where its span overlaps the turns of exactly
    one reference speaker; in gaps and overlapped speech the reference does not say who spoke it."""
    channel_of = {speaker: label for speaker, label in zip(call.speakers, labels, strict=True)}
    checked, wrong = 0, []
    for segment in transcript.segments:
        for word in segment.words:
            assert word.speaker == segment.speaker
            talking = {who for start, end, who in call.reference if start < word.end and word.start < end}
            if len(talking) != 1:
                continue
            checked += 1
            if word.speaker != channel_of[talking.pop()]:
                wrong.append(f"{word.word!r} at {word.start}-{word.end} on {word.speaker}")
    return checked, wrong


def assert_one_timeline(transcript: Transcript) -> None:
    """Segments ordered by start and numbered; one channel's never overlap (two channels' may)."""
    assert [segment.id for segment in transcript.segments] == list(range(len(transcript.segments)))
    assert [segment.start for segment in transcript.segments] == sorted(s.start for s in transcript.segments)
    reach: dict[str | None, float] = {}
    for segment in transcript.segments:
        assert segment.start >= reach.get(segment.speaker, 0.0) and segment.end >= segment.start
        reach[segment.speaker] = segment.end


def test_each_word_lands_on_its_speakers_channel(worker: Engine, sample_call: Call) -> None:
    names = ["Diane", "Sheila"]
    transcript = ok(
        {"audio": str(sample_call.path), "multichannel": True, "channel_names": names, "output_formats": ["srt", "txt"]}
    )
    checked, wrong = attribution(transcript, sample_call, names)
    print(f"sample, one speaker per channel: {checked - len(wrong)}/{checked} words on the right channel")
    assert checked >= 60 and wrong == []
    assert transcript.channels is not None
    assert (transcript.channels.multichannel, transcript.channels.count, transcript.channels.speakers) == (
        True,
        2,
        names,
    )
    assert [speaker.id for speaker in transcript.speakers] == names and all(s.duration > 5 for s in transcript.speakers)
    assert transcript.diarizer is None and {turn.speaker for turn in transcript.turns} == set(names)
    assert "diane in new jersey" in transcript.text.lower()
    assert_one_timeline(transcript)
    assert transcript.formats["srt"] == transcript.to_srt() and "[Sheila]" in transcript.formats["srt"]
    assert transcript.formats["txt"].startswith(("Diane: ", "Sheila: "))


def test_an_ami_meeting_one_speaker_per_channel(worker: Engine, tmp_path: Path) -> None:
    call = one_speaker_per_channel(
        realspeech("ami_dev00.wav"), realspeech("ami_dev00.rttm"), tmp_path / "dev00_stereo.wav"
    )
    transcript = ok({"audio": str(call.path), "multichannel": True})
    labels = ["CHANNEL_0", "CHANNEL_1"]
    checked, wrong = attribution(transcript, call, labels)
    print(f"ami_dev00, one speaker per channel: {checked - len(wrong)}/{checked} words on the right channel")
    assert checked >= 30 and wrong == []
    assert [speaker.id for speaker in transcript.speakers] == labels
    assert_one_timeline(transcript)


def test_crosstalk_gives_no_duplicate_words_and_auto_takes_it_as_a_call(worker: Engine, bleeding_call: Call) -> None:
    """Each side also heard at -20 dB on the other's channel: each word once, on its speaker's channel. "auto" sees
    a call (each channel clearly the louder in its own speech)."""
    transcript = ok({"audio": str(bleeding_call.path), "multichannel": "auto"})
    assert transcript.channels is not None and transcript.channels.multichannel
    assert transcript.channels.separation is not None and transcript.channels.separation >= 0.8
    assert transcript.channels.crosstalk_words_dropped > 0
    checked, wrong = attribution(transcript, bleeding_call, ["CHANNEL_0", "CHANNEL_1"])
    print(f"sample, -20 dB cross-talk: {checked - len(wrong)}/{checked} words on the right channel")
    assert checked >= 60 and wrong == []
    words = [(w, s.speaker) for s in transcript.segments for w in s.words]
    twice = [
        f"{a.word!r} at {a.start}"
        for i, (a, left) in enumerate(words)
        for b, right in words[i + 1 :]
        if left != right
        and comparable_text(a.word) == comparable_text(b.word)
        and a.start < b.end + 0.2
        and b.start < a.end + 0.2
    ]
    assert twice == []
    assert_one_timeline(transcript)


def test_auto_keeps_one_signal_on_both_channels_mono(worker: Engine, sample_dir: Path, tmp_path: Path) -> None:
    """The same recording on both channels (a mono file saved as stereo) is not a call: diarized as usual."""
    stereo = tmp_path / "dual_mono.wav"
    ffmpeg("-i", str(sample_dir / "sample.wav"), "-ac", "2", str(stereo))
    transcript = ok({"audio": str(stereo), "multichannel": "auto"})
    assert transcript.channels is not None
    assert (transcript.channels.multichannel, transcript.channels.count, transcript.channels.separation) == (
        False,
        2,
        0.0,
    )
    assert transcript.diarizer == worker.diarizer_name
    assert [speaker.id for speaker in transcript.speakers] == ["SPEAKER_00", "SPEAKER_01"]


def test_plain_jobs_say_nothing_about_channels(worker: Engine, sample_call: Call) -> None:
    """Without `multichannel` a stereo file is mixed to mono as before."""
    output = handler.handle({"id": "mc", "input": {"audio": str(sample_call.path), "diarize": False}})
    assert output.get("channels") is None and "error" not in output


@pytest.mark.parametrize(
    ("change", "field", "fragment"),
    [
        ({"channel_names": ["A", "B"]}, "channel_names", "needs multichannel"),
        ({"multichannel": True, "channel_names": ["A", "A"]}, "channel_names", "same name"),
        ({"multichannel": True, "channel_names": [" "]}, "channel_names", "1 to 64 characters"),
        ({"multichannel": True, "channel_names": []}, "channel_names", "at least 1"),
        ({"multichannel": True, "channel_names": ["a\nb"]}, "channel_names", "control characters"),
        ({"multichannel": "yes"}, "multichannel", 'true, false or "auto"'),
        ({"multichannel": 1}, "multichannel", 'true, false or "auto"'),
        ({"multichannel": True, "num_speakers": 3}, "num_speakers", "each channel is one speaker"),
        ({"multichannel": True, "max_speakers": 3}, "max_speakers", "each channel is one speaker"),
        ({"multichannel": "auto", "return_embeddings": True}, "return_embeddings", "not with multichannel"),
        ({"diarize_channels": True}, "diarize_channels", "needs multichannel"),
        ({"multichannel": True, "diarize_channels": True, "diarize": False}, "diarize_channels", "diarize false"),
        (
            {"multichannel": True, "diarize_channels": True, "channel_names": ["Room", "Room/SPEAKER_00"]},
            "channel_names",
            "no '/'",
        ),
    ],
)
def test_invalid_combinations_name_the_field(worker: Engine, change: dict[str, Any], field: str, fragment: str) -> None:
    error = failed({"audio": "https://scribepod.invalid/never-fetched.wav", **change})
    assert (error.code, error.field) == ("invalid_input", field) and fragment in error.message


def test_names_must_match_the_channels(worker: Engine, sample_call: Call, tmp_path: Path) -> None:
    error = failed({"audio": str(sample_call.path), "multichannel": True, "channel_names": ["A", "B", "C"]})
    assert (error.code, error.field) == ("invalid_input", "channel_names") and "2 channels" in error.message
    many = tmp_path / "nine.wav"
    noise = np.random.default_rng(9).normal(0.0, 0.02, (SAMPLE_RATE, 9)).astype(np.float32)
    soundfile.write(many, noise, SAMPLE_RATE, subtype="PCM_16")
    error = failed({"audio": str(many), "multichannel": True})
    assert (error.code, error.field) == ("invalid_input", "multichannel") and "9 channels" in error.message


def test_options_round_trip() -> None:
    """`options()` re-validates the request's options: the multichannel fields survive it."""
    options = TranscriptionOptions(multichannel="auto", channel_names=["Ana", "Bo"])
    assert TranscriptionOptions.model_validate(options.model_dump()) == options


def test_each_channel_keeps_the_length_limit(worker: Engine, sample_call: Call) -> None:
    with_settings(worker, max_audio_seconds=10)
    for multichannel in (True, "auto"):
        error = failed({"audio": str(sample_call.path), "multichannel": multichannel})
        assert error.code == "audio_too_long" and "10 s" in error.message


def test_a_stopped_multichannel_job_ends_within_a_second(worker: Engine, sample_call: Call) -> None:
    """Set while the first channel is being transcribed: the job's thread leaves at its next check."""
    stop = StopSignal()
    set_at: list[float] = []

    def set_it() -> None:
        set_at.append(time.monotonic())
        stop.set("cancelled")

    timer = threading.Timer(1.0, set_it)
    timer.start()
    try:
        with pytest.raises(JobStopped, match="cancelled"):
            worker.run(TranscriptionRequest(audio=str(sample_call.path), multichannel=True), stop=stop)
    finally:
        timer.cancel()
    assert set_at and time.monotonic() - set_at[0] < 1.0


def test_a_mono_file_is_one_channel(worker: Engine) -> None:
    """Words are timed for cross-talk whatever `word_timestamps` says; without it they stay out of the output."""
    transcript = ok(
        {"audio": str(realspeech("jfk.wav")), "multichannel": True, "channel_names": ["JFK"], "word_timestamps": False}
    )
    assert transcript.channels is not None and (transcript.channels.count, transcript.channels.speakers) == (1, ["JFK"])
    assert [speaker.id for speaker in transcript.speakers] == ["JFK"] and "ask not" in transcript.text.lower()
    assert all(segment.words == [] and segment.speaker == "JFK" for segment in transcript.segments)
    assert transcript.turns and {turn.speaker for turn in transcript.turns} == {"JFK"}


def test_auto_wants_each_channel_to_lead_somewhere(sample_dir: Path) -> None:
    """A signal on one channel only, or a copy panned to one side, is not a call; two sides that take turns are."""
    audio = decode_audio(sample_dir / "sample.wav", 600.0)
    silent = np.zeros_like(audio)
    assert not is_call(dominance(audio, silent)) and not is_call(dominance(audio, 0.5 * audio))
    assert dominance(silent, silent) is None and not is_call(None)
    half = audio.size // 2
    first, second = np.concatenate([audio[:half], silent[half:]]), np.concatenate([silent[:half], audio[half:]])
    assert is_call(dominance(first, second))


def test_rttm_keeps_a_spaced_name_in_one_column() -> None:
    transcript = Transcript(text="", duration=2.0, turns=[Turn(start=0.0, end=1.0, speaker="Dr Smith")])
    assert transcript.to_rttm("call").split()[7] == "Dr_Smith"


def test_the_sdk_keeps_the_channels_when_it_compresses_and_refuses_shards(tmp_path: Path, sample_dir: Path) -> None:
    """A multichannel input over the inline limit is compressed without the mono mix; shards would mix it."""
    stereo = tmp_path / "call.wav"
    ffmpeg("-i", str(sample_dir / "sample.wav"), "-ac", "2", str(stereo))
    kept = compress_for_upload(stereo.read_bytes(), "call.wav", keep_channels=True)
    mixed = compress_for_upload(stereo.read_bytes(), "call.wav")
    assert kept is not None and mixed is not None
    channels = [_channels_of(data, tmp_path / name) for data, name in ((kept, "kept.ogg"), (mixed, "mixed.ogg"))]
    assert channels == [2, 1]
    with Client(base_url="http://127.0.0.1:9") as client, pytest.raises(ValueError, match="multichannel"):
        client.transcribe(stereo, shards=2, multichannel=True)


def _channels_of(data: bytes, path: Path) -> int:
    path.write_bytes(data)
    return int(soundfile.info(str(path)).channels)


def _said(text: str, start: float, end: float) -> list[AsrSegment]:
    return [AsrSegment(start, end, f" {text}", words=(AsrWord(start, end, f" {text}", 0.9),))]


def _tone(seconds: float, start: float, end: float, level: float) -> np.ndarray:
    audio = np.zeros(int(seconds * SAMPLE_RATE), dtype=np.float32)
    span = slice(int(start * SAMPLE_RATE), int(end * SAMPLE_RATE))
    audio[span] = level * np.sin(np.arange(span.stop - span.start, dtype=np.float32) / 5)
    return audio


def test_the_same_word_said_by_each_side_in_turn_is_kept_twice() -> None:
    """ "Hello," - "hello.": each word is loudest on its own channel over its own span, so neither is cross-talk,
    though the answer starts 0.3 s after the greeting ends and the greeting is louder over both words together."""
    greeting, answer = _tone(3.0, 0.0, 1.2, 0.3), _tone(3.0, 1.5, 1.6, 0.3)
    kept, dropped = remove_crosstalk([answer, greeting], [_said("hello.", 1.5, 1.6), _said("Hello,", 0.0, 1.2)])
    assert dropped == 0 and [len(channel) for channel in kept] == [1, 1]


def test_a_word_heard_through_the_other_microphone_is_dropped_once() -> None:
    source = _tone(2.0, 0.5, 1.0, 0.3)
    bled = source * 10 ** (-6 / 20)  # louder bleed than BLEED_DB: only the matching text can catch it
    kept, dropped = remove_crosstalk([bled, source], [_said("yes", 0.52, 0.98), _said("Yes.", 0.5, 1.0)])
    assert dropped == 1 and kept == [[], _said("Yes.", 0.5, 1.0)]
    same = [source, source.copy()]  # one signal on both channels: one copy stays, the lower channel's
    kept, dropped = remove_crosstalk(same, [_said("yes", 0.5, 1.0), _said("yes", 0.5, 1.0)])
    assert dropped == 1 and [len(channel) for channel in kept] == [1, 0]


def test_words_over_silence_and_words_of_no_length_are_judged_on_a_level() -> None:
    silent = np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    kept, dropped = remove_crosstalk([silent, silent.copy()], [_said("um", 0.5, 0.7), []])
    assert dropped == 0 and len(kept[0]) == 1  # silence everywhere is nobody's bleed
    # A word of no length where its own side speaks steadily and the other side has a click on that one sample.
    own, other = _tone(2.0, 0.0, 2.0, 0.1), np.zeros(2 * SAMPLE_RATE, dtype=np.float32)
    other[SAMPLE_RATE] = 1.0
    kept, dropped = remove_crosstalk([own, other], [_said("hate", 1.0, 1.0), []])
    assert dropped == 0 and len(kept[0]) == 1


@pytest.mark.parametrize("bleed_db", [None, -20.0])
def test_a_room_on_one_channel_is_diarized_within_it_when_asked(
    worker: Engine, tmp_path: Path, bleed_db: float | None
) -> None:
    """A caller (JFK) on channel 0 and a meeting room (ami_dev00: MEE009 and MEE012) on channel 1, taking turns;
    with bleed, each side is also heard through the other's microphone: that is no extra voice on either."""
    room = decode_audio(realspeech("ami_dev00.wav"), 600.0)
    caller = decode_audio(realspeech("jfk.wav"), 600.0)
    call = np.zeros((room.size + caller.size, 2), dtype=np.float32)
    call[room.size :, 0], call[: room.size, 1] = caller, room
    if bleed_db is not None:
        gain = 10.0 ** (bleed_db / 20.0)
        call = call + gain * call[:, ::-1]
    path = tmp_path / "room.wav"
    soundfile.write(path, call, SAMPLE_RATE, subtype="PCM_16")
    asked = {"audio": str(path), "multichannel": True, "channel_names": ["Caller", "Room"]}

    plain = ok(asked)
    assert [speaker.id for speaker in plain.speakers] == ["Caller", "Room"] and plain.diarizer is None

    diarized = ok({**asked, "diarize_channels": True, "max_speakers": 3})
    assert diarized.diarizer == "builtin" and "diarize" in diarized.timings
    ids = [speaker.id for speaker in diarized.speakers]
    assert ids == ["Caller", "Room/SPEAKER_00", "Room/SPEAKER_01"], ids  # one voice found on the caller's channel
    reference = read_rttm(realspeech("ami_dev00.rttm"))
    owners = {label: owner(diarized, reference, room.size / SAMPLE_RATE, label) for label in ids[1:]}
    assert sorted(owners.values()) == ["MEE009", "MEE012"], owners  # each voice of the room is its own speaker
    assert {word.speaker for segment in diarized.segments for word in segment.words} == set(ids)
    caller_words = [word for segment in diarized.segments for word in segment.words if word.speaker == "Caller"]
    assert caller_words and min(word.start for word in caller_words) >= room.size / SAMPLE_RATE - 0.5
    assert {turn.speaker for turn in diarized.turns} == set(ids)
    assert [segment.id for segment in diarized.segments] == list(range(len(diarized.segments)))

    one_each = ok({**asked, "diarize_channels": True, "max_speakers": 1})
    assert [speaker.id for speaker in one_each.speakers] == ["Caller", "Room"]


def test_the_cli_asks_for_channels() -> None:
    parse = build_parser().parse_args
    assert cli_options(parse(["transcribe", "a.wav"])) == {}
    asked = cli_options(
        parse(["transcribe", "a.wav", "--multichannel", "--channel-names", "Agent,Customer", "--diarize-channels"])
    )
    assert asked == {"multichannel": True, "channel_names": ["Agent", "Customer"], "diarize_channels": True}
    assert cli_options(parse(["transcribe", "a.wav", "--multichannel-auto"])) == {"multichannel": "auto"}
    first = parse(["transcribe", "--multichannel", "call.wav"])  # the flag takes no value: the input stays an input
    assert first.inputs == ["call.wav"] and cli_options(first) == {"multichannel": True}
    TranscriptionOptions.model_validate(asked)  # what the CLI builds is a valid request
