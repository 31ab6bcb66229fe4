"""A crash-safe results store: one directory per run, keyed by the config hash.

Layout of a results directory ``DIR``::

    DIR/grid.yaml               the grid as run (base resolved, --set overrides included)
    DIR/plan.json               every run of the grid: key, index, axis values
    DIR/runs/<key>/             a finished run: config.yaml, history.csv, timings.csv,
                                audit.csv, summary.json and DONE.json
    DIR/failed/<key>/           a failed run: config.yaml, error.txt, FAILED.json
    DIR/events.jsonl            one line per start, finish and failure (append-only)
    DIR/.staging/               directories being written (removed at the next start)
    DIR/.staging/checkpoints/<key>/  the last checkpoint of a run in progress (kept across
                                invocations, so a killed grid resumes the run; removed when
                                the run commits)
    DIR/damaged/                damaged runs moved aside (``fedpoison store check --repair``, or a grid)
    DIR/.lock                   held (flock) by the grid writing into DIR

**The invariant**: ``runs/<key>/`` exists only complete. A run's files are
written and fsynced into a fresh directory under ``.staging/``, ``DONE.json``
last, and the directory is then renamed to ``runs/<key>/`` in one
``rename(2)``. A process killed at any moment leaves either no ``runs/<key>/``
(the run is rerun) or a complete one (it is skipped); a leftover staging
directory is never read. A finished run is never replaced: the rename fails
when ``runs/<key>/`` exists. Failures go to ``failed/<key>/`` the same way and
are replaced when retried.

Only one process writes a store at a time (an ``flock`` on ``DIR/.lock``, which
the kernel releases when the holder dies, even by SIGKILL).

**Damage.** ``DONE.json`` holds the size and SHA-256 of every file of the run.
A run whose folder differs from it in any way (a file missing, cut short,
changed, added, or a symbolic link) is *damaged*: readers never read it as
data, :meth:`ResultStore.scan` names it, a grid moves it aside to
``damaged/`` and recomputes it. The store never follows a symbolic link inside
``DIR`` and never writes or deletes outside ``DIR``.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import shutil
import socket
import tempfile
import time
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from fedpoison.errors import ResultsError
from fedpoison.safe_fs import is_link, plain_name, refuse_link, sha256_bytes, sha256_file
from fedpoison.simulation.result import atomic_write_bytes as _atomic_write_bytes

RUNS = "runs"
FAILED = "failed"
STAGING = ".staging"
DAMAGED = "damaged"
DONE = "DONE.json"
FAILED_MARK = "FAILED.json"
EVENTS = "events.jsonl"
LOCK = ".lock"
#: Format of ``DONE.json``: 2 added the ``files`` checksums.
DONE_FORMAT = 2
#: Folder under staging that holds the checkpoints of runs in progress.
CHECKPOINTS = "checkpoints"
#: Files every finished run has (besides DONE.json).
RUN_FILES = ("config.yaml", "history.csv", "summary.json")


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


#: Modes of what the store creates (mkstemp and mkdtemp would make them private).
_FILE_MODE = 0o666 & ~_umask()
_DIR_MODE = 0o777 & ~_umask()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _write_file(path: Path, data: bytes) -> None:
    with open(path, "wb") as fh:
        fh.write(data)
        fh.flush()
        os.fsync(fh.fileno())


def atomic_write_bytes(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically, with the store's file mode."""
    _atomic_write_bytes(path, data, mode=_FILE_MODE)


class StoreLocked(ResultsError):
    """Another process is writing into the same results directory."""


class ResultStore:
    """A results directory (see the module docstring for its layout and guarantees).

    Parameters
    ----------
    root:
        The results directory; created on first write. ``root`` itself may be
        a symbolic link (the caller chose it); nothing inside it is followed.
    """

    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.runs_dir = self.root / RUNS
        self.failed_dir = self.root / FAILED
        self.staging_dir = self.root / STAGING
        self.damaged_dir = self.root / DAMAGED
        self._lock_fd: int | None = None

    # ---- locking and housekeeping ------------------------------------------------
    def _own_paths(self) -> list[Path]:
        """Paths inside ``root`` that the store writes, none of which may be a link."""
        return [self.root / LOCK, self.runs_dir, self.failed_dir, self.staging_dir, self.damaged_dir,
                self.root / EVENTS, self.root / "grid.yaml", self.root / "plan.json"]

    @contextlib.contextmanager
    def writing(self) -> Iterator[ResultStore]:
        """Hold the store's write lock, create its folders and clear stale staging.

        Raises :class:`ResultsError` when any of the store's own paths is a
        symbolic link or not a folder where a folder belongs.
        """
        if self.root.exists() and not self.root.is_dir():
            raise ResultsError(f"results directory {self.root}: expected a folder, found a file")
        self.root.mkdir(parents=True, exist_ok=True)
        for path in self._own_paths():
            refuse_link(path, f"the store's {path.name}")
        fd = os.open(self.root / LOCK, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as exc:
            os.close(fd)
            if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                raise StoreLocked(f"results directory {self.root}: another fedpoison grid is writing "
                                  "into it; wait for it to finish or use another --out") from None
            raise
        self._lock_fd = fd
        try:
            for d in (self.runs_dir, self.failed_dir, self.staging_dir):
                if d.exists() and not d.is_dir():
                    raise ResultsError(f"results directory {self.root}: {d.name} should be a folder, found a file "
                                       "(run `fedpoison store check DIR --repair`)")
                d.mkdir(exist_ok=True)
            for stale in self.staging_dir.iterdir():
                if stale.name == CHECKPOINTS and not is_link(stale) and stale.is_dir():
                    for entry in stale.iterdir():  # the runs in progress resume from these folders
                        if is_link(entry) or not entry.is_dir():
                            _delete_inside(entry)  # a link is removed, its target never touched
                    continue
                _delete_inside(stale)
            yield self
        finally:
            self._lock_fd = None
            fcntl.flock(fd, fcntl.LOCK_UN)
            os.close(fd)

    def _require_lock(self) -> None:
        if self._lock_fd is None:
            raise RuntimeError("ResultStore: writes need the lock; use `with store.writing():`")

    # ---- reading -------------------------------------------------------------------
    def verify(self, key: str) -> str | None:
        """Why ``runs/<key>/`` is not a whole finished run, or ``None`` when it is.

        Checks that the folder and its files are not links, that ``DONE.json``
        reads, and that the folder holds exactly the files it lists, each with
        the recorded size and SHA-256.
        """
        d = self.runs_dir / key
        if is_link(d):
            return "the run folder is a symbolic link"
        if not d.is_dir():
            return "not a folder" if d.exists() else "missing"
        done = d / DONE
        if is_link(done) or not done.is_file():
            return f"no {DONE} (the run never finished writing)"
        try:
            record = _read_json(done)
        except ResultsError as exc:
            return f"{DONE} unreadable ({str(exc).split(': ', 1)[-1]})"
        files = record.get("files")
        if record.get("format") != DONE_FORMAT or not isinstance(files, dict):
            return f"{DONE} has no file checksums (expected format {DONE_FORMAT})"
        try:
            present = {p.name for p in d.iterdir()} - {DONE}
        except OSError as exc:
            return f"cannot list it ({exc.strerror})"
        if present != set(files):
            missing, extra = sorted(set(files) - present), sorted(present - set(files))
            parts = ([f"missing {', '.join(missing)}"] if missing else []) + \
                    ([f"unexpected {', '.join(extra)}"] if extra else [])
            return "; ".join(parts)
        for name in sorted(files):
            entry, path = files[name], d / name
            if not isinstance(entry, dict) or not isinstance(entry.get("sha256"), str):
                return f"{DONE}: no checksum for {name}"
            if is_link(path) or not path.is_file():
                return f"{name} is not a regular file"
            try:
                size = path.stat().st_size
                if size != entry.get("bytes"):
                    return f"{name} has {size} bytes, {DONE} says {entry.get('bytes')}"
                if sha256_file(path) != entry["sha256"]:
                    return f"{name} does not match its checksum"
            except OSError as exc:
                return f"{name} unreadable ({exc.strerror})"
        if missing_req := [f for f in RUN_FILES if f not in files]:
            return f"missing {', '.join(missing_req)}"
        return None

    def scan(self) -> tuple[set[str], dict[str, str]]:
        """Finished (verified) keys, and damaged entries of ``runs/`` with the reason for each."""
        if is_link(self.runs_dir):
            return set(), {RUNS: "runs/ is a symbolic link"}
        if not self.runs_dir.is_dir():
            return set(), {}
        finished: set[str] = set()
        damaged: dict[str, str] = {}
        for p in sorted(self.runs_dir.iterdir()):
            if p.name.startswith("."):
                continue
            reason = self.verify(p.name)
            if reason is None:
                finished.add(p.name)
            else:
                damaged[p.name] = reason
        return finished, damaged

    def is_finished(self, key: str) -> bool:
        """Whether ``runs/<key>/`` holds a finished, undamaged run."""
        return self.verify(key) is None

    def finished_keys(self) -> set[str]:
        """Keys of every finished, undamaged run."""
        return self.scan()[0]

    def damaged_keys(self) -> dict[str, str]:
        """Entries of ``runs/`` that are not whole finished runs, with the reason for each."""
        return self.scan()[1]

    def failed_keys(self, finished: set[str] | None = None) -> set[str]:
        """Keys of failed runs that have not finished since (``finished``: from a :meth:`scan` just made)."""
        if is_link(self.failed_dir) or not self.failed_dir.is_dir():
            return set()
        failed = {p.name for p in self.failed_dir.iterdir()
                  if not is_link(p) and p.is_dir() and (p / FAILED_MARK).is_file()}
        return failed - (self.finished_keys() if finished is None else finished)

    def run_dir(self, key: str) -> Path:
        """The folder of a finished run; :class:`ResultsError` when it is not finished or damaged."""
        reason = self.verify(key)
        if reason == "missing":
            raise ResultsError(f"results directory {self.root}: run {key} has not finished")
        if reason is not None:
            raise ResultsError(f"results directory {self.root}: run {key} is damaged ({reason})")
        return self.runs_dir / key

    def done_record(self, key: str) -> dict[str, Any]:
        """The ``DONE.json`` of a finished run (run id, finish time, wall seconds, ...)."""
        return _read_json(self.run_dir(key) / DONE)

    def failure(self, key: str) -> dict[str, Any]:
        """The ``FAILED.json`` of a failed run, with the error text under ``error``."""
        d = self.failed_dir / key
        refuse_link(d, "a failed run's folder")
        rec = _read_json(d / FAILED_MARK)
        err = d / "error.txt"
        rec["error"] = (err.read_text(errors="replace") if err.is_file() and not is_link(err)
                        else str(rec.get("error", "")))
        return rec

    def checkpoint_dir(self, key: str) -> Path:
        """Where a run in progress keeps its checkpoint: ``.staging/checkpoints/<key>/``.

        It survives a killed grid (the next invocation resumes the run from it)
        and is removed when the run commits.
        """
        plain_name(key, "run key")
        return self.staging_dir / CHECKPOINTS / key

    def plan(self) -> list[dict[str, Any]]:
        """The grid's runs as stored in ``plan.json`` (empty when there is none)."""
        p = self.root / "plan.json"
        if not p.is_file():
            return []
        runs = _read_json(p).get("runs")
        if not isinstance(runs, list) or not all(isinstance(r, dict) and isinstance(r.get("key"), str) for r in runs):
            raise ResultsError(f"{p}: expected 'runs' to be a list of objects with a 'key'")
        return list(runs)

    def events(self) -> list[dict[str, Any]]:
        """Parsed lines of ``events.jsonl``; a line cut short by a crash is skipped."""
        p = self.root / EVENTS
        out = []
        if p.is_file() and not is_link(p):
            for line in p.read_text(errors="replace").splitlines():
                try:
                    event = json.loads(line)
                except json.JSONDecodeError:
                    continue
                if isinstance(event, dict):
                    out.append(event)
        return out

    # ---- writing -------------------------------------------------------------------
    def write_meta(self, name: str, text: str) -> None:
        """Atomically write a top-level file such as ``grid.yaml`` or ``plan.json``."""
        self._require_lock()
        plain_name(name, "results file name")
        atomic_write_bytes(self.root / name, text.encode())

    def log(self, event: str, **fields: Any) -> None:
        """Append one event line (``start``, ``done``, ``failed``, ...) to ``events.jsonl``."""
        self._require_lock()
        line = json.dumps({"t": round(time.time(), 3), "event": event, "pid": os.getpid(), **fields})
        fd = os.open(self.root / EVENTS, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o644)
        try:
            os.write(fd, (line + "\n").encode())
        finally:
            os.close(fd)

    def _stage(self, files: Mapping[str, bytes], marker: str, record: Mapping[str, Any]) -> Path:
        for name in files:
            if "/" in name or name.startswith(".") or name in (DONE, FAILED_MARK):
                raise ResultsError(f"run file name {name!r}: expected a plain file name")
        stage = Path(tempfile.mkdtemp(dir=self.staging_dir, prefix="run-"))
        try:
            os.chmod(stage, _DIR_MODE)
            for name, data in files.items():
                _write_file(stage / name, data)
            _write_file(stage / marker, json.dumps(dict(record), indent=2).encode())
            _fsync_dir(stage)
        except BaseException:
            _delete_inside(stage)
            raise
        return stage

    def commit(self, key: str, files: Mapping[str, bytes], **info: Any) -> bool:
        """Store a finished run's files as ``runs/<key>/`` in one rename.

        ``DONE.json`` records the size and SHA-256 of every file. Returns
        ``False`` (and stores nothing) when the run had already finished: a
        finished result is never replaced. A failure record of the same key is
        removed afterwards.
        """
        self._require_lock()
        plain_name(key, "run key")
        missing = [f for f in RUN_FILES if f not in files]
        if missing:
            raise ResultsError(f"run {key}: expected files {', '.join(RUN_FILES)}, missing {', '.join(missing)}")
        sums = {name: {"bytes": len(data), "sha256": sha256_bytes(data)} for name, data in files.items()}
        record = {"key": key, "format": DONE_FORMAT, "run_id": uuid.uuid4().hex, "finished_at": time.time(),
                  "host": socket.gethostname(), **info, "files": sums}
        stage = self._stage(files, DONE, record)
        target = self.runs_dir / key
        try:
            os.rename(stage, target)
        except OSError as exc:
            _delete_inside(stage)
            if exc.errno in (errno.EEXIST, errno.ENOTEMPTY) or target.exists() or is_link(target):
                self.drop_checkpoint(key)
                return False
            raise
        _fsync_dir(self.runs_dir)
        old = self.failed_dir / key
        if old.exists() or is_link(old):
            self._remove(old)
        self.drop_checkpoint(key)
        return True

    def drop_checkpoint(self, key: str) -> None:
        """Remove a run's checkpoint folder, if any (its run has committed)."""
        ckpt = self.checkpoint_dir(key)
        if ckpt.exists() or is_link(ckpt):
            self._remove(ckpt)

    def tidy_checkpoints(self) -> None:
        """Remove the checkpoints folder when no run in progress has one left."""
        with contextlib.suppress(OSError):
            (self.staging_dir / CHECKPOINTS).rmdir()

    def record_failure(self, key: str, *, config_yaml: str, error: str, **info: Any) -> None:
        """Store a failed run's config and error text as ``failed/<key>/`` (replacing an older one)."""
        self._require_lock()
        plain_name(key, "run key")
        target = self.failed_dir / key
        previous = 0
        if not is_link(target) and (target / FAILED_MARK).is_file():
            try:
                previous = int(self.failure(key).get("attempts", 0))
            except (ResultsError, TypeError, ValueError):
                previous = 0
        last_line = next((ln for ln in reversed(error.strip().splitlines()) if ln.strip()), "")
        record = {"key": key, "failed_at": time.time(), "attempts": previous + 1, "error": last_line, **info}
        stage = self._stage({"config.yaml": config_yaml.encode(), "error.txt": error.encode()}, FAILED_MARK, record)
        if target.exists() or is_link(target):
            self._remove(target)
        os.rename(stage, target)
        _fsync_dir(self.failed_dir)

    def move_aside(self, key: str) -> Path:
        """Move the damaged ``runs/<key>`` into ``damaged/`` (one rename); return where it went."""
        self._require_lock()
        plain_name(key, "run key")
        return self._move_to_damaged(self.runs_dir / key)

    def _move_to_damaged(self, path: Path) -> Path:
        refuse_link(self.damaged_dir, "the store's damaged")
        self.damaged_dir.mkdir(exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S", time.gmtime())
        target = self.damaged_dir / f"{path.name.lstrip('.')}-{stamp}-{uuid.uuid4().hex[:6]}"
        os.rename(path, target)  # a link is moved as a link, never followed
        return target

    def _remove(self, path: Path) -> None:
        """Move ``path`` into staging (one rename), then delete it (links are unlinked, never followed)."""
        trash = self.staging_dir / f"trash-{uuid.uuid4().hex}"
        os.rename(path, trash)
        _delete_inside(trash)


def _delete_inside(path: Path) -> None:
    """Delete ``path``: unlink a file or link, remove a real folder's tree (shutil.rmtree never follows links)."""
    if is_link(path) or not path.is_dir():
        path.unlink(missing_ok=True)
    else:
        shutil.rmtree(path, ignore_errors=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        refuse_link(path, path.name)
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise ResultsError(f"{path}: cannot read it as JSON ({exc})") from None
    if not isinstance(data, dict):
        raise ResultsError(f"{path}: expected a JSON object, got {type(data).__name__}")
    return data
