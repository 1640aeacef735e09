"""Atomic writes: a temporary name in the same folder, then os.replace, so an interrupted run never leaves a
half-written file under the final name (a reader sees the old file or the new one, nothing between).

A full disk (ENOSPC, or a quota: EDQUOT) becomes one UserError naming the file: the temporary file is
removed, everything already written stays, and the same command resumes once there is space."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path

from .errors import UserError

DISK_FULL = (errno.ENOSPC, errno.EDQUOT)


def disk_full_error(path: Path) -> UserError:
    return UserError(f"{path}: no space left on the device; free some space or choose another output folder "
                     "(files already written are kept, and the same command resumes)")


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
            raise disk_full_error(path) from None
        raise
    finally:
        if tmp.exists():
            tmp.unlink()


def write_file(path: Path, data: bytes) -> None:
    """The one place file bytes are written (the fault-injection tests replace it to simulate a full disk)."""
    with open(path, "wb") as f:
        f.write(data)


def atomic_write_bytes(path: Path, data: bytes) -> Path:
    with atomic_path(path) as tmp:
        write_file(tmp, data)
    return Path(path)


def atomic_write_text(path: Path, text: str) -> Path:
    return atomic_write_bytes(path, text.encode())


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
