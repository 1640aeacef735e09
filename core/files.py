"""Atomic writes: a temporary name in the same folder, then os.replace, so an interrupted run never leaves a
half-written file under the final name (a reader sees the old file or the new one, nothing between).

A full disk (ENOSPC, or a quota: EDQUOT) becomes one DiskFull error naming the file: the temporary file is
removed and everything already written stays. A SpaceReserve keeps room for the files that describe a run
(metrics.json), so they can still be written when the disk fills up under the frames."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


class DiskFull(UserError):
    """No space left for `path`. `resumable`: the command picks up where it stopped once there is space (process
    does; a live stream does not), and the line says so."""

    def __init__(self, path: Path, resumable: bool = False):
        self.path, self.resumable = Path(path), resumable
        super().__init__(f"{path}: no space left on the device; free some space or choose another output folder "
                         "(files already written are kept" + (", and the same command resumes)" if resumable else ")"))


class SpaceReserve:
    """A ballast file that holds `size` bytes of the output's file system while frames are written; release()
    frees it when the disk fills up (or at the end), so the run's summary files still fit. Without it a full disk
    would leave metrics.json describing other frames than the PNGs on disk."""

    def __init__(self, folder: Path, size: int):
        self.path = Path(folder) / f".smoothdino-reserve.{os.getpid()}"
        try:
            with open(self.path, "wb") as f:
                os.posix_fallocate(f.fileno(), 0, size)
        except OSError as err:
            self.path.unlink(missing_ok=True)
            if err.errno not in DISK_FULL:
                raise
            raise DiskFull(Path(folder)) from None

    def release(self) -> None:
        self.path.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yields a temporary path beside `path` (same suffix: OpenCV, onnx and np.savez choose by it) and moves it
    into place when the block ends without an error; on an error the temporary file is removed."""
    path = Path(path)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp{path.suffix}")
    try:
        yield tmp
        os.replace(tmp, path)
    except OSError as err:
        if err.errno in DISK_FULL:
            raise DiskFull(path) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp, open(tmp, "wb") as f:
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
