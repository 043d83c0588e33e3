"""Named speakers on the client: which voices still need enrolling, and voiceprints saved for reuse.

A job's `speakers` may name recordings (enrolled first, in one `enroll` job, then remembered by the client) or
voiceprints (sent as they are), so the same recording is sent once, not with every job.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from scribepod._sources import Source, is_remote, read_bytes
from scribepod.errors import InvalidInput
from scribepod.models import SpeakerSample, Voiceprint

SpeakerVoices = Mapping[str, Source | Voiceprint | SpeakerSample] | Sequence[SpeakerSample]
"""What `transcribe(..., speakers=)` takes: {name: recording or voiceprint}, or the list `enroll` and
`load_voiceprints` give."""

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
        for name, voice in speakers.items():
            if isinstance(voice, SpeakerSample):
                entries.append(_named(voice, name))
            elif isinstance(voice, Voiceprint):
                entries.append(_sample(name, voice))
            elif isinstance(voice, str) and is_remote(voice):
                entries.append(Recording(name, voice, f"{name}\0url\0{voice}"))
            else:  # read once: a file object cannot be read again for the enrolment
                data = read_bytes(voice)
                entries.append(Recording(name, data, f"{name}\0sha256\0{hashlib.sha256(data).hexdigest()}"))
    elif isinstance(speakers, Sequence) and not isinstance(speakers, str | bytes):
        for voice in speakers:
            if not isinstance(voice, SpeakerSample):
                raise InvalidInput(
                    f"speakers: a list must hold enrolled voices (SpeakerSample), not {type(voice).__name__}; "
                    "pass recordings as {name: file}"
                )
            entries.append(voice)
    else:
        raise InvalidInput(f"speakers: give {{name: recording or voiceprint}} or a list, not {type(speakers).__name__}")
    return entries, [entry for entry in entries if isinstance(entry, Recording)]


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
    descriptor = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        json.dump({"version": _FILE_VERSION, "voiceprints": prints}, file)
    target.chmod(0o600)  # an existing file keeps its mode through O_CREAT


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


def _named(voice: SpeakerSample, name: str) -> SpeakerSample:
    """`voice` under the mapping's name; checked with the rest of the job's options (naming the field)."""
    return voice if voice.name == name else SpeakerSample.model_construct(**{**dict(voice), "name": name})


def _sample(name: str, voiceprint: Voiceprint) -> SpeakerSample:
    return SpeakerSample.model_construct(name=name, voiceprint=voiceprint)
