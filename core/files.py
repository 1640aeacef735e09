"""Atomic writes: a temporary name in the same folder, then os.replace, so an interrupted run never leaves a
half-written file under the final name (a reader sees the old file or the new one, nothing between).

A full disk (ENOSPC, or a quota: EDQUOT) becomes one DiskFull error naming the file: the temporary file is
removed and everything already written stays. So does running out of what a write needs besides the disk: open
files (EMFILE: this process's limit, as a flood of connections to a server in it would; ENFILE: the machine's) and
memory (ENOMEM): the same one line, saying which, and the same ending. A SpaceReserve keeps room for the files that
describe a run (metrics.json), so they can still be written when the disk fills up under the frames: bytes on the
disk, and a few spare descriptors for when the open files run out.

Durable: a file is fsync'd under its temporary name, renamed, then its folder is fsync'd, so after a power cut (a
Jetson's usual ending) a file under its final name holds its bytes (without it, ext4 may bring back a renamed PNG
empty). What it costs a frame: benchmarks/write_cost.py.

Temporary names say who made them: `.<name>.<host>~<pid>~<random>.tmp<suffix>`. The host part is this machine's name
and its pid namespace (two containers on one machine may share the name but never a pid space), the random part
keeps two writers apart wherever pids repeat (storage that `process --ray` shares across nodes). A process killed
outright (SIGKILL, power) leaves its temporaries behind; remove_stale_temporaries removes those of this host whose
process is gone, and leaves another host's alone (its process may be running there)."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import re
import secrets
import shutil
import socket
from collections.abc import Iterator
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from .errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT, errno.EMFILE, errno.ENFILE, errno.ENOMEM)
# what ran out, and what to do, for the errnos that are not the disk's
EXHAUSTED = {
    errno.EMFILE: ("too many open files in this process", "close what holds them (connections to its servers) or "
                                                         "raise its limit (ulimit -n)"),
    errno.ENFILE: ("too many open files on this machine", "close other programs' files"),
    errno.ENOMEM: ("out of memory", "free some memory"),
}
SPARE_DESCRIPTORS = 8  # held by a SpaceReserve: metrics.json needs a few even when the process has none left


class DiskFull(UserError):
    """No space left for `path` (or no descriptor, or no memory: `errno`, EXHAUSTED). `resumable`: the command picks
    up where it stopped once there is space (process does; a live stream does not), and the line says so."""

    _why: dict[str, int] = {}  # the last path's errno, so a DiskFull raised again for `resumable` keeps its reason

    def __init__(self, path: Path, resumable: bool = False, errno: int | None = None):
        self.path, self.resumable = Path(path), resumable
        if errno is None:
            errno = DiskFull._why.get(str(path))
        else:
            DiskFull._why = {str(path): errno}
        self.errno = errno
        what, advice = EXHAUSTED.get(errno, ("no space left on the device",
                                             "free some space or choose another output folder"))
        super().__init__(f"{path}: {what}; {advice} (files already written are kept"
                         + (", and the same command resumes)" if resumable else ")"))


@lru_cache(maxsize=1)
def this_host() -> str:
    """This machine as temporary names give it: its name (letters, digits and '-' only, so that the name a
    temporary stands for, dots and all, never runs into it) and, where Linux tells, its pid namespace: a pid means
    something only there."""
    name = re.sub(r"[^A-Za-z0-9-]", "-", socket.gethostname()) or "host"
    try:
        return f"{name}-{os.stat('/proc/self/ns/pid').st_ino}"
    except OSError:
        return name


def temporary_path(path: Path) -> Path:
    """A new temporary name beside `path` (its suffix kept: OpenCV, onnx and np.savez choose the format by it)."""
    path = Path(path)
    return path.with_name(f".{path.stem}.{this_host()}~{os.getpid()}~{secrets.token_hex(4)}.tmp{path.suffix}")


_TEMPORARY = re.compile(r"^\..*\.(?P<host>[A-Za-z0-9-]+)~(?P<pid>[0-9]+)~[0-9a-f]{8}\.tmp(\.[^.]*)?$")


@dataclass(frozen=True)
class Temporary:
    host: str
    pid: int

    @property
    def local(self) -> bool:
        return self.host == this_host()


def parse_temporary(name: str) -> Temporary | None:
    """Who made a temporary file, from its name; None for any other name (pid-only names of older versions
    included: their host is unknown)."""
    found = _TEMPORARY.match(name)
    return Temporary(found["host"], int(found["pid"])) if found else None


def process_alive(pid: int) -> bool:
    """A process of this pid namespace exists and has not exited (a zombie has: it writes nothing more)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: alive
        return True
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def remove_stale_temporaries(*folders: Path, recursive: bool = False) -> list[Path]:
    """Temporary files and folders in `folders` (with `recursive`, anywhere under them) that a process of this host
    left when it was killed: removed; returns them. Another host's, and a running process's, stay."""
    removed: list[Path] = []
    for folder in folders:
        pending = [Path(folder)]
        while pending:
            try:
                entries = list(os.scandir(pending.pop()))
            except (FileNotFoundError, NotADirectoryError):
                continue
            for entry in entries:
                made = parse_temporary(entry.name) if entry.name.startswith(".") else None  # ours start with "."
                if made is None:
                    if recursive and entry.is_dir(follow_symlinks=False):
                        pending.append(Path(entry.path))
                    continue
                if not made.local or process_alive(made.pid):
                    continue
                if entry.is_dir(follow_symlinks=False):
                    shutil.rmtree(entry.path, ignore_errors=True)
                else:
                    Path(entry.path).unlink(missing_ok=True)
                removed.append(Path(entry.path))
    return sorted(removed)


def _sync(path: Path, folder: bool = False) -> None:
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if folder else 0)
    try:
        fd = os.open(path, flags)
    except (IsADirectoryError, PermissionError):
        if os.name == "nt":  # Windows opens no folder: NTFS orders its own metadata
            return
        raise
    try:
        os.fsync(fd)
    except OSError as err:  # a file system that cannot sync a folder (some FUSE mounts) says EINVAL
        if not folder or err.errno not in (errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP, errno.EBADF):
            raise
    finally:
        os.close(fd)


def durable_replace(tmp: Path, path: Path) -> None:
    """os.replace(tmp, path) that survives a power cut: tmp's bytes (a folder: every file and folder in it) are on
    the disk before it takes the name, and the name is on the disk (its folder fsync'd) before this returns."""
    tmp = Path(tmp)
    if tmp.is_dir():
        for root, _, files in os.walk(tmp, topdown=False):
            for name in files:
                _sync(Path(root) / name)
            _sync(Path(root), folder=True)
    else:
        _sync(tmp)
    os.replace(tmp, path)
    _sync(Path(path).parent, folder=True)


class SpaceReserve:
    """A ballast file that holds `size` bytes of the output's file system while frames are written; release()
    frees it when the disk fills up (or at the end), so the run's summary files still fit. Without it a full disk
    would leave metrics.json describing other frames than the PNGs on disk."""

    def __init__(self, folder: Path, size: int):
        self.path = temporary_path(Path(folder) / "smoothdino-reserve")
        self.spare: list[int] = []
        try:
            with open(self.path, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, size)
            self.spare = [os.open(os.devnull, os.O_RDONLY) for _ in range(SPARE_DESCRIPTORS)]
        except OSError as err:
            self.release()
            if err.errno not in DISK_FULL:
                raise
            raise DiskFull(Path(folder), errno=err.errno) from None

    def release(self) -> None:
        spare, self.spare = self.spare, []
        for fd in spare:
            os.close(fd)
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path, durable: bool = True) -> Iterator[Path]:
    """Yields a temporary path beside `path` (temporary_path) and moves it into place when the block ends without
    an error (durable_replace; `durable=False` only for benchmarks/write_cost.py, which measures what it costs);
    on an error the temporary file is removed."""
    path = Path(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        durable_replace(tmp, path) if durable else os.replace(tmp, path)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise DiskFull(path, errno=err.errno) from None
        raise
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write_bytes(path: Path, data: bytes, durable: bool = True) -> Path:
    with atomic_path(path, durable) as tmp, open(tmp, "wb") as f:
        f.write(data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
