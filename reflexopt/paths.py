"""Where reflexopt keeps its files: `REFLEXOPT_HOME`, else ~/.reflexopt."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def home_dir() -> Path:
    root = os.environ.get("REFLEXOPT_HOME")
    path = Path(root).expanduser() if root else Path.home() / ".reflexopt"
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        from .errors import ConfigError

        where = f"REFLEXOPT_HOME={root}" if root else str(path)
        why = "it is a file" if path.is_file() else e.strerror or str(e)
        raise ConfigError(f"{where}: cannot be reflexopt's folder ({why})",
                          fix="point REFLEXOPT_HOME at a folder you can write to"
                              + (", or unset it to use ~/.reflexopt" if root else "")) from None
    return path


def hold_lock(path: Path, busy: str, *, fix: str) -> Any:
    """Take the file lock at `path` now, or raise ConfigError(busy) when another process holds it. The lock is
    the OS's (released when the returned lock's `release()` is called, or when the process ends, kill -9 too)."""
    from filelock import FileLock, Timeout

    from .errors import ConfigError

    lock = FileLock(path, timeout=0)
    try:
        lock.acquire()
    except Timeout:
        raise ConfigError(busy, fix=fix) from None
    return lock


def lock_held(path: Path) -> bool | None:
    """Whether a process holds the file lock at `path` now (taken with `hold_lock`); None when that cannot be
    told (no lock file, or it cannot be opened). Probing takes the lock for an instant and gives it back."""
    from filelock import FileLock, Timeout

    if not path.is_file():
        return None
    probe = FileLock(path, timeout=0)
    try:
        probe.acquire()
    except Timeout:
        return True
    except OSError:
        return None
    probe.release()
    return False


def _same_file(a: Path, b: Path) -> bool:
    """Whether two paths name one file (links too), or will once written."""
    try:
        return a.samefile(b) if a.exists() and b.exists() else a.resolve() == b.resolve()
    except OSError:
        return False


def check_writable(path: str | Path, option: str, *, directory: bool = False,
                   reads: dict[str, str | Path | None] | None = None) -> None:
    """Fail before any model call when `path` (the value of `option`) cannot be written: it is a directory (or,
    with `directory`, a file), a folder on its way is a file, or the nearest existing folder is read-only.
    Before, such a path failed after the whole run, at the write. `reads` names the files the command reads
    (e.g. {"the dataset": path}); an output that is one of them would replace it, and is refused."""
    from .errors import ConfigError

    p = Path(path).expanduser()
    for what, source in (reads or {}).items():
        if source and _same_file(p, Path(source).expanduser()):
            raise ConfigError(f"{option} {p} is {what}: writing there would replace it",
                              fix=f"give {option} another path")
    if p.exists() and p.is_dir() != directory:
        kind = "a file" if directory else "a directory"
        example = p.parent / "reports" if directory else p / "best.md"
        raise ConfigError(f"{option} {p} is {kind}", fix=f"give a {'folder' if directory else 'file'} path, "
                                                         f"e.g. {example}")
    parent = p if directory else p.parent
    while not parent.exists():
        parent = parent.parent
    if not parent.is_dir():
        raise ConfigError(f"{option} {p}: {parent} is a file, so no folder can be made there",
                          fix="choose another location")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise ConfigError(f"{option} {p}: the folder {parent} is not writable", fix="choose a writable location")


def write_text_atomic(path: Path, text: str) -> None:
    """Write a file the user keeps (or the run reads back) so that a failure midway leaves the old one whole: a
    temporary file beside it, then a rename; the folder is made when missing."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(path)
    except OSError as e:  # a failed write names no file: name the one the user knows
        raise OSError(e.errno, e.strerror, str(path)) from e
    finally:
        tmp.unlink(missing_ok=True)
