"""Crash-safe file writes: a kill at any moment leaves either the old or the new file, never half."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import json
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from cognimamba.errors import CogniError


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


_UMASK = _current_umask()


def fsync_dir(path: Path) -> None:
    """Make a rename inside `path` durable (no-op where directories cannot be opened, e.g. Windows)."""
    with contextlib.suppress(OSError):
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


class DiskFullError(CogniError):
    """No space left (or over quota) while writing; what was there before is untouched."""


def is_disk_full(error: BaseException) -> bool:
    """True for ENOSPC/EDQUOT, also when a library wraps it: safetensors raises SafetensorError("... os error 28"),
    torch.save a RuntimeError ("unexpected pos") whose __context__ is the OSError."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        text = str(current)
        if "No space left on device" in text or f"os error {errno.ENOSPC})" in text or "Disk quota exceeded" in text:
            return True
        current = current.__cause__ or current.__context__
    return False


@contextlib.contextmanager
def disk_errors(what: str) -> Iterator[None]:
    """Turn a full disk into a clear message instead of a traceback."""
    try:
        yield
    except CogniError:
        raise
    except Exception as error:
        if is_disk_full(error):
            raise DiskFullError(f"disk full while writing {what}; free some space and try again "
                                "(the previous file is untouched)") from error
        raise


def atomic_write(path: Path, write: Callable[[Path], None]) -> None:
    """Call `write(tmp_path)`, fsync, then rename over `path`."""
    path = Path(path)
    if path.is_dir():
        raise CogniError(f"{path}: is a directory; give a file name")
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp creates 0600; give the file the usual permissions
    try:
        with disk_errors(str(path)):
            write(tmp)
            with open(tmp, "rb+") as handle:
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        fsync_dir(path.parent)
    finally:
        if tmp.exists():
            tmp.unlink()


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text, encoding="utf-8"))


def atomic_write_json(path: Path, data: Any) -> None:
    atomic_write_text(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


def sha256_file(path: Path, chunk_size: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(chunk_size):
            digest.update(chunk)
    return digest.hexdigest()


def read_json(path: Path, what: str) -> Any:
    """Read a JSON file, or raise a one-line error naming it."""
    path = Path(path)
    if not path.is_file():
        raise CogniError(f"{path}: {what} not found")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise CogniError(f"{path}: {what} is not valid JSON ({error}); re-create it") from error


def safe_child(root: Path, name: str) -> Path:
    """Resolve `name` inside `root`, refusing anything that would escape it (../, absolute paths, symlinks out)
    or that names `root` itself."""
    root = Path(root).resolve()
    try:
        candidate = (root / name).resolve()
    except (ValueError, OSError) as error:  # NUL bytes, symlink loops
        raise CogniError(f"path {name!r} is not a usable file name ({error}); use a plain name") from error
    if root not in candidate.parents:
        raise CogniError(f"path {name!r} escapes {root}; use a plain name inside it")
    return candidate
