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
from scribepod.usage import PRICES_AS_OF, GpuClass, JobCost, PriceTable, Usage, UsageSummary, estimate

__all__ = [
    "PRICES_AS_OF",
    "AsyncClient",
    "AsyncJob",
    "AuthenticationError",
    "Client",
    "EndpointUnavailable",
    "ErrorInfo",
    "GpuClass",
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
    "SubmissionUncertain",
    "Transcript",
    "TranscriptionOptions",
    "TranscriptionRequest",
    "Turn",
    "Usage",
    "UsageSummary",
    "Word",
    "estimate",
]
__version__ = "0.1.0"
