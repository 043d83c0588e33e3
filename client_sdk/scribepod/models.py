"""The wire contract (docs/contract.md) as pydantic models: the single definition used by worker and SDK.

Requests are strict (unknown fields, wrong types and impossible values are rejected, naming the field);
responses are lenient (fields added by a newer worker are kept, not rejected), so the contract can grow.
"""

from __future__ import annotations

import math
import re
import unicodedata
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from scribepod import formats

OutputFormat = Literal["srt", "vtt", "txt", "rttm"]
Task = Literal["transcribe", "translate"]
# Most channels a multichannel job takes: each is a full transcription pass and a full-length buffer (7.1 is 8).
MAX_CHANNELS = 8
MAX_CHANNEL_NAME = 64
# Most voice samples or voiceprints one job may enrol, and the longest vector a voiceprint may hold (CAM++ gives
# 192 values, pyannote's WeSpeaker 256).
MAX_ENROLLED = 32
MAX_VOICEPRINT_VALUES = 4096
# Labels the worker gives unnamed speakers: an enrolled name must not look like one.
_SPEAKER_LABEL = re.compile(r"SPEAKER_\d+")

ErrorCode = Literal[
    "invalid_input",
    "audio_fetch_failed",
    "audio_decode_failed",
    "audio_too_long",
    "model_unavailable",
    "internal",
]


def _check_name(name: str) -> str:
    """A channel's or an enrolled speaker's name labels words in every format: it must say something. Returned in
    Unicode's composed form (NFC), so "José" typed on one system and another is one name."""
    if not name.strip() or name != name.strip() or len(name) > MAX_CHANNEL_NAME:
        raise ValueError(f"each name must be 1 to {MAX_CHANNEL_NAME} characters without leading or trailing spaces")
    if not name.isprintable():
        raise ValueError("names must not contain control characters")
    return unicodedata.normalize("NFC", name)


class Voiceprint(BaseModel):
    """A voice as a diarizer's embedding model sees it: the unit-length mean of its embeddings of a sample's speech.

    It compares only with voices embedded by the same `embedding_model`, so the worker refuses one made by
    another. It says how a voice sounds to that model, not what was said, and cannot be played back."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    embedding_model: str = Field(min_length=1, max_length=200)
    vector: list[float] = Field(min_length=1, max_length=MAX_VOICEPRINT_VALUES)
    seconds: float | None = Field(default=None, ge=0.0, allow_inf_nan=False)
    """The speech it was made from, in seconds."""

    @field_validator("vector")
    @classmethod
    def _usable_vector(cls, vector: list[float]) -> list[float]:
        if not all(math.isfinite(value) for value in vector):
            raise ValueError("every value must be a finite number")
        length = math.sqrt(math.fsum(value * value for value in vector))
        if not 1e-3 <= length <= 1e3:  # `enroll` gives unit length; far off it, cosines underflow or overflow
            raise ValueError(f"must be a voiceprint as `enroll` returns it (unit length, not {length:.3g})")
        return vector


class SpeakerSample(BaseModel):
    """A person to recognise by name: a recording of their voice (a few seconds to a minute of them alone), or the
    voiceprint an enrolment made of one (`enroll`), so the same recording is never sent twice."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    name: str
    audio: str | None = Field(default=None, min_length=1)
    audio_base64: str | None = Field(default=None, min_length=1)
    voiceprint: Voiceprint | None = None

    @field_validator("name")
    @classmethod
    def _speaker_name(cls, name: str) -> str:
        name = _check_name(name)
        if _SPEAKER_LABEL.fullmatch(name):
            raise ValueError("must not look like a label the worker gives unnamed speakers (SPEAKER_00, ...)")
        return name

    @model_validator(mode="after")
    def _one_voice(self) -> SpeakerSample:
        if sum(value is not None for value in (self.audio, self.audio_base64, self.voiceprint)) != 1:
            raise ValueError("give exactly one of `audio`, `audio_base64` and `voiceprint`")
        return self


class TranscriptionOptions(BaseModel):
    """Everything a job may ask for besides the audio itself."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    model: str | None = Field(default=None, min_length=1)
    language: str | None = Field(default=None, min_length=2, max_length=8)
    task: Task = "transcribe"
    word_timestamps: bool = True
    vad_filter: bool = True
    batch_size: int | None = Field(default=None, ge=1, le=256)
    beam_size: int = Field(default=5, ge=1, le=50)
    temperature: float | list[float] | None = None
    initial_prompt: str | None = None
    hotwords: str | None = None
    # faster-whisper's decoding options, under its names and with its defaults (the official worker's fields map here).
    best_of: int = Field(default=5, ge=1, le=50)
    patience: float = Field(default=1.0, gt=0.0, le=100.0)
    length_penalty: float = Field(default=1.0, ge=0.0, le=100.0)
    suppress_tokens: list[int] = Field(default_factory=lambda: [-1], max_length=1000)
    condition_on_previous_text: bool = True
    compression_ratio_threshold: float | None = Field(default=2.4, gt=0.0, allow_inf_nan=False)
    log_prob_threshold: float | None = Field(default=-1.0, allow_inf_nan=False)
    no_speech_threshold: float | None = Field(default=0.6, ge=0.0, le=1.0)
    diarize: bool = True
    num_speakers: int | None = Field(default=None, ge=1, le=64)
    min_speakers: int | None = Field(default=None, ge=1, le=64)
    max_speakers: int | None = Field(default=None, ge=1, le=64)
    output_formats: list[OutputFormat] = Field(default_factory=list)
    # Each speaker's voice as the diarizer's embedding model sees it (`Speaker.embedding`), so that transcripts of
    # parts of one recording can be given one set of speaker labels (the SDK's shards).
    return_embeddings: bool = False
    # One speaker per channel (a call recorded with each side on its own channel): each channel is transcribed on its
    # own and its words are its speaker's, CHANNEL_0, CHANNEL_1, ... or `channel_names`; no diarization. "auto": so
    # when the input is stereo and its channels differ (`Transcript.channels` says what was decided).
    multichannel: bool | Literal["auto"] = False
    channel_names: list[str] | None = Field(default=None, min_length=1, max_length=MAX_CHANNELS)
    # With multichannel: tell voices apart within each channel too (a meeting room on one channel, a caller on the
    # other); a channel where several are found labels them "<channel>/SPEAKER_00", ... The speaker counts apply per
    # channel.
    diarize_channels: bool = False
    # People to recognise: a speaker whose voice matches one of these takes its name instead of SPEAKER_xx
    # (`Speaker.match` says which sample and how close). Several samples may share a name (one person).
    speakers: list[SpeakerSample] | None = Field(default=None, min_length=1, max_length=MAX_ENROLLED)
    # The least cosine similarity at which a speaker takes an enrolled name (None: the worker's default, which the
    # output's `identification.threshold` gives). Higher: fewer wrong names, more speakers left SPEAKER_xx.
    speaker_threshold: float | None = Field(default=None, ge=-1.0, le=1.0, allow_inf_nan=False)

    @field_validator("multichannel", mode="before")
    @classmethod
    def _multichannel_choice(cls, value: object) -> object:
        """One message for the three choices, not one per member of the union."""
        if value is not True and value is not False and value != "auto":
            raise ValueError('must be true, false or "auto"')
        return value

    @field_validator("channel_names")
    @classmethod
    def _distinct_names(cls, names: list[str] | None) -> list[str] | None:
        """Each name labels one channel's speaker: it must say something, and two channels never share one."""
        names = [_check_name(name) for name in names] if names is not None else None
        if names is not None and len(set(names)) != len(names):
            raise ValueError("two channels must not have the same name")
        return names

    @field_validator("language")
    @classmethod
    def _language_code(cls, value: str | None) -> str | None:
        """Whisper takes ISO codes (`en`, `de`, `haw`); a name such as `english` would fail only on the worker."""
        if value is not None and not re.fullmatch(r"[A-Za-z]{2,3}", value):
            raise ValueError(f"use the language's ISO 639-1 code (en, de, fr, ...), not {value!r}")
        return value.lower() if value is not None else None

    @model_validator(mode="after")
    def _check_consistency(self) -> TranscriptionOptions:
        temperatures = self.temperature if isinstance(self.temperature, list) else [self.temperature]
        for value in temperatures:
            if value is not None and not 0.0 <= value <= 1.0:
                raise ValueError("temperature: every value must be between 0 and 1")
        if isinstance(self.temperature, list) and not self.temperature:
            raise ValueError("temperature: the list must not be empty")
        if self.min_speakers is not None and self.max_speakers is not None and self.min_speakers > self.max_speakers:
            raise ValueError("min_speakers: must not be greater than max_speakers")
        if self.num_speakers is not None:
            if self.min_speakers is not None and self.num_speakers < self.min_speakers:
                raise ValueError("num_speakers: must not be less than min_speakers")
            if self.max_speakers is not None and self.num_speakers > self.max_speakers:
                raise ValueError("num_speakers: must not be greater than max_speakers")
        if self.return_embeddings and not self.diarize:
            raise ValueError("return_embeddings: needs diarize (the embeddings are the diarizer's)")
        if self.speaker_threshold is not None and self.speakers is None:
            raise ValueError("speaker_threshold: needs speakers (it is the least similarity to an enrolled voice)")
        if self.speakers is not None and not self.diarize:
            raise ValueError("speakers: needs diarize (voices are recognised among the diarizer's speakers)")
        if len(set(self.output_formats)) != len(self.output_formats):
            raise ValueError("output_formats: must not repeat a format")
        return self._check_multichannel()

    def _check_multichannel(self) -> TranscriptionOptions:
        """Speakers are channels in multichannel mode unless `diarize_channels` asks to tell voices apart within each:
        the diarizer's options are refused rather than ignored without it (`diarize` itself, true by default, is not
        applied to channels)."""
        if self.channel_names is not None and self.multichannel is False:
            raise ValueError('channel_names: needs multichannel (true or "auto")')
        if self.speakers is not None and self.multichannel is not False:
            raise ValueError("speakers: not with multichannel (its speakers are channels; name them in channel_names)")
        if self.return_embeddings and self.multichannel is not False:
            raise ValueError("return_embeddings: not with multichannel (its speakers are channels, not voices)")
        if self.diarize_channels and self.multichannel is False:
            raise ValueError('diarize_channels: needs multichannel (true or "auto")')
        if self.diarize_channels and not self.diarize:
            raise ValueError("diarize_channels: not with diarize false")
        if self.diarize_channels and any("/" in name for name in self.channel_names or []):
            raise ValueError("channel_names: no '/' with diarize_channels (it joins a channel's name to its voices)")
        if self.multichannel is True and not self.diarize_channels:
            for name in ("num_speakers", "min_speakers", "max_speakers"):
                if getattr(self, name) is not None:
                    raise ValueError(
                        f"{name}: not with multichannel true: each channel is one speaker (with diarize_channels, "
                        "the counts apply to each channel)"
                    )
        return self


class TranscriptionRequest(TranscriptionOptions):
    """A job's `input`: exactly one audio source plus options."""

    audio: str | None = Field(default=None, min_length=1)
    audio_base64: str | None = Field(default=None, min_length=1)

    @model_validator(mode="after")
    def _check_one_source(self) -> TranscriptionRequest:
        if (self.audio is None) == (self.audio_base64 is None):
            raise ValueError("audio: give exactly one of `audio` and `audio_base64`")
        return self

    def options(self) -> TranscriptionOptions:
        """The options without the audio source (what the engine needs once the audio is decoded)."""
        return TranscriptionOptions.model_validate(self.model_dump(exclude={"audio", "audio_base64"}))


class EnrollmentRequest(BaseModel):
    """A job's `input` that enrols voices instead of transcribing: each sample's voiceprint comes back, to send as
    `speakers` in later jobs."""

    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)

    enroll: list[SpeakerSample] = Field(min_length=1, max_length=MAX_ENROLLED)

    @field_validator("enroll")
    @classmethod
    def _recordings(cls, samples: list[SpeakerSample]) -> list[SpeakerSample]:
        if any(sample.voiceprint is not None for sample in samples):
            raise ValueError("give recordings (`audio` or `audio_base64`): a voiceprint is enrolled already")
        return samples


class _Response(BaseModel):
    model_config = ConfigDict(extra="allow")


class Word(_Response):
    start: float
    end: float
    word: str
    probability: float
    speaker: str | None = None


class Segment(_Response):
    id: int
    start: float
    end: float
    text: str
    speaker: str | None = None
    avg_logprob: float | None = None
    no_speech_prob: float | None = None
    words: list[Word] = Field(default_factory=list)


class Speaker(_Response):
    id: str
    duration: float
    embedding: list[float] | None = None
    """With `return_embeddings`: the unit-length centroid of the speaker's voice embeddings (`embedding_model`'s)."""
    match: SpeakerMatch | None = None
    """With `speakers` in the request: the enrolled voice this speaker was recognised as (`id` is then its name)."""
    similarities: dict[str, float] | None = None
    """With `speakers` in the request: the speaker's similarity to each enrolled name (its best sample)."""


class SpeakerMatch(_Response):
    """The enrolled voice a speaker was recognised as."""

    name: str
    sample: int
    """The index in the request's `speakers` of the sample or voiceprint that matched best."""
    similarity: float
    """Cosine similarity of the speaker's voice to that sample's (1: the same direction); at least
    `Identification.threshold`."""


class Identification(_Response):
    """With `speakers` in the request: how speakers were matched to the enrolled voices."""

    threshold: float
    """The least similarity at which a speaker takes an enrolled name."""
    embedding_model: str
    enrolled: list[str]
    """The names asked for, in the request's order, each once."""
    not_found: list[str] = Field(default_factory=list)
    """Enrolled names no speaker matched."""


class Turn(_Response):
    start: float
    end: float
    speaker: str


class Channels(_Response):
    """What a job that asked for `multichannel` (true or "auto") decided."""

    multichannel: bool
    """Whether the channels were transcribed one by one (false: "auto" found them alike and mixed them to mono)."""
    count: int
    """The input's audio channels."""
    speakers: list[str] = Field(default_factory=list)
    """With `multichannel`: the speaker of each channel, in channel order."""
    separation: float | None = None
    """With "auto" on stereo: the share of speech frames in which one channel is at least 10 dB louder than the
    other; "auto" goes multichannel at 0.5 or more when each channel leads in 2% of them (see docs/contract.md)."""
    crosstalk_words_dropped: int = 0
    """Words dropped as cross-talk: the copy of a word two channels heard at the same time that is less loud on its
    own channel (unless each is 6 dB louder on its own side: two people said it), or any word over which another
    channel is 12 dB louder (the other side's voice heard through this side's microphone)."""


Provider = Literal["runpod", "endpoint", "local"]
"""Who ran a job: RunPod's API, another endpoint at a base URL (such as `scribepod-worker serve`), or this
process (local inference)."""


class JobInfo(_Response):
    """Where and how a transcript was made; filled in by the SDK, not sent by the worker."""

    id: str | None = None
    delay_time: float | None = None
    execution_time: float | None = None
    worker_id: str | None = None
    provider: Provider = "runpod"
    gpu_class: str | None = None
    """The price class of the GPU the job ran on (`unknown`: none matched); see `scribepod.usage`."""
    estimated_cost_usd: float | None = None
    """executionTime x the class's price per second; None where the job cannot be priced (CPU, unknown GPU)."""
    offset: float | None = None
    """A shard's start in the whole recording, in seconds (see `shards`)."""
    shards: list[JobInfo] | None = None
    """A recording transcribed in shards (`transcribe(..., shards=)`): one entry per shard's job. Then `id` is None
    and `execution_time` and `estimated_cost_usd` are the shards' sums."""


class Transcript(_Response):
    """A job's `output`."""

    text: str
    language: str | None = None
    language_probability: float | None = None
    duration: float
    segments: list[Segment] = Field(default_factory=list)
    speakers: list[Speaker] = Field(default_factory=list)
    turns: list[Turn] = Field(default_factory=list)
    model: str | None = None
    device: str | None = None
    gpu: str | None = None  # the GPU model the job ran on; null on CPU
    diarizer: str | None = None
    embedding_model: str | None = None  # the model behind `speakers[].embedding`; centroids of others do not compare
    channels: Channels | None = None  # with `multichannel`: what was decided; null for other jobs
    identification: Identification | None = None  # with `speakers`: how speakers were matched to enrolled voices
    timings: dict[str, float] = Field(default_factory=dict)
    formats: dict[str, str] = Field(default_factory=dict)
    job: JobInfo | None = None

    def to_srt(self) -> str:
        return formats.render_srt(self)

    def to_vtt(self) -> str:
        return formats.render_vtt(self)

    def to_text(self) -> str:
        return formats.render_text(self)

    def to_rttm(self, file_id: str = "audio") -> str:
        return formats.render_rttm(self, file_id)

    def render(self, fmt: OutputFormat) -> str:
        return formats.render(self, fmt)


class Enrollment(_Response):
    """An enrolment job's `output`: `speakers` holds one voiceprint per sample, in order, ready to send as a later
    job's `speakers`."""

    speakers: list[SpeakerSample]
    embedding_model: str
    timings: dict[str, float] = Field(default_factory=dict)


class ProgressUpdate(_Response):
    """What a running job reports: /status shows the latest as its `output`; each /stream item is one.

    `segments` are provisional (no speaker, no words): in /status, every segment decoded so far; in a /stream item,
    those new since the item before. `id` numbers them in order, as the final transcript's numbering would without
    speaker splits; the final transcript is exact and may split one where the speaker changes."""

    stage: str
    percent: float
    segments: list[Segment] = Field(default_factory=list)


class ErrorInfo(BaseModel):
    """A failed job's `error`, sent as this object encoded as a JSON string."""

    model_config = ConfigDict(extra="allow")

    code: ErrorCode | str
    message: str
    field: str | None = None
