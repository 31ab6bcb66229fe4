"""File-system guards shared by the results store, checkpoints and the CLI.

Small pure helpers: a name check (a run or grid name is a plain name, never a
path), a symlink check (fedpoison never follows a link inside a folder it
owns), file checksums, and a check that an output folder is writable before
any work starts.
"""

from __future__ import annotations

import hashlib
import os
import stat
import uuid
from pathlib import Path

from fedpoison.errors import ResultsError

#: Longest plain name accepted (file systems allow 255 bytes; leave room for suffixes).
MAX_NAME = 120


def plain_name(name: object, what: str) -> str:
    """Return ``name`` when it is a plain folder name, else raise :class:`ResultsError`.

    A plain name is a non-empty printable string of at most :data:`MAX_NAME`
    characters, with no path separator, not starting with ``.`` or ``~`` (so
    never ``.``, ``..`` or a hidden name) and without NUL.

    Examples
    --------
    >>> plain_name("attack-impact", "grid name")
    'attack-impact'
    """
    if not isinstance(name, str) or not name:
        raise ResultsError(f"{what}: expected a plain name (letters, digits, '-', '_', '.'), got {name!r}")
    bad = ("/" in name or "\\" in name or "\0" in name or name[0] in ".~" or not name.isprintable()
           or len(name) > MAX_NAME or name != name.strip())
    if bad:
        shown = repr(name if len(name) <= MAX_NAME else name[:MAX_NAME] + "...")
        raise ResultsError(f"{what}: expected a plain name, not a path (no '/', no leading '.' or '~', "
                           f"printable, at most {MAX_NAME} characters), got {shown}")
    return name


def is_link(path: Path) -> bool:
    """Whether ``path`` is a symbolic link (without following it)."""
    try:
        return stat.S_ISLNK(os.lstat(path).st_mode)
    except OSError:
        return False


def refuse_link(path: Path, what: str) -> None:
    """Raise :class:`ResultsError` when ``path`` is a symbolic link."""
    if is_link(path):
        raise ResultsError(f"{path}: {what} is a symbolic link; fedpoison never follows links inside a results "
                           "folder (remove the link, or run `fedpoison store check DIR --repair`)")


def sha256_file(path: Path, chunk: int = 1 << 20) -> str:
    """The SHA-256 of a regular file, read without following a final symlink."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW)
    h = hashlib.sha256()
    with os.fdopen(fd, "rb") as fh:
        while block := fh.read(chunk):
            h.update(block)
    return h.hexdigest()


def sha256_bytes(data: bytes) -> str:
    """The SHA-256 of ``data`` as hex."""
    return hashlib.sha256(data).hexdigest()


def ensure_writable_dir(path: Path, what: str) -> Path:
    """Create ``path`` if needed and prove it writable with a probe file; return it.

    Raises :class:`ResultsError` naming ``what`` when ``path`` is a file, cannot
    be created, or refuses writes, so a run learns this before computing.
    """
    p = Path(path)
    if p.exists() and not p.is_dir():
        raise ResultsError(f"{what} {p}: expected a folder, found a file")
    try:
        p.mkdir(parents=True, exist_ok=True)
        probe = p / f".fedpoison-probe-{uuid.uuid4().hex}.tmp"
        fd = os.open(probe, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
        os.close(fd)
        probe.unlink()
    except OSError as exc:
        raise ResultsError(f"{what} {p}: expected a writable folder, got {exc.strerror or exc}") from None
    return p
