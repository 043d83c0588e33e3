"""scribepod: speaker-attributed transcription on RunPod serverless.

from scribepod import Client
with Client(endpoint_id="abc123") as client:           # RUNPOD_API_KEY from the environment
    transcript = client.transcribe("meeting.mp4", max_speakers=4)
print(transcript.to_srt())
"""

from scribepod._core import JobState
from scribepod._sources import S3Settings
from scribepod.client import AsyncClient, AsyncJob, Client, Job
from scribepod.errors import (
    AuthenticationError,
    EndpointUnavailable,
    InvalidInput,
    JobCancelled,
    JobFailed,
    JobNotFound,
    JobTimedOut,
    LocalInferenceUnavailable,
    PayloadTooLarge,
    ScribepodError,
    SubmissionUncertain,
)
from scribepod.models import (
    Enrollment,
    ErrorInfo,
    Identification,
    JobInfo,
    Segment,
    Speaker,
    SpeakerMatch,
    SpeakerSample,
    Transcript,
    TranscriptionOptions,
    TranscriptionRequest,
    Turn,
    Voiceprint,
    Word,
)
from scribepod.usage import PRICES_AS_OF, GpuClass, JobCost, PriceTable, Usage, UsageSummary, estimate
from scribepod.voices import load_voiceprints, save_voiceprints

__all__ = [
    "PRICES_AS_OF",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "Client",
    "EndpointUnavailable",
    "Enrollment",
    "ErrorInfo",
    "GpuClass",
    "Identification",
    "InvalidInput",
    "Job",
    "JobCancelled",
    "JobCost",
    "JobFailed",
    "JobInfo",
    "JobNotFound",
    "JobState",
    "JobTimedOut",
    "LocalInferenceUnavailable",
    "PayloadTooLarge",
    "PriceTable",
    "S3Settings",
    "ScribepodError",
    "Segment",
    "Speaker",
    "SpeakerMatch",
    "SpeakerSample",
    "SubmissionUncertain",
    "Transcript",
    "TranscriptionOptions",
    "TranscriptionRequest",
    "Turn",
    "Usage",
    "UsageSummary",
    "Voiceprint",
    "Word",
    "estimate",
    "load_voiceprints",
    "save_voiceprints",
]
__version__ = "0.1.0"
