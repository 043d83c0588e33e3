"""One long recording over many endpoint workers: cut it at pauses into shards, and merge the shards' transcripts
into one, with one set of speaker labels and the whole recording's clock.

RunPod is the distributed engine: each shard is an ordinary job, so the endpoint's autoscaling runs them side by
side. This module does the two ends without I/O to the endpoint (`Client` submits and waits):

- **Cutting** needs ffmpeg, which decodes the input once to 16 kHz mono and finds its pauses (`silencedetect`). Each
  cut goes in the middle of the longest pause near its nominal place, never in speech: where no pause is near, that
  cut is left out and the shards around it are longer. Without ffmpeg the SDK does not shard.
- **Linking** joins the shards' speakers by their voice embeddings (`return_embeddings`): greedy average linkage on
  cosine similarity, never joining two speakers of one shard (its diarizer already told them apart), stopping at
  `LINK_THRESHOLD` or at the count the caller gave.
- **Merging** shifts every time to the recording's clock, relabels speakers `SPEAKER_00..` by first appearance, and
  joins a speaker's turns that a cut split.
"""

from __future__ import annotations

import itertools
import math
import os
import re
import shutil
import subprocess
import tempfile
import threading
import time
import wave
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from scribepod._sources import Source, describe, read_bytes
from scribepod.errors import InvalidInput
from scribepod.models import Identification, JobInfo, Segment, Speaker, SpeakerMatch, Transcript, Turn, Word

SAMPLE_RATE = 16_000
AUTO_MIN_SECONDS = 20 * 60  # "auto" shards only a recording at least this long
AUTO_SHARD_SECONDS = 10 * 60  # and gives each shard about this much audio
MAX_SHARDS = 64
MIN_SHARD_S = 10.0  # shorter shards cost more in per-job overhead than they save
# Pauses: stretches this long under the level (dB below full scale); a quieter threshold first, louder ones where a
# cut finds none (a noisy room never reaches -45 dB between words).
MIN_PAUSE_S = 0.3
_PAUSE_LEVELS_DB = (-45, -35, -28)
# A pause this long is as good a place to cut as a longer one: the nearest such pause wins.
GOOD_PAUSE_S = 1.0
# A cut looks for a pause this far either side of its nominal place (and never past a quarter of a shard).
SEARCH_S = 60.0
# Two shards' speakers are one person when their centroids' cosine similarity is at least this (the builtin
# diarizer's own stop, 0.85 Euclidean between unit vectors, is cosine 0.64; centroids of whole shards are steadier
# than its single embeddings). Chosen on ami_dev00/dev01/trn00 (tests/test_shards.py), not on the benchmark.
LINK_THRESHOLD = 0.6
# A speaker's turns on either side of a cut closer than this are one turn (the cut sits in a pause of at least
# MIN_PAUSE_S; turns end and start a few tenths inside it).
SEAM_JOIN_S = 1.5
# Marks a cluster no enrolled voice named, before it is numbered SPEAKER_xx (a name is printable: it never has it).
_UNNAMED = "\x00"
_DECODE_TIMEOUT_S = 1800
_SILENCE = re.compile(r"silence_(start|end): (-?[0-9.]+)")


@dataclass(frozen=True)
class ShardAudio:
    """One shard: where it sits in the recording (seconds) and its audio as 16 kHz mono WAV bytes."""

    index: int
    start: float
    end: float
    wav: bytes


@dataclass(frozen=True)
class SpeakerHint:
    num_speakers: int | None = None
    min_speakers: int | None = None
    max_speakers: int | None = None


def ffmpeg() -> str | None:
    return shutil.which("ffmpeg")


def shard_count(requested: int | str, seconds: float, workers: int) -> int:
    """How many shards: N as asked, or for "auto" one per `AUTO_SHARD_SECONDS`, at most one per worker the endpoint
    reports, and none below `AUTO_MIN_SECONDS` or with fewer than two workers; never a shard under `MIN_SHARD_S`."""
    most = max(1, min(MAX_SHARDS, int(seconds // MIN_SHARD_S)))
    if requested == "auto":
        if seconds < AUTO_MIN_SECONDS or workers < 2:
            return 1
        return max(1, min(workers, math.ceil(seconds / AUTO_SHARD_SECONDS), most))
    if not isinstance(requested, int) or isinstance(requested, bool) or requested < 1:
        raise ValueError(f"shards must be a positive number or 'auto', not {requested!r}")
    return min(requested, most)


def decode(source: Source, folder: Path) -> Path:
    """The input as 16 kHz mono 16-bit WAV in `folder` (ffmpeg), what the worker decodes to anyway."""
    binary = ffmpeg()
    if binary is None:
        raise InvalidInput("cutting a recording into shards needs ffmpeg")
    if isinstance(source, str | os.PathLike):
        given = Path(source).expanduser()
        if not given.is_file():
            raise InvalidInput(f"no such file: {given}")
    else:
        given = folder / "input"
        given.write_bytes(read_bytes(source))
    target = folder / "audio.wav"
    command = [binary, "-nostdin", "-hide_banner", "-loglevel", "error", "-i", str(given), "-vn", "-map", "0:a:0"]
    command += ["-ac", "1", "-ar", str(SAMPLE_RATE), "-c:a", "pcm_s16le", "-y", str(target)]
    try:
        subprocess.run(command, check=True, capture_output=True, timeout=_DECODE_TIMEOUT_S)
    except subprocess.CalledProcessError:
        raise InvalidInput(f"ffmpeg could not decode {describe(source)} as audio") from None
    except (OSError, subprocess.SubprocessError) as error:
        raise InvalidInput(f"ffmpeg could not decode {describe(source)}: {type(error).__name__}") from None
    return target


def pauses(wav: Path, level_db: int) -> list[tuple[float, float]]:
    """Stretches of at least `MIN_PAUSE_S` under `level_db`, from ffmpeg's silencedetect."""
    binary = ffmpeg()
    assert binary is not None
    command = [binary, "-nostdin", "-hide_banner", "-i", str(wav), "-af"]
    command += [f"silencedetect=noise={level_db}dB:d={MIN_PAUSE_S}", "-f", "null", "-"]
    try:
        result = subprocess.run(command, check=True, capture_output=True, text=True, timeout=_DECODE_TIMEOUT_S)
    except (OSError, subprocess.SubprocessError) as error:
        raise InvalidInput(f"ffmpeg could not look for pauses to cut at: {type(error).__name__}") from None
    found: list[tuple[float, float]] = []
    start: float | None = None
    for kind, value in _SILENCE.findall(result.stderr):
        if kind == "start":
            start = max(0.0, float(value))
        elif start is not None:
            found.append((start, float(value)))
            start = None
    return found


def plan_cuts(seconds: float, count: int, pauses_by_level: Sequence[list[tuple[float, float]]]) -> list[float]:
    """Where to cut for `count` shards of similar length: in a pause within `SEARCH_S` of each nominal place (the
    nearest of those at least `GOOD_PAUSE_S` long, else the longest), as near the nominal place as the pause allows
    with silence either side; each pause level in turn. A cut with no pause near is left out, and so is one that
    would leave a shard under `MIN_SHARD_S`."""
    cuts: list[float] = []
    search = min(SEARCH_S, seconds / count / 4)
    for k in range(1, count):
        nominal = k * seconds / count
        for found in pauses_by_level:
            near = [(start, end) for start, end in found if start <= nominal + search and end >= nominal - search]
            if near:
                start, end = max(
                    near,
                    key=lambda pause: (
                        min(pause[1] - pause[0], GOOD_PAUSE_S),
                        -abs((pause[0] + pause[1]) / 2 - nominal),
                    ),
                )
                margin = min(MIN_PAUSE_S / 2, (end - start) / 2)  # silence on both sides of the cut
                cuts.append(min(max(nominal, start + margin), end - margin))
                break
    kept: list[float] = []
    for cut in sorted(cuts):  # no shard shorter than MIN_SHARD_S, however the pauses fell
        if cut - (kept[-1] if kept else 0.0) >= MIN_SHARD_S and seconds - cut >= MIN_SHARD_S:
            kept.append(cut)
    return kept


def split(wav: Path, cuts: Sequence[float]) -> list[ShardAudio]:
    """The recording cut at `cuts` (seconds), sample-exact, each shard its own WAV."""
    shards: list[ShardAudio] = []
    with wave.open(str(wav), "rb") as reader:
        total = reader.getnframes()
        bounds = [0, *(min(total, round(cut * SAMPLE_RATE)) for cut in cuts), total]
        for index, (first, last) in enumerate(itertools.pairwise(bounds)):
            reader.setpos(first)
            frames = reader.readframes(last - first)
            with tempfile.SpooledTemporaryFile() as buffer:
                with wave.open(buffer, "wb") as writer:
                    writer.setnchannels(1)
                    writer.setsampwidth(2)
                    writer.setframerate(SAMPLE_RATE)
                    writer.writeframes(frames)
                buffer.seek(0)
                data = buffer.read()
            shards.append(ShardAudio(index, first / SAMPLE_RATE, last / SAMPLE_RATE, data))
    return shards


def wav_seconds(wav: Path) -> float:
    with wave.open(str(wav), "rb") as reader:
        return reader.getnframes() / reader.getframerate()


def cut_recording(source: Source, requested: int | str, workers: int, folder: Path) -> list[ShardAudio] | None:
    """The shards for `source`, or None where it should go as one job (short, one worker, or no pause to cut)."""
    wav = decode(source, folder)
    seconds = wav_seconds(wav)
    count = shard_count(requested, seconds, workers)
    if count < 2:
        return None
    cuts = plan_cuts(seconds, count, [pauses(wav, level) for level in _PAUSE_LEVELS_DB])
    return split(wav, cuts) if cuts else None


class ShardJobs:
    """The shards' job ids, for cancelling them all. Once stopping, a shard whose job is only now submitted (its
    upload or its POST was under way) is cancelled as soon as its id is known."""

    def __init__(self, cancel: Callable[[str], None]) -> None:
        self._cancel = cancel
        self._ids: list[str] = []
        self._stopping = False
        self._lock = threading.Lock()

    def submitted(self, job_id: str) -> None:
        with self._lock:
            self._ids.append(job_id)
            late = self._stopping
        if late:
            self._cancel(job_id)

    def stop(self) -> None:
        with self._lock:
            self._stopping = True
            ids = list(self._ids)
        for job_id in ids:
            self._cancel(job_id)


class CombinedProgress:
    """The shards' progress as one: each shard's percent weighted by its length, never going down."""

    def __init__(self, shards: Sequence[ShardAudio], report: Callable[[dict[str, Any]], None] | None) -> None:
        self._weights = [shard.end - shard.start for shard in shards]
        self._percents = [0.0] * len(shards)
        self._stages = ["queued"] * len(shards)
        self._report = report
        self._last = -1.0
        self._lock = threading.Lock()  # shard threads and the caller's thread report at once

    def shard(self, index: int) -> Callable[[dict[str, Any]], None] | None:
        if self._report is None:
            return None

        def update(progress: dict[str, Any]) -> None:
            with self._lock:
                self._percents[index] = float(progress.get("percent", 0.0))
                self._stages[index] = str(progress.get("stage", "?"))
            self.done(None)

        return update

    def done(self, index: int | None) -> None:
        """Report the combined percent (a shard that finished counts as 100%)."""
        with self._lock:
            if index is not None:
                self._percents[index], self._stages[index] = 100.0, "done"
            if self._report is not None:
                self._send(self._report)

    def _send(self, report: Callable[[dict[str, Any]], None]) -> None:
        total = sum(self._weights) or 1.0
        percent = round(sum(w * p for w, p in zip(self._weights, self._percents, strict=True)) / total, 1)
        if percent > self._last:
            self._last = percent
            finished = self._stages.count("done")
            stage = "done" if finished == len(self._stages) else "transcribe"
            report({"stage": stage, "percent": percent, "shards": len(self._stages), "shards_done": finished})


def merge(
    parts: Sequence[tuple[ShardAudio, Transcript]],
    hint: SpeakerHint,
    output_formats: Sequence[str] = (),
    *,
    embeddings: bool = True,
) -> Transcript:
    """One transcript from the shards' (in recording order): the shape a single job would have returned.

    The shards' centroids link their speakers; `embeddings` false (the caller did not ask for `return_embeddings`)
    leaves them out of the result, as a single job would."""
    started = time.perf_counter()
    labels = link_speakers([transcript for _, transcript in parts], hint)
    segments: list[Segment] = []
    turns: list[Turn] = []
    for (shard, transcript), names in zip(parts, labels, strict=True):
        offset = shard.start
        for segment in transcript.segments:
            moved = segment.model_copy(
                update={
                    "start": round(segment.start + offset, 3),
                    "end": round(segment.end + offset, 3),
                    "speaker": names.get(segment.speaker) if segment.speaker else None,
                    "words": [_moved_word(word, offset, names) for word in segment.words],
                }
            )
            segments.append(moved)
        turns.extend(
            Turn(start=round(t.start + offset, 3), end=round(t.end + offset, 3), speaker=names[t.speaker])
            for t in transcript.turns
            if t.speaker in names
        )
    order = _first_appearance(segments, turns)
    for segment in segments:
        segment.speaker = order.get(segment.speaker) if segment.speaker else None
        for word in segment.words:
            word.speaker = order.get(word.speaker) if word.speaker else None
    turns = _joined_at_seams(
        sorted((t.model_copy(update={"speaker": order[t.speaker]}) for t in turns), key=lambda t: (t.start, t.end)),
        [shard.start for shard, _ in parts[1:]],
    )
    for number, segment in enumerate(segments):
        segment.id = number
    first = next((t for _, t in parts if t.language), parts[0][1])
    speakers = _speakers(turns, parts, labels, order)
    if not embeddings:
        speakers = [speaker.model_copy(update={"embedding": None}) for speaker in speakers]
    merged = Transcript(
        text=" ".join(segment.text for segment in segments if segment.text).strip(),
        language=first.language,
        language_probability=first.language_probability,
        duration=round(sum(t.duration for _, t in parts), 3),
        segments=segments,
        speakers=speakers,
        turns=turns,
        model=parts[0][1].model,
        device=parts[0][1].device,
        gpu=parts[0][1].gpu,
        diarizer=parts[0][1].diarizer,
        embedding_model=parts[0][1].embedding_model if embeddings else None,
        identification=_identification(parts, speakers),
        timings={
            **{f"shard_{shard.index}": transcript.timings.get("total", 0.0) for shard, transcript in parts},
        },
        job=_job_info(parts),
    )
    for fmt in output_formats:
        merged.formats[fmt] = merged.render(fmt)  # type: ignore[arg-type]
    merged.timings["merge"] = round(time.perf_counter() - started, 4)
    return merged


def link_speakers(transcripts: Sequence[Transcript], hint: SpeakerHint) -> list[dict[str, str]]:
    """Per shard, its speaker labels -> global cluster labels: an enrolled name, or an unnamed cluster's (renamed
    SPEAKER_00, ... by first appearance later).

    Speakers of different shards join when their centroids are at least `LINK_THRESHOLD` alike (or when the caller's
    count asks for fewer), best pair first, average linkage; two speakers of the same shard never join. Speakers an
    enrolled voice named (`speakers`) are one speaker with everyone of their name from the start, and never join
    someone of another name."""
    members: list[list[tuple[int, str]]] = []
    vectors: list[list[float] | None] = []
    names: list[str | None] = []
    sizes: list[float] = []
    for index, transcript in enumerate(transcripts):
        for speaker in transcript.speakers:
            name = speaker.match.name if speaker.match is not None else None
            vector = _unit(speaker.embedding) if speaker.embedding else None
            if name is not None and name in names:  # the same enrolled person in an earlier shard
                known = names.index(name)
                members[known].append((index, speaker.id))
                vectors[known] = _weighted_mean(vectors[known], sizes[known], vector)
                sizes[known] += 1.0
                continue
            members.append([(index, speaker.id)])
            vectors.append(vector)
            names.append(name)
            sizes.append(1.0)
    models = {t.embedding_model for t in transcripts if any(speaker.embedding for speaker in t.speakers)}
    linkable = len(models) == 1 and None not in models  # a speaker without an embedding is left on its own

    def may_join(a: int, b: int) -> bool:
        """Never two speakers of one shard, nor two enrolled people of different names."""
        other_names = names[a] is not None and names[b] is not None and names[a] != names[b]
        return not other_names and not {shard for shard, _ in members[a]} & {shard for shard, _ in members[b]}

    clusters = list(range(len(members)))  # cluster ids still alive
    similarity = {
        (a, b): _cosine(vectors[a], vectors[b])
        for a in clusters
        for b in clusters
        if a < b and linkable and may_join(a, b)
    }
    low = hint.num_speakers or hint.min_speakers or 1
    high = hint.num_speakers or hint.max_speakers
    while similarity and len(clusters) > low:
        (a, b), best = max(similarity.items(), key=lambda item: item[1])
        if best < LINK_THRESHOLD and (high is None or len(clusters) <= high):
            break
        if best < LINK_THRESHOLD and (names[a] is not None or names[b] is not None):
            similarity.pop((a, b))  # a count hint joins unlike voices, but never gives a stranger an enrolled name
            continue
        members[a].extend(members[b])
        names[a] = names[a] or names[b]
        clusters.remove(b)
        for c in clusters:  # average linkage: the size-weighted mean of the two rows
            if c == a:
                continue
            key_a, key_b = (min(a, c), max(a, c)), (min(b, c), max(b, c))
            joined = similarity.pop(key_a, None), similarity.pop(key_b, None)
            if joined[0] is not None and joined[1] is not None and may_join(a, c):
                similarity[key_a] = (sizes[a] * joined[0] + sizes[b] * joined[1]) / (sizes[a] + sizes[b])
        similarity.pop((min(a, b), max(a, b)), None)
        sizes[a] += sizes[b]
    labels: list[dict[str, str]] = [{} for _ in transcripts]
    for cluster in clusters:
        for shard, speaker_id in members[cluster]:
            labels[shard][speaker_id] = names[cluster] or f"{_UNNAMED}{cluster}"
    return labels


def _weighted_mean(vector: list[float] | None, weight: float, added: list[float] | None) -> list[float] | None:
    if vector is None or added is None or len(vector) != len(added):
        return vector or added
    return _unit([weight * x + y for x, y in zip(vector, added, strict=True)])


def _unit(vector: list[float]) -> list[float]:
    norm = math.sqrt(sum(x * x for x in vector)) or 1.0
    return [x / norm for x in vector]


def _cosine(left: list[float] | None, right: list[float] | None) -> float:
    if left is None or right is None or len(left) != len(right):
        return -1.0
    return sum(x * y for x, y in zip(left, right, strict=True))


def _moved_word(word: Word, offset: float, names: dict[str, str]) -> Word:
    return word.model_copy(
        update={
            "start": round(word.start + offset, 3),
            "end": round(word.end + offset, 3),
            "speaker": names.get(word.speaker) if word.speaker else None,
        }
    )


def _first_appearance(segments: Sequence[Segment], turns: Sequence[Turn]) -> dict[str, str]:
    """Global cluster labels -> SPEAKER_00, SPEAKER_01, ... by first appearance over the whole recording (the turns,
    as a single job numbers them; a speaker with words but no turn comes after); enrolled names stay."""
    order: dict[str, str] = {}
    unnamed = 0
    for label in [t.speaker for t in sorted(turns, key=lambda t: (t.start, t.end))] + [
        s.speaker for s in segments if s.speaker
    ]:
        if label not in order:
            order[label] = f"SPEAKER_{unnamed:02d}" if label.startswith(_UNNAMED) else label
            unnamed += label.startswith(_UNNAMED)
    return order


def _joined_at_seams(turns: list[Turn], cuts: Sequence[float]) -> list[Turn]:
    """A speaker's turn that a cut split made one: it ends at most `SEAM_JOIN_S` before the next starts, the cut lies
    between them, and no one else's turn reaches into the gap."""
    result: list[Turn] = []
    for turn in turns:
        previous = next((t for t in reversed(result) if t.speaker == turn.speaker), None)
        if (
            previous is not None
            and 0.0 <= turn.start - previous.end <= SEAM_JOIN_S
            and any(previous.end - 0.05 <= cut <= turn.start + 0.05 for cut in cuts)
            and not any(t.speaker != turn.speaker and t.end > previous.end for t in result)
        ):
            previous.end = max(previous.end, turn.end)
            continue
        result.append(turn.model_copy())
    return sorted(result, key=lambda t: (t.start, t.end))


def _speakers(
    turns: Sequence[Turn],
    parts: Sequence[tuple[ShardAudio, Transcript]],
    labels: Sequence[dict[str, str]],
    order: dict[str, str],
) -> list[Speaker]:
    """Speaking time per speaker from the merged turns (a speaker's own overlaps once), with the duration-weighted
    mean of its shards' centroids where the shards returned them, and for enrolled voices the best match and each
    name's best similarity over its shards."""
    totals: dict[str, float] = {}
    reach: dict[str, float] = {}
    for turn in turns:
        covered = reach.get(turn.speaker, 0.0)
        totals[turn.speaker] = totals.get(turn.speaker, 0.0) + max(0.0, turn.end - max(turn.start, covered))
        reach[turn.speaker] = max(covered, turn.end)
    sums: dict[str, list[float]] = {}
    matches: dict[str, SpeakerMatch] = {}
    similarities: dict[str, dict[str, float]] = {}
    for (_, transcript), names in zip(parts, labels, strict=True):
        for speaker in transcript.speakers:
            final = order.get(names.get(speaker.id, ""))
            if final is not None and speaker.match is not None:
                best = matches.get(final)
                if best is None or speaker.match.similarity > best.similarity:
                    matches[final] = speaker.match
            if final is not None and speaker.similarities is not None:
                seen = similarities.setdefault(final, {})
                for name, value in speaker.similarities.items():
                    seen[name] = max(value, seen.get(name, value))
            if speaker.embedding and speaker.id in names:
                label = order.get(names[speaker.id])
                if label is None:
                    continue
                weighted = [x * speaker.duration for x in speaker.embedding]
                sums[label] = [a + b for a, b in zip(sums[label], weighted, strict=True)] if label in sums else weighted
    return [
        Speaker(
            id=name,
            duration=round(seconds, 3),
            embedding=[round(x, 6) for x in _unit(sums[name])] if name in sums else None,
            match=matches.get(name),
            similarities=similarities.get(name),
        )
        for name, seconds in sorted(totals.items())
    ]


def _identification(
    parts: Sequence[tuple[ShardAudio, Transcript]], speakers: Sequence[Speaker]
) -> Identification | None:
    """The shards' identification, with the names no speaker of the whole recording took."""
    first = next((transcript.identification for _, transcript in parts if transcript.identification), None)
    if first is None:
        return None
    found = {speaker.match.name for speaker in speakers if speaker.match is not None}
    return first.model_copy(update={"not_found": [name for name in first.enrolled if name not in found]})


def _job_info(parts: Sequence[tuple[ShardAudio, Transcript]]) -> JobInfo:
    jobs = [
        transcript.job.model_copy(update={"offset": shard.start})
        for shard, transcript in parts
        if transcript.job is not None
    ]
    costs = [job.estimated_cost_usd for job in jobs]
    return JobInfo(
        id=None,
        delay_time=max((job.delay_time or 0.0 for job in jobs), default=None),
        execution_time=round(sum(job.execution_time or 0.0 for job in jobs), 3),
        worker_id=None,
        provider=jobs[0].provider if jobs else "runpod",
        gpu_class=jobs[0].gpu_class if jobs and len({job.gpu_class for job in jobs}) == 1 else None,
        estimated_cost_usd=round(sum(c for c in costs if c is not None), 6)
        if all(c is not None for c in costs)
        else None,
        shards=jobs,
    )
