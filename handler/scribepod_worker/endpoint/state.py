"""Where the local endpoint keeps what must outlive its process: the job database, and the lock that makes it its own.

One `serve` process owns a state directory at a time (an exclusive `flock` on `<state-dir>/lock`, which the kernel
drops when the process dies, kill -9 included). Owning the directory also makes it safe to sweep the jobs' temporary
folders at start: they live in a work folder of their own, `<state-dir>/tmp/`, and whatever is in it when the lock
is taken was left by a process that no longer runs (a clean shutdown removes the folder itself). It is inside the
state directory, not in the shared /tmp, where anyone could plant a link under its predictable name and have the
sweep empty another folder. Temporary folders of other processes (another `serve` on another state directory, a
RunPod worker) are never touched: nothing tells whether they are still in use.
"""

from __future__ import annotations

import fcntl
import os
import shutil
from pathlib import Path
from typing import IO


class StateDirInUse(RuntimeError):
    """Another live process holds the state directory's lock."""


def default_state_dir() -> Path:
    """$XDG_STATE_HOME/scribepod/endpoint, or ~/.local/state/scribepod/endpoint (the XDG default)."""
    base = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    return Path(base) / "scribepod" / "endpoint"


class StateDir:
    """An owned state directory: `database` for the jobs, `workdir` for their temporary files."""

    def __init__(self, path: Path) -> None:
        self.path = path.expanduser().resolve()
        self.path.mkdir(parents=True, exist_ok=True)
        self.database = self.path / "jobs.sqlite3"
        self.workdir = self.path / "tmp"
        self._lock: IO[str] | None = None

    def acquire(self) -> None:
        """Take the lock, or raise `StateDirInUse` naming the holder's pid."""
        lock = (self.path / "lock").open("a+")
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "unknown"
            lock.close()
            raise StateDirInUse(
                f"the state directory {self.path} is in use by another serve process (pid {holder}); "
                "stop it or pass another --state-dir"
            ) from None
        lock.seek(0)
        lock.truncate()
        lock.write(str(os.getpid()))
        lock.flush()
        self._lock = lock

    def sweep_workdir(self) -> int:
        """Empty the work folder (nothing in it is in use while the lock is held); the number of entries removed."""
        if self._lock is None:
            raise RuntimeError("sweep_workdir needs the state directory's lock")
        self.ensure_workdir()
        stale = list(self.workdir.iterdir())
        for entry in stale:
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry, ignore_errors=True)
            else:
                entry.unlink(missing_ok=True)
        return len(stale)

    def ensure_workdir(self) -> None:
        """Create the work folder again if something removed it (a /tmp cleaner): jobs could not start without it."""
        self.workdir.mkdir(mode=0o700, exist_ok=True)

    def release(self) -> None:
        """Remove the work folder (the jobs have stopped) and give the lock up."""
        if self._lock is not None:
            shutil.rmtree(self.workdir, ignore_errors=True)
            self._lock.close()
            self._lock = None
