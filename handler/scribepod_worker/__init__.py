"""scribepod worker: speaker-attributed transcription (faster-whisper + diarization) for RunPod serverless."""

__version__ = "0.1.0"
