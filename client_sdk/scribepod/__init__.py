"""scribepod: speaker-attributed transcription on RunPod serverless."""

from scribepod.models import (
    ErrorInfo,
    JobInfo,
    Segment,
    Speaker,
    Transcript,
    TranscriptionOptions,
    TranscriptionRequest,
    Turn,
    Word,
)

__all__ = [
    "ErrorInfo",
    "JobInfo",
    "Segment",
    "Speaker",
    "Transcript",
    "TranscriptionOptions",
    "TranscriptionRequest",
    "Turn",
    "Word",
]
__version__ = "0.1.0"
