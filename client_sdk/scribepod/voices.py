"""Named speakers on the client: which voices still need enrolling, and voiceprints saved for reuse.

A job's `speakers` may name recordings (enrolled first, in one `enroll` job, then remembered by the client) or
voiceprints (sent as they are), so the same recording is sent once, not with every job.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scribepod._sources import Source, is_remote, read_bytes
from scribepod.errors import InvalidInput
from scribepod.models import SpeakerSample, Voiceprint

Voice = Source | Voiceprint | SpeakerSample
SpeakerVoices = Mapping[str, Voice | list[Voice] | tuple[Voice, ...]] | Sequence[SpeakerSample]
"""What `transcribe(..., speakers=)` and `enroll` take: {name: recording or voiceprint, or a list of them (samples
of one person)}, or the list `enroll` and `load_voiceprints` give."""

_FILE_VERSION = 1


@dataclass(frozen=True)
class Recording:
    """A voice sample still to enrol, with the key the client remembers its voiceprint by."""

    name: str
    source: Source
    key: str


def split_voices(speakers: SpeakerVoices) -> tuple[list[SpeakerSample | Recording], list[Recording]]:
    """The job's speakers in order, each a voiceprint ready to send or a recording, and the recordings alone."""
    entries: list[SpeakerSample | Recording] = []
    if isinstance(speakers, Mapping):
        for name, given in speakers.items():
            for voice in given if isinstance(given, list | tuple) else [given]:
                entries.append(_entry(name, voice))
    elif isinstance(speakers, Sequence) and not isinstance(speakers, str | bytes):
        for voice in speakers:
            if not isinstance(voice, SpeakerSample):
                raise InvalidInput(
                    f"speakers: a list must hold SpeakerSample entries (as `enroll` returns), not "
                    f"{type(voice).__name__}; pass recordings as {{name: file}}"
                )
            entries.append(_entry(voice.name, voice))
    else:
        raise InvalidInput(f"speakers: give {{name: recording or voiceprint}} or a list, not {type(speakers).__name__}")
    return entries, [entry for entry in entries if isinstance(entry, Recording)]


def _entry(name: str, voice: Voice) -> SpeakerSample | Recording:
    """A voiceprint under `name` (checked with the job's other options, naming the field), or a recording."""
    if isinstance(voice, SpeakerSample) and voice.voiceprint is not None:
        return voice if voice.name == name else SpeakerSample.model_construct(**{**dict(voice), "name": name})
    if isinstance(voice, SpeakerSample):  # a recording given the wire's way: enrolled like any other
        if voice.audio is not None:
            return _recording(name, voice.audio)
        return _recording(name, base64.b64decode(voice.audio_base64 or "", validate=False))
    if isinstance(voice, Voiceprint):
        return SpeakerSample.model_construct(name=name, voiceprint=voice)
    return _recording(name, voice)


def _recording(name: str, source: Source) -> Recording:
    """A recording remembered by name and content: its bytes, read once here (a file object cannot be read twice), or
    for a URL its address."""
    if isinstance(source, str) and is_remote(source):
        return Recording(name, source, f"{name}\0url\0{source}")
    data = read_bytes(source)
    return Recording(name, data, f"{name}\0sha256\0{hashlib.sha256(data).hexdigest()}")


def wire_speakers(
    entries: Sequence[SpeakerSample | Recording], enrolled: Mapping[str, SpeakerSample]
) -> list[dict[str, Any]]:
    """The job's `speakers` field: every recording replaced by its voiceprint (`enrolled`, by key)."""
    samples = [enrolled[entry.key] if isinstance(entry, Recording) else entry for entry in entries]
    return [sample.model_dump(mode="json", exclude_none=True) for sample in samples]


def save_voiceprints(path: str | os.PathLike[str], voices: Sequence[SpeakerSample]) -> None:
    """Write enrolled voices to a JSON file only its owner can read: a voiceprint identifies a person's voice."""
    prints = []
    for voice in voices:
        if voice.voiceprint is None:
            raise InvalidInput(f"{voice.name}: only voiceprints are saved, not recordings (enrol it first)")
        prints.append(voice.model_dump(mode="json", exclude_none=True))
    target = Path(path)
    # A new file, readable by its owner alone from the start, then put in place in one step: an existing file's
    # looser mode never applies, and an interrupted save leaves the old voiceprints whole.
    descriptor, temporary = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    try:
        with os.fdopen(descriptor, "w", encoding="utf-8") as file:
            json.dump({"version": _FILE_VERSION, "voiceprints": prints}, file)
        Path(temporary).replace(target)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_voiceprints(path: str | os.PathLike[str]) -> list[SpeakerSample]:
    """Voices saved by `save_voiceprints`, checked as a job's `speakers` would be."""
    try:
        saved = json.loads(Path(path).read_text(encoding="utf-8"))
        if not isinstance(saved, dict) or saved.get("version") != _FILE_VERSION:
            raise ValueError(f"not a voiceprint file of version {_FILE_VERSION}")
        voices = [SpeakerSample.model_validate(item) for item in saved["voiceprints"]]
    except (OSError, ValueError, KeyError, TypeError) as error:  # pydantic's ValidationError is a ValueError
        detail = _first_error(error) if isinstance(error, ValidationError) else str(error)
        raise InvalidInput(f"{Path(path).name}: cannot read voiceprints: {detail}") from None
    if any(voice.voiceprint is None for voice in voices):
        raise InvalidInput(f"{Path(path).name}: holds a recording, not only voiceprints")
    return voices


def _first_error(error: ValidationError) -> str:
    first = error.errors()[0]
    return f"{'.'.join(str(part) for part in first['loc'])}: {first['msg'].removeprefix('Value error, ')}"
