"""One writer per catalog: an exclusive `flock` on the catalog's folder, and on `writer.lock` inside it.

The folder's lock is the one that counts: a folder cannot be unlinked while it
holds the catalog, so deleting `writer.lock` under a running writer no longer
lets a second process in. `writer.lock` still carries the holder's pid (for
the error message) and keeps snapmatch versions that lock only it out.
"""

from __future__ import annotations

import fcntl
import os
import time
from pathlib import Path

from snapmatch.sdk.errors import CatalogError, CatalogLockedError


class WriterLock:
    """Held from acquire() to release(); the OS drops it if the process dies."""

    def __init__(self, path: str | os.PathLike) -> None:
        self.path = Path(path)
        self._fd: int | None = None
        self._folder_fd: int | None = None

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds for the writer that holds it."""
        deadline = time.monotonic() + max(0.0, wait)
        try:
            folder_fd = os.open(self.path.parent, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
        except OSError as exc:
            raise CatalogError(f"cannot open the catalog folder {self.path.parent} ({exc.strerror or exc})") from None
        try:
            fd = _open_lock_file(self.path)
        except BaseException:
            os.close(folder_fd)
            raise
        for lock_fd in (folder_fd, fd):
            if not _flock(lock_fd, deadline):
                holder = _read_pid(fd)
                os.close(fd)
                os.close(folder_fd)
                who = f"pid {holder}" if holder else "another process"
                waited = f" (waited {wait:g} s)" if wait > 0 else ""
                raise CatalogLockedError(
                    f"catalog {self.path.parent} is being changed by {who}{waited}: one writer at a time. "
                    "Wait for it (CLI: --wait SECONDS; Python: open(..., wait=SECONDS)); searching works meanwhile "
                    "(readers never need the lock)"
                )
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd, self._folder_fd = fd, folder_fd

    def release(self) -> None:
        # Never raises: it runs in cleanup, where an I/O error here would hide the error being
        # handled; closing the descriptor drops the lock in any case.
        for fd in (self._fd, self._folder_fd):
            if fd is not None:
                try:
                    fcntl.flock(fd, fcntl.LOCK_UN)
                except OSError:
                    pass
                try:
                    os.close(fd)
                except OSError:
                    pass
        self._fd = self._folder_fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _open_lock_file(path: Path) -> int:
    try:
        return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except IsADirectoryError:
        raise CatalogError(f"{path} is a directory: remove it (it should be the writer's lock file)") from None
    except FileNotFoundError:
        raise CatalogError(f"{path} is a link to nothing: remove it (it should be the writer's lock file)") from None
    except OSError as exc:
        raise CatalogError(f"cannot open the writer lock {path} ({exc.strerror or exc})") from None


def _flock(fd: int, deadline: float) -> bool:
    """Lock `fd` exclusively, retrying until `deadline`; False when another process still holds it."""
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return True
        except BlockingIOError:
            if time.monotonic() >= deadline:
                return False
            time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (ValueError, OSError):
        return None
