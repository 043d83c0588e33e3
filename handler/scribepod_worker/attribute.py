"""Stage 4: give every word the speaker whose turn overlaps it most, and split segments where the speaker changes.

Runs in O((words + turns) log turns): turns are sorted once and each word looks up its candidates by bisection, so
a two-hour file with tens of thousands of words and turns costs milliseconds, not a rescan per word.
"""

from __future__ import annotations

import bisect
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from scribepod.models import Segment, Speaker, Turn, Word
from scribepod_worker.diarize.base import SpeakerTurn
from scribepod_worker.transcribe import AsrSegment, AsrWord


@dataclass(frozen=True)
class Attribution:
    segments: list[Segment]
    speakers: list[Speaker]
    turns: list[Turn]


def speaker_names(turns: Sequence[SpeakerTurn], recognised: Mapping[str, str] | None = None) -> dict[str, str]:
    """The backend's labels -> the enrolled name `recognised` gives a label, else SPEAKER_00, SPEAKER_01, ... by
    first appearance among the others (turns of no length do not count)."""
    names: dict[str, str] = {}
    unnamed = 0
    for turn in sorted(turns, key=lambda t: (t.start, t.end)):
        if turn.end <= turn.start or turn.speaker in names:
            continue
        if recognised is not None and turn.speaker in recognised:
            names[turn.speaker] = recognised[turn.speaker]
        else:
            names[turn.speaker] = f"SPEAKER_{unnamed:02d}"
            unnamed += 1
    return names


def relabel(turns: Sequence[SpeakerTurn], recognised: Mapping[str, str] | None = None) -> list[Turn]:
    """Sort turns and rename the backend's labels as `speaker_names` does; turns of no length go."""
    names = speaker_names(turns, recognised)
    return [
        Turn(start=round(turn.start, 3), end=round(turn.end, 3), speaker=names[turn.speaker])
        for turn in sorted(turns, key=lambda t: (t.start, t.end))
        if turn.end > turn.start
    ]


class _TurnIndex:
    """Who speaks over a time span: the turn of greatest overlap, else the nearest one."""

    def __init__(self, turns: Sequence[Turn]) -> None:
        self._turns = list(turns)  # sorted by start (relabel sorts)
        self._starts = [t.start for t in self._turns]
        # For each prefix, the index of the turn that ends latest: bounds how far back an overlap can lie.
        self._latest_end: list[int] = []
        best = 0
        for i, turn in enumerate(self._turns):
            if turn.end > self._turns[best].end:
                best = i
            self._latest_end.append(best)

    def speaker_for(self, start: float, end: float) -> str | None:
        if not self._turns:
            return None
        upto = bisect.bisect_left(self._starts, end)  # turns[:upto] start before the span ends
        best_overlap, best_speaker = 0.0, None
        i = upto - 1
        while i >= 0 and self._turns[self._latest_end[i]].end > start:
            turn = self._turns[i]
            overlap = min(end, turn.end) - max(start, turn.start)
            if overlap > best_overlap:
                best_overlap, best_speaker = overlap, turn.speaker
            i -= 1
        if best_speaker is not None:
            return best_speaker
        # No overlap (or a zero-length span): the nearest turn before or after.
        candidates = []
        if upto > 0:
            before = self._turns[self._latest_end[upto - 1]]
            candidates.append((max(0.0, start - before.end), before.speaker))
        if upto < len(self._turns):
            after = self._turns[upto]
            candidates.append((max(0.0, after.start - end), after.speaker))
        return min(candidates, key=lambda c: c[0])[1]


def _word(word: AsrWord, speaker: str | None) -> Word:
    return Word(
        start=round(word.start, 3),
        end=round(word.end, 3),
        word=word.word,
        probability=round(word.probability, 4),
        speaker=speaker,
    )


def _segment(
    source: AsrSegment, *, words: list[Word], speaker: str | None, text: str, start: float, end: float
) -> Segment:
    return Segment(
        id=0,
        start=round(start, 3),
        end=round(end, 3),
        text=text,
        speaker=speaker,
        avg_logprob=source.avg_logprob,
        no_speech_prob=source.no_speech_prob,
        words=words,
    )


def attribute_speakers(
    segments: Sequence[AsrSegment],
    turns: Sequence[SpeakerTurn] | None,
    centroids: Mapping[str, np.ndarray] | None = None,
    recognised: Mapping[str, str] | None = None,
) -> Attribution:
    """Label words and segments with speakers; `turns=None` means diarization was off (speakers stay null).

    `centroids` (backend label -> unit-length voice centroid), when given, become the speakers' `embedding`s;
    `recognised` (backend label -> enrolled name) names the speakers it holds (see `speaker_names`)."""
    labelled = relabel(turns, recognised) if turns is not None else []
    index = _TurnIndex(labelled)
    out: list[Segment] = []
    for source in segments:
        if not source.words:
            speaker = index.speaker_for(source.start, source.end) if turns is not None else None
            out.append(
                _segment(
                    source, words=[], speaker=speaker, text=source.text.strip(), start=source.start, end=source.end
                )
            )
            continue
        run: list[Word] = []
        for asr_word in source.words:
            speaker = index.speaker_for(asr_word.start, asr_word.end) if turns is not None else None
            if run and run[-1].speaker != speaker:
                out.append(_close_run(source, run))
                run = []
            run.append(_word(asr_word, speaker))
        out.append(_close_run(source, run))
    ordered = _without_overlaps(sorted(out, key=lambda s: s.start))
    embeddings = {}
    if turns is not None and centroids is not None:
        names = speaker_names(turns, recognised)
        embeddings = {names[label]: centroid for label, centroid in centroids.items() if label in names}
    return Attribution(segments=ordered, speakers=_speaker_totals(labelled, embeddings), turns=labelled)


# A channel's words closer than this belong to one turn (a pause within a sentence; longer is a new turn).
CHANNEL_TURN_GAP_S = 1.0


def channel_attribution(
    transcribed: Sequence[Sequence[AsrSegment]],
    speakers: Sequence[str],
    turns: Sequence[Sequence[SpeakerTurn]] | None = None,
) -> Attribution:
    """Multichannel: every word and segment of channel i is `speakers[i]`'s, with no diarization; or, with each
    channel's diarization `turns` (`diarize_channels`), the voice's it was found in: the channel's name alone where the
    diarizer found one voice there, else "<name>/SPEAKER_00", "<name>/SPEAKER_01", ...

    Segments are merged into one timeline ordered by start (then channel) and numbered; one channel's segments never
    overlap, but two channels' may: when both sides talk at once, each keeps its true times rather than one being
    cut. Without diarization, turns are each channel's runs of words with pauses under CHANNEL_TURN_GAP_S."""
    parts = [
        _diarized_channel(segments, name, turns[channel])
        if turns is not None and segments and any(turn.end > turn.start for turn in turns[channel])
        else _one_voice_channel(segments, name)
        for channel, (segments, name) in enumerate(zip(transcribed, speakers, strict=True))
    ]
    merged = [(segment.start, channel, segment) for channel, part in enumerate(parts) for segment in part.segments]
    ordered = [segment for _, _, segment in sorted(merged, key=lambda item: (item[0], item[1]))]
    for number, segment in enumerate(ordered):
        segment.id = number
    return Attribution(
        segments=ordered,
        speakers=[speaker for part in parts for speaker in part.speakers],
        turns=sorted((turn for part in parts for turn in part.turns), key=lambda turn: (turn.start, turn.end)),
    )


def _one_voice_channel(segments: Sequence[AsrSegment], speaker: str) -> Attribution:
    labelled = [
        _close_run(source, [_word(word, speaker) for word in source.words])
        if source.words
        else _segment(source, words=[], speaker=speaker, text=source.text.strip(), start=source.start, end=source.end)
        for source in segments
    ]
    ordered = _without_overlaps(sorted(labelled, key=lambda s: s.start))
    turns = _channel_turns(labelled, speaker)
    spoken = [Speaker(id=speaker, duration=round(sum(t.end - t.start for t in turns), 3))] if turns else []
    return Attribution(ordered, spoken, turns)


def _diarized_channel(segments: Sequence[AsrSegment], name: str, turns: Sequence[SpeakerTurn]) -> Attribution:
    """One channel attributed like a mono job, its labels then put under the channel's name.

    Only voices that kept words count: the diarizer also hears the other side's bleed on this channel as a voice,
    whose words cross-talk removal dropped; its turns go with it (as a mono job without speech has no turns)."""
    attributed = attribute_speakers(segments, turns)
    speaking = {word.speaker for segment in attributed.segments for word in segment.words} | {
        segment.speaker for segment in attributed.segments if not segment.words
    }
    labels = sorted(label for label in speaking if label is not None)
    rename = {
        label: name if len(labels) == 1 else f"{name}/SPEAKER_{number:02d}" for number, label in enumerate(labels)
    }
    for segment in attributed.segments:
        segment.speaker = rename.get(segment.speaker or "", name)
        for word in segment.words:
            word.speaker = rename.get(word.speaker or "", name)
    kept = [turn for turn in attributed.turns if turn.speaker in rename]
    return Attribution(
        segments=attributed.segments,
        speakers=[s.model_copy(update={"id": rename[s.id]}) for s in _speaker_totals(kept, {}) if s.id in rename],
        turns=[turn.model_copy(update={"speaker": rename[turn.speaker]}) for turn in kept],
    )


def _channel_turns(segments: Sequence[Segment], speaker: str) -> list[Turn]:
    """One channel's turns: its words' spans (a segment's where it has none) joined across short pauses."""
    spans = sorted(
        span
        for segment in segments
        for span in ([(word.start, word.end) for word in segment.words] or [(segment.start, segment.end)])
    )
    turns: list[Turn] = []
    for start, end in spans:
        if turns and start - turns[-1].end < CHANNEL_TURN_GAP_S:
            turns[-1].end = max(turns[-1].end, end)
        elif end > start:
            turns.append(Turn(start=start, end=end, speaker=speaker))
    return turns


def provisional_segments(segments: Sequence[AsrSegment], first_id: int, previous_end: float) -> list[Segment]:
    """The ASR's segments before diarization, for a live view while the job runs: numbered on from `first_id`, with
    the text and times the final transcript gives them (from their words), no speaker yet and no words (the final
    transcript has both). The final transcript may split one at a change of speaker, never moves its words."""
    out: list[Segment] = []
    for number, source in enumerate(segments, start=first_id):
        if source.words:
            text = "".join(word.word for word in source.words).strip()
            start, end = source.words[0].start, source.words[-1].end
        else:
            text, start, end = source.text.strip(), source.start, source.end
        segment = _segment(source, words=[], speaker=None, text=text, start=max(start, previous_end), end=end)
        segment.id = number
        segment.end = max(segment.end, segment.start)
        previous_end = segment.end
        out.append(segment)
    return out


def _close_run(source: AsrSegment, run: list[Word]) -> Segment:
    text = "".join(word.word for word in run).strip()
    return _segment(source, words=run, speaker=run[0].speaker, text=text, start=run[0].start, end=run[-1].end)


def _without_overlaps(segments: list[Segment]) -> list[Segment]:
    """Number segments and clip each start to the previous end, so segments never overlap (the contract)."""
    previous_end = 0.0
    for number, segment in enumerate(segments):
        segment.id = number
        segment.start = max(segment.start, previous_end)
        segment.end = max(segment.end, segment.start)
        previous_end = segment.end
    return segments


def _speaker_totals(turns: Sequence[Turn], embeddings: Mapping[str, np.ndarray]) -> list[Speaker]:
    """Speaking time per speaker, counting a speaker's own overlapping turns once, and its embedding if it has one
    (6 decimals: the JSON stays short, and cosines move by less than 1e-5)."""
    totals: dict[str, float] = {}
    reach: dict[str, float] = {}
    for turn in turns:  # sorted by start
        covered_until = reach.get(turn.speaker, 0.0)
        totals[turn.speaker] = totals.get(turn.speaker, 0.0) + max(0.0, turn.end - max(turn.start, covered_until))
        reach[turn.speaker] = max(covered_until, turn.end)
    return [
        Speaker(
            id=speaker,
            duration=round(seconds, 3),
            embedding=[round(float(value), 6) for value in embeddings[speaker]] if speaker in embeddings else None,
        )
        for speaker, seconds in totals.items()
    ]
