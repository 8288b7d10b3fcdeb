"""A FUSE file system that forgets what was not synced: power cuts for tests/sdk/catalog/test_powercut.py.

Run as ``python -m tests.sdk.catalog.powercut_fs MOUNTPOINT IMAGE --cut-after K --seed S [--torn]``.
It mounts an empty in-memory file system at MOUNTPOINT and serves it until
SIGTERM. Everything a process writes is visible at once, as on a real disk
with a page cache; what a power cut keeps is tracked beside it, under strict
POSIX rules (those of SQLite's crash-test VFS and LazyFS):

- a file's bytes are durable up to its last fsync (or fdatasync);
- a directory's entries (create, unlink, rename, mkdir) are durable only once
  that directory has been fsynced; until then the names it had at its last
  fsync stand, pointing at whatever those files last synced.

The first K changing calls (write, truncate, create, mkdir, unlink, rmdir,
rename, fsync, fsyncdir) run normally; call K+1 is the power cut. At that
moment the durable state is written, as plain files and folders, to IMAGE,
with IMAGE.json beside it; from then on every call fails with EIO, as a disk
that lost power would. With --torn, each write that was not synced yet
survives or not at random, 4 KiB page by page (SQLite's "powersafe
overwrite": a write never damages bytes outside its own range).

The file system runs single-threaded, so the cut falls between two calls and
nothing a process saw acknowledged can be missing from the durable state
unless the program skipped a sync.
"""

from __future__ import annotations

import argparse
import errno
import json
import os
import stat
import sys
import time
from pathlib import Path

import numpy as np
from mfusepy import FUSE, FuseOSError, Operations

PAGE = 4096


class Node:
    """A file or directory: what processes see now, and what a power cut would keep."""

    def __init__(self, ino: int, mode: int) -> None:
        self.ino = ino
        self.mode = mode
        self.nlink = 2 if stat.S_ISDIR(mode) else 1
        self.mtime_ns = time.time_ns()
        self.data = bytearray()  # files: the bytes processes see
        self.synced = b""  # files: the bytes at the last fsync
        self.unsynced: list[tuple[int, bytes] | tuple[None, int]] = []  # writes (offset, bytes), truncates (None, size)
        self.entries: dict[str, Node] = {}  # directories: the names processes see
        self.synced_entries: dict[str, Node] = {}  # directories: the names at the last fsync

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)

    def attrs(self) -> dict:
        return {"st_mode": self.mode, "st_ino": self.ino, "st_nlink": self.nlink, "st_uid": os.getuid(),
                "st_gid": os.getgid(), "st_size": len(self.data), "st_blocks": (len(self.data) + 511) // 512,
                "st_atime": self.mtime_ns, "st_mtime": self.mtime_ns, "st_ctime": self.mtime_ns}

    def sync(self) -> None:
        if self.is_dir:
            self.synced_entries = dict(self.entries)
        else:
            self.synced = bytes(self.data)
            self.unsynced.clear()

    def after_cut(self, rng: np.random.Generator | None) -> bytes:
        """The bytes a power cut leaves: the synced ones, plus (torn) some pages of later writes."""
        if rng is None or not self.unsynced:
            return self.synced
        data = bytearray(self.synced)
        for offset, payload in self.unsynced:
            if offset is None:  # a truncate reaches the disk with the metadata: or not at all
                if rng.random() < 0.5:
                    del data[payload:]
                    data.extend(bytes(max(0, payload - len(data))))
                continue
            for start in range(offset - offset % PAGE, offset + len(payload), PAGE):
                if rng.random() < 0.5:
                    continue
                lo, hi = max(start, offset), min(start + PAGE, offset + len(payload))
                if len(data) < lo:
                    data.extend(bytes(lo - len(data)))
                data[lo:hi] = payload[lo - offset:hi - offset]
        return bytes(data)


class PowerCutFS(Operations):
    use_ns = True

    def __init__(self, image: Path, cut_after: int, seed: int, torn: bool) -> None:
        self.root = Node(1, stat.S_IFDIR | 0o755)
        self.next_ino = 2
        self.handles: dict[int, Node] = {}
        self.next_fh = 1
        self.image = image
        self.changes_left = cut_after
        self.rng = np.random.default_rng(seed)
        self.torn = torn
        self.cut = False
        self.calls = 0

    # --- bookkeeping ---------------------------------------------------------------------

    def _alive(self) -> None:
        if self.cut:
            raise FuseOSError(errno.EIO)

    def _change(self, what: str) -> None:
        """Count a changing call; the one after the last allowed is the power cut."""
        self._alive()
        self.calls += 1
        if self.changes_left <= 0:
            self._power_cut(what)
            raise FuseOSError(errno.EIO)
        self.changes_left -= 1

    def _power_cut(self, what: str) -> None:
        self.cut = True
        rng = self.rng if self.torn else None
        self.image.mkdir(parents=True)

        def write(node: Node, target: Path) -> None:
            for name, child in node.synced_entries.items():
                if child.is_dir:
                    (target / name).mkdir()
                    write(child, target / name)
                else:
                    (target / name).write_bytes(child.after_cut(rng))

        write(self.root, self.image)
        info = {"calls": self.calls, "cut_at": what, "torn": self.torn}
        Path(f"{self.image}.json").write_text(json.dumps(info))

    def _node(self, path: str | None, fh: int | None = None) -> Node:
        if fh:
            node = self.handles.get(fh)
            if node is not None:
                return node
        if path is None:
            raise FuseOSError(errno.EBADF)
        node = self.root
        for part in path.strip("/").split("/"):
            if part:
                if not node.is_dir:
                    raise FuseOSError(errno.ENOTDIR)
                node = node.entries.get(part)
                if node is None:
                    raise FuseOSError(errno.ENOENT)
        return node

    def _parent(self, path: str) -> tuple[Node, str]:
        parent, _, name = path.rstrip("/").rpartition("/")
        node = self._node(parent or "/")
        if not node.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return node, name

    def _new(self, path: str, mode: int) -> Node:
        parent, name = self._parent(path)
        if name in parent.entries:
            raise FuseOSError(errno.EEXIST)
        node = Node(self.next_ino, mode)
        self.next_ino += 1
        parent.entries[name] = node
        parent.mtime_ns = time.time_ns()
        return node

    def _handle(self, node: Node) -> int:
        fh = self.next_fh
        self.next_fh += 1
        self.handles[fh] = node
        return fh

    # --- reading -------------------------------------------------------------------------

    def getattr(self, path, fh=None):
        self._alive()
        return self._node(path, fh).attrs()

    def access(self, path, amode):
        self._alive()
        self._node(path)
        return 0

    def readdir(self, path, fh):
        self._alive()
        node = self._node(path, fh)
        # inode numbers with the names: a directory entry with inode 0 is one readdir(3) skips
        return [(".", {"st_ino": node.ino, "st_mode": node.mode}, 0), ("..", {"st_ino": 1, "st_mode": self.root.mode}, 0),
                *((name, {"st_ino": child.ino, "st_mode": child.mode}, 0) for name, child in node.entries.items())]

    def opendir(self, path):
        self._alive()
        node = self._node(path)
        if not node.is_dir:
            raise FuseOSError(errno.ENOTDIR)
        return self._handle(node)

    def releasedir(self, path, fh):
        self.handles.pop(fh, None)
        return 0

    def open(self, path, flags):
        self._alive()
        return self._handle(self._node(path))

    def read(self, path, size, offset, fh):
        self._alive()
        return bytes(self._node(path, fh).data[offset:offset + size])

    def statfs(self, path):
        return {"f_bsize": PAGE, "f_frsize": PAGE, "f_blocks": 1 << 24, "f_bfree": 1 << 23, "f_bavail": 1 << 23,
                "f_files": 1 << 20, "f_ffree": 1 << 20, "f_favail": 1 << 20, "f_namemax": 255}

    def flush(self, path, fh):
        return 0  # close() on a local disk does not fail

    def release(self, path, fh):
        self.handles.pop(fh, None)
        return 0

    # --- changing ------------------------------------------------------------------------

    def create(self, path, mode, fi=None):
        self._change(f"create {path}")
        return self._handle(self._new(path, stat.S_IFREG | (mode & 0o7777)))

    def mkdir(self, path, mode):
        self._change(f"mkdir {path}")
        self._new(path, stat.S_IFDIR | (mode & 0o7777))
        return 0

    def write(self, path, data, offset, fh):
        self._change(f"write {path} {len(data)}@{offset}")
        node = self._node(path, fh)
        if len(node.data) < offset:
            node.data.extend(bytes(offset - len(node.data)))
        node.data[offset:offset + len(data)] = data
        node.unsynced.append((offset, bytes(data)))
        node.mtime_ns = time.time_ns()
        return len(data)

    def truncate(self, path, length, fh=None):
        self._change(f"truncate {path} {length}")
        node = self._node(path, fh)
        del node.data[length:]
        node.data.extend(bytes(length - len(node.data)))
        node.unsynced.append((None, length))
        node.mtime_ns = time.time_ns()
        return 0

    def unlink(self, path):
        self._change(f"unlink {path}")
        parent, name = self._parent(path)
        node = parent.entries.pop(name, None)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        node.nlink -= 1
        return 0

    def rmdir(self, path):
        self._change(f"rmdir {path}")
        parent, name = self._parent(path)
        node = parent.entries.get(name)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        if node.entries:
            raise FuseOSError(errno.ENOTEMPTY)
        del parent.entries[name]
        return 0

    def rename(self, old, new):
        self._change(f"rename {old} {new}")
        old_parent, old_name = self._parent(old)
        new_parent, new_name = self._parent(new)
        node = old_parent.entries.get(old_name)
        if node is None:
            raise FuseOSError(errno.ENOENT)
        replaced = new_parent.entries.get(new_name)
        if replaced is not None and replaced.is_dir and replaced.entries:
            raise FuseOSError(errno.ENOTEMPTY)
        del old_parent.entries[old_name]
        new_parent.entries[new_name] = node
        return 0

    def fsync(self, path, datasync, fh):
        self._change(f"fsync {path}")
        self._node(path, fh).sync()
        return 0

    def fsyncdir(self, path, datasync, fh):
        self._change(f"fsyncdir {path}")
        self._node(path, fh).sync()
        return 0

    def chmod(self, path, mode):
        self._alive()
        node = self._node(path)
        node.mode = (node.mode & ~0o7777) | (mode & 0o7777)
        return 0

    def chown(self, path, uid, gid):
        self._alive()
        return 0

    def utimens(self, path, times=None):
        self._alive()
        node = self._node(path)
        node.mtime_ns = times[1] if times else time.time_ns()
        return 0


class _FUSE(FUSE):
    def truncate_fuse_3(self, path, length, fip):
        """mfusepy drops the file handle of ftruncate; an unlinked open file has no path to go by."""
        fh = fip.contents.fh if fip else None
        return self.operations.truncate(None if path is None else path.decode(), length, fh)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("mountpoint")
    parser.add_argument("image", type=Path)
    parser.add_argument("--cut-after", type=int, required=True)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--torn", action="store_true")
    args = parser.parse_args(argv)
    fs = PowerCutFS(args.image, args.cut_after, args.seed, args.torn)
    # nothreads: one call at a time, so the cut is atomic; hard_remove: an unlinked open file
    # is dropped, not renamed to .fuse_hidden*; use_ino: the catalog compares inode numbers.
    try:
        _FUSE(fs, args.mountpoint, foreground=True, nothreads=True, hard_remove=True, use_ino=True,
              attr_timeout=0, entry_timeout=0, negative_timeout=0)
    except RuntimeError as exc:
        if str(exc) != "8":  # libfuse's "ended by a signal" (SIGTERM is how the test unmounts)
            raise
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
