"""Drop-in for the official worker, runpod-workers/worker-faster_whisper: its requests mapped onto ours, its output
keys added beside ours, so its callers switch by changing only the endpoint id.

Its schema is `src/rp_schema.py` and its output `src/predict.py` (checked at commit bd500dc of 2025-05-09). Fields it
shares with us (`audio`, `audio_base64`, `model`, `language`, `temperature`, `beam_size`, `initial_prompt`,
`word_timestamps`) mean the same; its model names are aliases (`transcribe.MODEL_ALIASES`); the rest is here.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any

from scribepod.models import Segment, Transcript
from scribepod_worker.transcribe import MODEL_ALIASES

# Its fields that our schema lacked (six are ours now: faster-whisper's options): any of them, or one of its model
# aliases, marks a request as written for it.
OFFICIAL_ONLY_FIELDS = frozenset(
    {
        "transcription",
        "translate",
        "translation",
        "best_of",
        "patience",
        "length_penalty",
        "suppress_tokens",
        "condition_on_previous_text",
        "temperature_increment_on_fallback",
        "compression_ratio_threshold",
        "logprob_threshold",
        "no_speech_threshold",
        "enable_vad",
    }
)
# Its fields that are mapped here rather than passed on: the rest of its fields are ours too (best_of, patience,
# length_penalty, condition_on_previous_text, compression_ratio_threshold and no_speech_threshold: faster-whisper's).
_MAPPED_HERE = frozenset(
    {"transcription", "translate", "translation", "suppress_tokens", "temperature_increment_on_fallback"}
    | {"logprob_threshold", "enable_vad"}
)
# Its fields under another name here (its name -> ours).
RENAMED = {"logprob_threshold": "log_prob_threshold", "enable_vad": "vad_filter"}
# Its text formats for `transcription` and `translation`. Its own test_input.json sends "plain text", which it takes as
# plain_text (any unknown format is, there); here the spaced spellings are accepted and anything else is refused.
TEXT_FORMATS = {
    "plain_text": "plain_text",
    "plain text": "plain_text",
    "formatted_text": "formatted_text",
    "formatted text": "formatted_text",
    "srt": "srt",
    "vtt": "vtt",
}
# Its fields whose null it treats as "the default"; ours would refuse null for them, so null is dropped.
_NULL_IS_DEFAULT = frozenset(
    {"transcription", "translate", "translation", "best_of", "patience", "length_penalty", "suppress_tokens"}
    | {"condition_on_previous_text", "enable_vad", "beam_size", "word_timestamps", "temperature"}
)
# Its default step of the temperature fallback ladder.
DEFAULT_TEMPERATURE_INCREMENT = 0.2

Problem = tuple[str | None, str]


@dataclass(frozen=True)
class OfficialRequest:
    """What a request in the official worker's schema asks of the output, beyond our own keys."""

    transcription: str = "plain_text"
    translate: bool = False
    translation: str = "plain_text"
    word_timestamps: bool = False


def is_official(job_input: Mapping[str, Any]) -> bool:
    """Whether a job's input was written for the official worker: one of its own fields, or one of its model names
    that is not ours."""
    model = job_input.get("model")
    return any(name in job_input for name in OFFICIAL_ONLY_FIELDS) or (
        isinstance(model, str) and model in MODEL_ALIASES
    )


def to_ours(job_input: Mapping[str, Any]) -> tuple[dict[str, Any], OfficialRequest, list[Problem]]:
    """An official-schema input as our request's fields, what it asks of the output, and every problem with its own
    fields (ours are checked by the request model, so all of them are reported together)."""
    given = {name: value for name, value in job_input.items() if not (value is None and name in _NULL_IS_DEFAULT)}
    problems: list[Problem] = []
    ours = {name: value for name, value in given.items() if name not in _MAPPED_HERE}

    formats = {}
    for name in ("transcription", "translation"):
        value = given.get(name, "plain_text")
        formats[name] = TEXT_FORMATS.get(value) if isinstance(value, str) else None
        if formats[name] is None:
            problems.append((name, f"{name}: must be one of plain_text, formatted_text, srt, vtt"))
    translate = given.get("translate", False)
    if not isinstance(translate, bool):
        problems.append(("translate", "translate: must be true or false"))

    for theirs, mine in RENAMED.items():
        if theirs in given:
            if mine in given:
                problems.append((theirs, f"{theirs}: give either {theirs} or {mine}, not both"))
            ours[mine] = given[theirs]
    if "suppress_tokens" in given:
        tokens = _token_ids(given["suppress_tokens"])
        if tokens is None:
            problems.append(("suppress_tokens", 'suppress_tokens: must be comma-separated token ids, such as "-1"'))
        else:
            ours["suppress_tokens"] = tokens

    increment = given.get("temperature_increment_on_fallback", DEFAULT_TEMPERATURE_INCREMENT)
    start = given.get("temperature", 0.0)
    if increment is not None and (not _is_number(increment) or not 0 < increment <= 1):
        problems.append(
            ("temperature_increment_on_fallback", "temperature_increment_on_fallback: must be over 0, at most 1")
        )
    elif _is_number(start) and 0 <= start <= 1:  # anything else is left to the request model to refuse
        ours["temperature"] = temperature_ladder(start, increment)

    asked = OfficialRequest(
        transcription=formats["transcription"] or "plain_text",
        translate=translate is True,
        translation=formats["translation"] or "plain_text",
        word_timestamps=given.get("word_timestamps") is True,
    )
    return ours, asked, problems


def temperature_ladder(start: float, increment: float | None) -> list[float]:
    """The official worker's fallback temperatures: from `start` up to 1 by `increment` (its
    `np.arange(temperature, 1.0 + 1e-6, increment)`), or `start` alone without an increment."""
    if increment is None:
        return [float(start)]
    steps = int((1.0 + 1e-6 - start) / increment)
    return [round(start + step * increment, 6) for step in range(steps + 1)]


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _token_ids(value: Any) -> list[int] | None:
    """Its `suppress_tokens` string ("-1", "-1,50256") as token ids; a list of ids (ours) is taken as it is."""
    if isinstance(value, list):
        return value  # the request model checks the items
    if not isinstance(value, str):
        return None
    try:
        return [int(part) for part in value.split(",") if part.strip()]
    except ValueError:
        return None


def official_output(
    transcript: Transcript, asked: OfficialRequest, translation: Transcript | None = None
) -> dict[str, Any]:
    """The official worker's output keys that ours lack (`segments`, `model` and `device` are ours already):
    `detected_language`, `transcription` and `translation` in the formats asked for, and `word_timestamps` when
    asked for, with its shapes."""
    output: dict[str, Any] = {
        "detected_language": transcript.language,
        "transcription": format_segments(asked.transcription, transcript.segments),
        "translation": format_segments(asked.translation, translation.segments) if translation is not None else None,
    }
    if asked.word_timestamps:
        output["word_timestamps"] = [
            {"word": word.word, "start": word.start, "end": word.end}
            for segment in transcript.segments
            for word in segment.words
        ]
    return output


def format_segments(text_format: str, segments: Iterable[Segment]) -> str:
    """Its `format_segments`: the segments as plain text, one line each, SRT or VTT, exactly as it writes them (its
    VTT has no header)."""
    from faster_whisper.utils import format_timestamp

    listed = list(segments)
    if text_format == "formatted_text":
        return "\n".join(segment.text.lstrip() for segment in listed)
    if text_format in ("srt", "vtt"):
        marker = "," if text_format == "srt" else "."
        cues = []
        for number, segment in enumerate(listed, start=1):
            start = format_timestamp(segment.start, always_include_hours=True, decimal_marker=marker)
            end = format_timestamp(segment.end, always_include_hours=True, decimal_marker=marker)
            cue = f"{start} --> {end}\n{segment.text.strip().replace('-->', '->')}\n\n"
            cues.append(f"{number}\n{cue}" if text_format == "srt" else cue)
        return "".join(cues)
    return " ".join(segment.text.lstrip() for segment in listed)
