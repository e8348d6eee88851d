"""One writer per directory: an advisory lock (``fcntl.flock``) on ``DIR/.lock``.

A run directory (``agents.training``) or a benchmark's ``--out`` folder is written by one
process at a time; a second one is refused with the PID of the holder. The kernel drops
the lock when its file descriptor closes, so it is released on any exit, SIGKILL included,
and a stale ``.lock`` file left behind locks nothing. The file is never removed: unlinking
it while another process waits on it would let two processes hold two different locks.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; the lock is then a no-op (documented in docs/reliability.md)
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".lock"


class DirectoryLocked(RuntimeError):
    """Another live process holds the directory's lock."""

    def __init__(self, directory: Path, pid: str, what: str) -> None:
        self.directory, self.pid = directory, pid
        super().__init__(
            f"{what} {directory} is in use by process {pid or '?'} (it holds {directory / LOCK_NAME}): "
            f"wait for that process to end, or stop it (kill {pid or 'PID'}), then retry"
        )


class DirLock:
    """An exclusive advisory lock on ``directory``, held until :meth:`release` (or the process ends)."""

    def __init__(self, directory: str | os.PathLike, what: str = "directory") -> None:
        self.directory = Path(directory)
        self.path = self.directory / LOCK_NAME
        self._fd: int | None = None
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.read(fd, 64).decode(errors="replace").strip()
                os.close(fd)
                raise DirectoryLocked(self.directory, holder, what) from None
        os.ftruncate(fd, 0)  # the holder's PID, for the message a second process prints
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the descriptor drops the flock
            self._fd = None

    def __enter__(self) -> DirLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


@contextlib.contextmanager
def locked(directory: str | os.PathLike, what: str = "directory") -> Iterator[DirLock]:
    """``with locked(run_dir, "run directory"):`` one writer at a time; :class:`DirectoryLocked` if taken."""
    lock = DirLock(directory, what)
    try:
        yield lock
    finally:
        lock.release()
