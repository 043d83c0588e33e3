"""One recording in shards (README, "Shards"): cut at pauses, run side by side, merged with one set of speakers.

Real meeting audio (AMI excerpts joined end to end; their RTTM references say who speaks when), the real worker
behind the local endpoint, real ffmpeg. Linking is checked against the references, so a wrong pairing fails.
"""

from __future__ import annotations

import asyncio
import difflib
import time
import wave
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import soundfile

from scribepod import AsyncClient, Client, JobTimedOut
from scribepod.models import Identification, JobInfo, Segment, Speaker, SpeakerMatch, Transcript, Turn, Word
from scribepod.shards import SEAM_JOIN_S, ShardAudio, SpeakerHint, decode, merge, plan_cuts, shard_count, split
from test_cli import scribepod
from voices import speech_alone

from conftest import realspeech
from scoring import read_rttm
from servers import local_endpoint

CLIP_S = 30.0


def joined(folder: Path, names: list[str]) -> tuple[Path, list[tuple[float, float, str]]]:
    """The AMI excerpts one after the other, and their reference turns on the joined clock (speakers by meeting)."""
    path = folder / ("_".join(names) + ".wav")
    reference: list[tuple[float, float, str]] = []
    with wave.open(str(path), "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16000)
        for position, name in enumerate(names):
            with wave.open(str(realspeech(f"{name}.wav"))) as clip:
                out.writeframes(clip.readframes(clip.getnframes()))
            offset = position * CLIP_S
            reference += [(offset + s, offset + e, who) for s, e, who in read_rttm(realspeech(f"{name}.rttm"))]
    return path, reference


def dominant_labels(
    transcript: Transcript, reference: list[tuple[float, float, str]], span: tuple[float, float]
) -> dict[str, str]:
    """For each reference speaker within `span`, the output label that covers most of their speech there."""
    overlap: dict[str, dict[str, float]] = {}
    for r_start, r_end, who in reference:
        if r_end <= span[0] or r_start >= span[1]:
            continue
        for turn in transcript.turns:
            shared = min(r_end, turn.end, span[1]) - max(r_start, turn.start, span[0])
            if shared > 0:
                overlap.setdefault(who, {}).setdefault(turn.speaker, 0.0)
                overlap[who][turn.speaker] += shared
    return {who: max(labels, key=labels.__getitem__) for who, labels in overlap.items()}


@pytest.fixture(scope="module")
def served() -> Iterator[str]:
    with local_endpoint("--concurrency", "2") as base:
        yield base


def test_the_same_voices_in_every_shard_get_the_same_labels(served: str, sample_dir: Path) -> None:
    """pyannote's sample (a real two-person phone call) in two shards: each person keeps one label across the cut.

    (Not ami_dev00 + ami_dev01, though they are one meeting: in ami_dev01 alone the builtin diarizer puts both
    people in one speaker, so no labelling across shards could be right there; tests/test_embeddings.py has it.)"""
    reference = read_rttm(sample_dir / "sample.rttm")
    with Client(base_url=served) as client:
        transcript = client.transcribe(sample_dir / "sample.wav", shards=2)
    assert transcript.job is not None and transcript.job.shards is not None and len(transcript.job.shards) == 2
    cut = transcript.job.shards[1].offset or 0.0
    first, second = (dominant_labels(transcript, reference, span) for span in ((0.0, cut - 1), (cut + 1, 30.0)))
    assert first == second, f"one person, two labels across the cut at {cut:.1f} s: {first} vs {second}"
    assert len(set(first.values())) == 2, "two people, two labels"
    assert {speaker.id for speaker in transcript.speakers} == {"SPEAKER_00", "SPEAKER_01"}
    # The shards' centroids linked the speakers; not asked for, they stay out of the result, as with one job.
    assert transcript.embedding_model is None and all(speaker.embedding is None for speaker in transcript.speakers)


def test_enrolled_people_keep_their_names_across_shards(served: str, sample_dir: Path, tmp_path: Path) -> None:
    """The sample in two shards, both people enrolled (from their own speech in it): each is named in both halves."""
    audio, _ = soundfile.read(sample_dir / "sample.wav", dtype="float32")
    reference = read_rttm(sample_dir / "sample.rttm")
    voices = {}
    for who in sorted({speaker for _, _, speaker in reference}):
        voices[who] = tmp_path / f"{who}.wav"
        soundfile.write(voices[who], speech_alone(audio, reference, who), 16000, subtype="PCM_16")
    with Client(base_url=served) as client:
        transcript = client.transcribe(sample_dir / "sample.wav", shards=2, speakers=voices)
    assert transcript.job is not None and transcript.job.shards is not None and len(transcript.job.shards) == 2
    cut = transcript.job.shards[1].offset or 0.0
    for span in ((0.0, cut - 1), (cut + 1, 30.0)):
        labels = dominant_labels(transcript, reference, span)
        assert labels == {who: who for who in labels} and labels, (span, labels)
    assert sorted(speaker.id for speaker in transcript.speakers if speaker.match) == sorted(voices)
    assert transcript.identification is not None and transcript.identification.not_found == []


def test_a_voice_in_only_one_shard_stays_its_own_speaker(served: str, tmp_path: Path) -> None:
    """ami_dev00 then ami_trn00 (another meeting, other people): no label is shared between the two halves."""
    path, reference = joined(tmp_path, ["ami_dev00", "ami_trn00"])
    with Client(base_url=served) as client:
        transcript = client.transcribe(path, shards=2)
    first, second = (dominant_labels(transcript, reference, span) for span in ((0.0, 25.0), (35.0, 60.0)))
    assert first and second and not set(first.values()) & set(second.values()), (first, second)


def test_cuts_fall_between_words_and_no_word_is_lost_or_doubled_at_a_seam(served: str, tmp_path: Path) -> None:
    """Four meeting excerpts in three shards. No cut lies inside a word of one job on the whole recording; the merged
    words are exactly those of the three pieces transcribed alone, in order (nothing lost or doubled at a seam).

    (The shards' words are not those of one job on the whole: the batched ASR packs speech into other 30 s chunks,
    and tiny.en on meeting audio changes words with its context all through the file, not only at the seams; the
    benchmark reports it.)"""
    path, _ = joined(tmp_path, ["ami_dev00", "ami_trn00", "ami_dev01", "ami_trn04"])
    with Client(base_url=served) as client:
        single = client.transcribe(path, diarize=False)
        sharded = client.transcribe(path, shards=3)
        assert sharded.job is not None and sharded.job.shards is not None and len(sharded.job.shards) == 3
        cuts = [job.offset or 0.0 for job in sharded.job.shards[1:]]
        pieces = split(decode(path, tmp_path), cuts)
        alone = [client.transcribe(piece.wav, diarize=False) for piece in pieces]
    words = [word for segment in single.segments for word in segment.words]
    for cut in cuts:
        inside = [w for w in words if w.start + 0.05 < cut < w.end - 0.05]
        assert not inside, f"a cut at {cut:.2f} s falls inside {inside}"
    assert sharded.text.split() == " ".join(transcript.text for transcript in alone).split()
    starts = [segment.start for segment in sharded.segments]
    assert starts == sorted(starts) and sharded.segments[-1].end <= sharded.duration
    merged_words = [w for segment in sharded.segments for w in segment.words]
    expected = [
        piece.start + w.start for piece, t in zip(pieces, alone, strict=True) for s in t.segments for w in s.words
    ]
    assert [w.start for w in merged_words] == pytest.approx(expected, abs=0.002), "on the recording's clock"


def test_cancelling_the_call_cancels_every_shard(served: str, tmp_path: Path) -> None:
    path, _ = joined(tmp_path, ["ami_dev00", "ami_trn00", "ami_dev01", "ami_trn04"])

    async def cancel_midway() -> None:
        async with AsyncClient(base_url=served) as client:
            task = asyncio.ensure_future(client.transcribe(path, shards=3))
            for _ in range(200):
                await asyncio.sleep(0.1)
                if (await client.health())["jobs"]["inProgress"] > 0:
                    break
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task

    asyncio.run(cancel_midway())
    assert_nothing_left(served)


def test_a_shard_that_times_out_cancels_them_all(served: str, tmp_path: Path) -> None:
    """The blocking client: one shard past its timeout ends the call, and every shard's job is cancelled."""
    path, _ = joined(tmp_path, ["ami_dev00", "ami_trn00", "ami_dev01", "ami_trn04"])
    with Client(base_url=served) as client, pytest.raises(JobTimedOut):
        client.transcribe(path, shards=3, timeout=2.0)
    assert_nothing_left(served)


def assert_nothing_left(served: str) -> None:
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        jobs = httpx.get(f"{served}/health").json()["jobs"]
        if jobs["inProgress"] == 0 and jobs["inQueue"] == 0:
            return
        time.sleep(0.2)
    raise AssertionError(f"shards left running: {jobs}")


def test_cli_shards_flag() -> None:
    result = scribepod("--base-url", "http://127.0.0.1:9", "transcribe", "--shards", "0", "a.wav")
    assert result.returncode == 2 and "--shards" in result.stderr
    result = scribepod("--base-url", "http://127.0.0.1:9", "transcribe", "--shards", "2", "--live", "a.wav")
    assert result.returncode == 2 and "--live does not combine with --shards" in result.stderr


# ---- without an endpoint -----------------------------------------------------------------------------------------


def test_a_cut_only_ever_lands_in_a_pause() -> None:
    pauses = [(29.2, 29.9), (58.0, 58.4), (61.0, 63.0), (150.0, 151.0)]
    cuts = plan_cuts(180.0, 3, [pauses])  # nominal 60 and 120; nothing within reach of 120
    assert cuts == [pytest.approx(61.15)], "in the nearest pause of a second or more, 0.15 s into it"
    assert plan_cuts(180.0, 3, [[], pauses]) == cuts, "a louder pause level is tried where the quiet one has none"
    # Nominal 10 and 20 s: the only pause near 20 would put the cut 7.85 s before the end.
    assert plan_cuts(30.0, 3, [[(22.0, 29.9)]]) == [], "no shard under 10 s"
    long_pause = plan_cuts(120.0, 2, [[(40.0, 70.0)]])
    assert long_pause == [60.0], "in a long pause, at the nominal place itself"
    assert shard_count("auto", 19 * 60, workers=8) == 1 and shard_count("auto", 60 * 60, workers=1) == 1
    assert shard_count("auto", 60 * 60, workers=4) == 4 and shard_count("auto", 60 * 60, workers=16) == 6
    assert shard_count(8, 60.0, workers=1) == 6, "no shard under 10 s"
    with pytest.raises(ValueError, match="shards"):
        shard_count(0, 600.0, workers=1)


def test_merge_shifts_relabels_and_joins_a_turn_across_the_cut() -> None:
    def shard(speakers: list[tuple[str, list[float]]], turns: list[Turn], words: list[Word]) -> Transcript:
        return Transcript(
            text=" ".join(w.word.strip() for w in words),
            duration=10.0,
            segments=[
                Segment(
                    id=0,
                    start=words[0].start,
                    end=words[-1].end,
                    text="".join(w.word for w in words).strip(),
                    speaker=words[0].speaker,
                    words=words,
                )
            ],
            speakers=[Speaker(id=name, duration=5.0, embedding=vector) for name, vector in speakers],
            turns=turns,
            embedding_model="m",
            timings={"total": 2.0},
            job=JobInfo(id="j", execution_time=2.0, estimated_cost_usd=0.01),
        )

    a, b = [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]
    first = shard(
        [("SPEAKER_00", a), ("SPEAKER_01", b)],
        [Turn(start=1.0, end=4.0, speaker="SPEAKER_00"), Turn(start=5.0, end=9.8, speaker="SPEAKER_01")],
        [Word(start=1.0, end=1.5, word=" hi", probability=1.0, speaker="SPEAKER_00")],
    )
    # The second shard numbers the same people the other way round; SPEAKER_00 (= b) runs on from the first.
    second = shard(
        [("SPEAKER_00", b), ("SPEAKER_01", a)],
        [Turn(start=0.2, end=3.0, speaker="SPEAKER_00"), Turn(start=4.0, end=6.0, speaker="SPEAKER_01")],
        [Word(start=4.0, end=4.5, word=" yes", probability=1.0, speaker="SPEAKER_01")],
    )
    pieces = [ShardAudio(0, 0.0, 10.0, b""), ShardAudio(1, 10.0, 20.0, b"")]
    merged = merge(list(zip(pieces, [first, second], strict=True)), SpeakerHint(), ["srt"])
    assert [(t.start, t.end, t.speaker) for t in merged.turns] == [
        (1.0, 4.0, "SPEAKER_00"),
        (5.0, 13.0, "SPEAKER_01"),  # one turn across the cut at 10 s (gap 0.4 s <= SEAM_JOIN_S)
        (14.0, 16.0, "SPEAKER_00"),
    ]
    assert SEAM_JOIN_S >= 0.4
    words = [word for segment in merged.segments for word in segment.words]
    assert [(w.start, w.speaker) for w in words] == [(1.0, "SPEAKER_00"), (14.0, "SPEAKER_00")]
    assert [s.id for s in merged.segments] == [0, 1] and merged.duration == 20.0 and merged.text == "hi yes"
    assert merged.formats["srt"].startswith("1\n00:00:01,000")
    assert set(merged.timings) == {"shard_0", "shard_1", "merge"}
    assert merged.job is not None and merged.job.execution_time == 4.0 and merged.job.estimated_cost_usd == 0.02
    assert [s.id for s in merged.speakers] == ["SPEAKER_00", "SPEAKER_01"]


def test_the_speaker_count_hint_holds_over_the_whole_recording() -> None:
    near = [[1.0, 0.0], [0.9, 0.436]]  # cosine 0.9: the same person
    far = [[1.0, 0.0], [0.0, 1.0]]  # cosine 0.0: two people

    def shard(vector: list[float], start: float) -> tuple[ShardAudio, Transcript]:
        transcript = Transcript(
            text="",
            duration=10.0,
            speakers=[Speaker(id="SPEAKER_00", duration=5.0, embedding=vector)],
            turns=[Turn(start=1.0, end=5.0, speaker="SPEAKER_00")],
            embedding_model="m",
        )
        return ShardAudio(int(start // 10), start, start + 10.0, b""), transcript

    assert len(merge([shard(near[0], 0.0), shard(near[1], 10.0)], SpeakerHint()).speakers) == 1
    assert len(merge([shard(far[0], 0.0), shard(far[1], 10.0)], SpeakerHint()).speakers) == 2
    assert len(merge([shard(far[0], 0.0), shard(far[1], 10.0)], SpeakerHint(num_speakers=1)).speakers) == 1
    assert len(merge([shard(near[0], 0.0), shard(near[1], 10.0)], SpeakerHint(min_speakers=2)).speakers) == 2


def test_merge_keeps_enrolled_names_and_never_joins_two_of_them() -> None:
    def shard(index: int, speakers: list[tuple[str, list[float], str | None]]) -> tuple[ShardAudio, Transcript]:
        transcript = Transcript(
            text="",
            duration=10.0,
            speakers=[
                Speaker(
                    id=label,
                    duration=4.0,
                    embedding=vector,
                    match=SpeakerMatch(name=name, sample=0, similarity=0.8) if name else None,
                    similarities={"Alice": 0.8 if name == "Alice" else 0.1, "Bob": 0.8 if name == "Bob" else 0.1},
                )
                for label, vector, name in speakers
            ],
            turns=[Turn(start=1.0 + 4 * n, end=4.0 + 4 * n, speaker=label) for n, (label, _, _) in enumerate(speakers)],
            embedding_model="m",
            identification=Identification(threshold=0.5, embedding_model="m", enrolled=["Alice", "Bob", "Cy"]),
        )
        return ShardAudio(index, 10.0 * index, 10.0 * index + 10.0, b""), transcript

    a, a_near, b, b_near = [1.0, 0.0, 0.0], [0.95, 0.31, 0.0], [0.0, 1.0, 0.0], [0.3, 0.95, 0.0]
    merged = merge(
        [
            shard(0, [("Alice", a, "Alice"), ("SPEAKER_00", b, None)]),
            shard(1, [("SPEAKER_00", a_near, None), ("Bob", b_near, "Bob")]),  # unnamed here: joins Alice
        ],
        SpeakerHint(),
    )
    assert sorted(speaker.id for speaker in merged.speakers) == ["Alice", "Bob"]
    assert {turn.speaker for turn in merged.turns} == {"Alice", "Bob"}
    assert merged.identification is not None and merged.identification.not_found == ["Cy"]
    # Two names never join, however alike their voices; one name in two shards is one speaker, however unalike.
    apart = merge([shard(0, [("Alice", a, "Alice")]), shard(1, [("Bob", a, "Bob")])], SpeakerHint(num_speakers=1))
    assert sorted(speaker.id for speaker in apart.speakers) == ["Alice", "Bob"]
    together = merge([shard(0, [("Alice", a, "Alice")]), shard(1, [("Alice", b, "Alice")])], SpeakerHint())
    assert [speaker.id for speaker in together.speakers] == ["Alice"]
    unnamed = merge([shard(0, [("SPEAKER_00", a, None)]), shard(1, [("Alice", b, "Alice")])], SpeakerHint())
    assert [speaker.id for speaker in unnamed.speakers] == ["Alice", "SPEAKER_00"]
    # A count hint joins unlike voices, but never a stranger to a name.
    hinted = merge(
        [shard(0, [("SPEAKER_00", a, None)]), shard(1, [("Alice", b, "Alice")])], SpeakerHint(max_speakers=1)
    )
    assert [speaker.id for speaker in hinted.speakers] == ["Alice", "SPEAKER_00"]
    strangers = merge(
        [shard(0, [("SPEAKER_00", a, None)]), shard(1, [("SPEAKER_00", b, None)])], SpeakerHint(max_speakers=1)
    )
    assert [speaker.id for speaker in strangers.speakers] == ["SPEAKER_00"]
    quiet = merge([shard(0, [("Alice", a, "Alice")])], SpeakerHint(), embeddings=False)
    assert quiet.embedding_model is None and quiet.speakers[0].embedding is None


def _differing(left: list[str], right: list[str]) -> int:
    """Words in one list and not matched in the other (an alignment's insertions + deletions + substitutions)."""
    matcher = difflib.SequenceMatcher(a=left, b=right, autojunk=False)
    same = sum(block.size for block in matcher.get_matching_blocks())
    return max(len(left), len(right)) - same
