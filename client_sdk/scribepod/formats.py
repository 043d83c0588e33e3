"""Transcript renderers: SRT and WebVTT with speaker tags, readable plain text, and RTTM of the diarizer's turns.

Shared by the worker (the `formats` field of a job's output) and the SDK (`Transcript.to_srt()` and friends), so a
document rendered locally is byte-for-byte the one the worker would have sent.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Literal

if TYPE_CHECKING:
    from scribepod.models import Segment, Transcript


def _clock(seconds: float, decimal: str) -> str:
    millis = max(0, round(seconds * 1000))
    hours, rest = divmod(millis, 3_600_000)
    minutes, rest = divmod(rest, 60_000)
    secs, millis = divmod(rest, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal}{millis:03d}"


def _cue_text(segment: Segment) -> str:
    return segment.text.strip()


def render_srt(transcript: Transcript) -> str:
    """SubRip: numbered cues, `HH:MM:SS,mmm`, the speaker as a `[SPEAKER_00]` prefix."""
    cues = []
    for number, segment in enumerate(transcript.segments, start=1):
        text = _cue_text(segment)
        if segment.speaker:
            text = f"[{segment.speaker}] {text}"
        cues.append(f"{number}\n{_clock(segment.start, ',')} --> {_clock(segment.end, ',')}\n{text}\n")
    return "\n".join(cues)


def render_vtt(transcript: Transcript) -> str:
    """WebVTT with voice spans (`<v SPEAKER_00>`), which players show as the speaker's name."""
    cues = ["WEBVTT\n"]
    for segment in transcript.segments:
        text = _escaped(_cue_text(segment))
        if segment.speaker:  # a name (a channel's, an enrolled person's) may hold any printable character
            text = f"<v {_escaped(segment.speaker)}>{text}"
        cues.append(f"{_clock(segment.start, '.')} --> {_clock(segment.end, '.')}\n{text}\n")
    return "\n".join(cues)


def _escaped(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def render_text(transcript: Transcript) -> str:
    """One paragraph per speaker turn (`SPEAKER_00: ...`), or plain segment lines without diarization."""
    paragraphs: list[tuple[str | None, list[str]]] = []
    for segment in transcript.segments:
        text = _cue_text(segment)
        if not text:
            continue
        if paragraphs and paragraphs[-1][0] == segment.speaker and segment.speaker is not None:
            paragraphs[-1][1].append(text)
        else:
            paragraphs.append((segment.speaker, [text]))
    lines = [f"{speaker}: {' '.join(parts)}" if speaker else " ".join(parts) for speaker, parts in paragraphs]
    return "\n".join(lines) + ("\n" if lines else "")


def render_rttm(transcript: Transcript, file_id: str = "audio") -> str:
    """NIST RTTM of the diarizer's turns (not of word timings), the format diarization scorers read."""
    if any(ch.isspace() for ch in file_id) or not file_id:
        raise ValueError("file_id must be a non-empty word without whitespace")
    rows = [
        f"SPEAKER {file_id} 1 {turn.start:.3f} {turn.end - turn.start:.3f} <NA> <NA> {_rttm_name(turn.speaker)} "
        "<NA> <NA>\n"
        for turn in transcript.turns
    ]
    return "".join(rows)


def _rttm_name(speaker: str) -> str:
    """RTTM's columns are split on whitespace: a name such as "Dr Smith" (a channel's name) becomes "Dr_Smith"."""
    return "_".join(speaker.split()) or "<NA>"


def render(transcript: Transcript, fmt: Literal["srt", "vtt", "txt", "rttm"]) -> str:
    """Render one of the contract's `output_formats`."""
    renderers = {"srt": render_srt, "vtt": render_vtt, "txt": render_text, "rttm": render_rttm}
    return renderers[fmt](transcript)
