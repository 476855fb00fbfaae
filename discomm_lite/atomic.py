"""Atomic file replacement: a crash at any moment leaves the old file or the new one, never a mix.

The one way a run folder's files are rewritten (checkpoint.pt, a truncated metrics.jsonl, an
evaluation's JSON). The new bytes go to `<name>.<pid>-<8 hex digits>.tmp` in the same folder, are
flushed to disk and renamed over the file (an atomic replace on POSIX and Windows). The
temporary file is created with mode 0o666 less the umask, as `open` creates files, so a new file
has the same permissions as the run's other files (`tempfile.mkstemp` would make it 0o600); a
file replaced keeps its own.
"""

from __future__ import annotations

import os
import re
import secrets
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO


def temporaries(folder: str | Path, name: str) -> list[Path]:
    """The temporary files `atomic_write` made for `folder/name`, sorted: exactly the names it
    makes (`<name>.<pid>-<8 hex digits>.tmp`), never a user's file that merely looks alike."""
    made = re.compile(re.escape(name) + r"\.[0-9]+-[0-9a-f]{8}\.tmp")
    return sorted(p for p in Path(folder).glob(f"{name}.*.tmp") if made.fullmatch(p.name))


def atomic_write(path: str | Path, write: Callable[[BinaryIO], None]) -> None:
    """Replace `path` by what `write(f)` writes into a binary file `f`, atomically.

    If `write` or the disk fails, the temporary file is removed and `path` is left as it was.
    """
    path = Path(path)
    temporary = path.with_name(f"{path.name}.{os.getpid()}-{secrets.token_hex(4)}.tmp")
    handle = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(handle, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        if path.exists():
            os.chmod(temporary, path.stat().st_mode & 0o777)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise
