"""One writer per catalog: an exclusive `flock` on `writer.lock`, which is never replaced."""

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

    def acquire(self, wait: float = 0.0) -> None:
        """Take the lock, waiting up to `wait` seconds for the writer that holds it."""
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        except IsADirectoryError:
            raise CatalogError(f"{self.path} is a directory: remove it (it should be the writer's lock file)") from None
        except FileNotFoundError:
            raise CatalogError(f"{self.path} is a link to nothing: remove it (it should be the writer's lock "
                               "file)") from None
        except OSError as exc:
            raise CatalogError(f"cannot open the writer lock {self.path} ({exc.strerror or exc})") from None
        deadline = time.monotonic() + max(0.0, wait)
        while True:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() < deadline:
                    time.sleep(min(0.1, max(0.0, deadline - time.monotonic())))
                    continue
                holder = _read_pid(fd)
                os.close(fd)
                who = f"pid {holder}" if holder else "another process"
                waited = f" (waited {wait:g} s)" if wait > 0 else ""
                raise CatalogLockedError(
                    f"catalog {self.path.parent} is being changed by {who}{waited}: one writer at a time. "
                    "Wait for it (CLI: --wait SECONDS; Python: open(..., wait=SECONDS)); searching works meanwhile "
                    "(readers never need the lock)"
                ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        self._fd = fd

    def release(self) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None

    @property
    def held(self) -> bool:
        return self._fd is not None


def _read_pid(fd: int) -> int | None:
    try:
        return int(os.pread(fd, 32, 0).decode().strip() or 0) or None
    except (ValueError, OSError):
        return None
