"""A run's metrics.jsonl: one JSON record per line, the only reader and writer of that file.

Every record is a dict with at least "kind" ("train", "eval", "reinit", "warning",
"interrupted") and "step". The engine appends records as they happen, truncates the file to a
checkpoint's step when it resumes, and the sweep, the CLI and the notebooks read it back.

Written to survive a crash at any moment: `append` writes each record as one whole line in a
single write (and takes back a line the disk had no room for), `truncate_after` replaces the file
through a temporary file and an atomic rename (`atomic.atomic_write`), and `read` drops a damaged
last line (a record half-written when the process died) with a warning that names the file,
instead of failing. One process writes a run folder's log at a time (`runlock`).
"""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from discomm_lite.atomic import atomic_write

METRICS_FILE = "metrics.jsonl"


class DamagedRecordWarning(UserWarning):
    """The last line of a metrics file is not a whole record; it was left out."""


def _encode(record: dict) -> bytes:
    return (json.dumps(record) + "\n").encode()


def start(path: str | Path) -> None:
    """Create an empty log at `path` (and its folder), replacing any earlier one."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def append(path: str | Path, record: dict) -> None:
    """Append `record` as one line, in a single write of the whole encoded line.

    A write cut short (a full disk) is taken back, the file truncated to its earlier length,
    before the OSError is raised: the log never holds a partial line that a later one follows.
    """
    line = _encode(record)
    handle = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o666)
    try:
        length = os.fstat(handle).st_size
        try:
            written = os.write(handle, line)
            if written != len(line):
                raise OSError(f"only {written} of {len(line)} bytes of a record could be written "
                              f"to {path} (is the disk full?)")
        except OSError:
            os.ftruncate(handle, length)
            raise
    finally:
        os.close(handle)


def read(path: str | Path, kind: str | None = None) -> list[dict]:
    """Every record of the log at `path` ([] when there is no file), in order; of one `kind`
    ("train", "eval", "reinit", ...) if given.

    A last line that is not a JSON object (a write cut short) is left out with a
    DamagedRecordWarning naming the file; a damaged line before the last raises ValueError,
    since that is not what a crash leaves.
    """
    return [record for _, record in _parse(Path(path))
            if kind is None or record["kind"] == kind]


def truncate_after(path: str | Path, step: int) -> None:
    """Keep the records up to `step` (those a resumed run will not write again).

    A head reset logged at `step` itself is dropped: resets happen at the start of the epoch
    that begins at `step`, after that step's checkpoint was written, so the resumed run draws
    and logs it again. The kept lines are written to a temporary file in the same folder,
    flushed to disk, and renamed over `path`: a crash leaves either the old file or the new one,
    never a mix.
    """
    path = Path(path)
    if not path.exists():
        return
    kept = "".join(line + "\n" for line, record in _parse(path)
                   if record["step"] < step or (record["step"] == step
                                                and record["kind"] != "reinit"))
    atomic_write(path, lambda f: f.write(kept.encode()))


def _parse(path: Path) -> list[tuple[str, dict]]:
    """(line, record) pairs of the file's records, a damaged last line left out (see `read`)."""
    if not path.exists():
        return []
    lines = [line for line in path.read_text(errors="replace").splitlines() if line.strip()]
    parsed = []
    for number, line in enumerate(lines, start=1):
        try:
            record = json.loads(line)
            if not isinstance(record, dict):
                raise ValueError(f"a JSON {type(record).__name__}, not an object")
        except ValueError as err:
            if number < len(lines):
                raise ValueError(
                    f"{path}, line {number}, is not a metrics record ({err}); only the last line "
                    "can be cut short by a crash. Repair or delete the file."
                ) from err
            warnings.warn(f"{path}: its last line is not a whole record (a write cut short by a "
                          f"crash or a full disk), so it is left out: {line[:80]!r}",
                          DamagedRecordWarning, stacklevel=3)
            break
        parsed.append((line, record))
    return parsed


def last(records: Iterable[dict], kind: str) -> dict | None:
    """The last record of `kind` ("eval", "train", ...) in `records`, or None."""
    found = None
    for record in records:
        if record.get("kind") == kind:
            found = record
    return found


class RunLog:
    """Where a run's records go: kept in `records`, appended to `path`, passed to callbacks.

    `path` None keeps the records in memory only (no run folder, or a process other than the
    main one under torchrun).
    """

    def __init__(self, path: str | Path | None, records: list[dict],
                 callbacks: Sequence[Callable[[dict], None]] = ()) -> None:
        self.path = None if path is None else Path(path)
        self.records = records
        self.callbacks = callbacks

    def emit(self, record: dict) -> None:
        """Record `record` everywhere it goes."""
        self.records.append(record)
        if self.path is not None:
            append(self.path, record)
        for callback in self.callbacks:
            callback(record)
