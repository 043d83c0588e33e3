"""How a running job is told to stop: one `StopSignal` per job, set by whoever runs it, checked inside every stage.

A thread cannot be killed, so each stage checks the signal in its own loop (download chunks, ffmpeg reads, ASR
batches, diarization steps) and a blocked download is woken by a watcher. A stopped job frees its slot within about
a second instead of running to the end for a result nobody will read.
"""

from __future__ import annotations

import threading


class JobStopped(BaseException):
    """Raised inside a stage when the job's `StopSignal` is set (cancelled, timed out, or the server is closing).

    A BaseException so that the handler's catch-all, which turns every Exception into a FAILED result, lets it pass
    to whoever set the signal and is waiting to discard the job.
    """


class StopSignal:
    """Thread-safe: set from the endpoint's threads, read from the job's thread and its diarization thread."""

    def __init__(self) -> None:
        self._event = threading.Event()
        self.reason = ""

    def set(self, reason: str) -> None:
        """Ask the job to stop; `reason` (cancelled, timed out, shutting down) ends up in the log."""
        if not self._event.is_set():
            self.reason = reason
            self._event.set()

    @property
    def is_set(self) -> bool:
        return self._event.is_set()

    def check(self) -> None:
        """Raise `JobStopped` if the job was asked to stop; call this inside every loop that can run for long."""
        if self._event.is_set():
            raise JobStopped(self.reason)

    def wait(self, timeout_s: float | None = None) -> bool:
        """Block until the signal is set or `timeout_s` passes; True if it was set (for watcher threads)."""
        return self._event.wait(timeout_s)
