"""Where the data and the cache live: the data root and the cache folder.

The data root is the `data_root` argument, else $DISCOMM_DATA, else ./data. The cache of decoded
images is $DISCOMM_CACHE, else ~/.cache/discomm_lite, never under the (maybe read-only) data root.
"""

from __future__ import annotations

import os
from pathlib import Path


def resolve_data_root(data_root: str | os.PathLike | None) -> Path:
    """The data root: `data_root` if given, else $DISCOMM_DATA, else ./data."""
    if data_root is not None:
        return Path(data_root).expanduser()
    return Path(os.environ.get("DISCOMM_DATA") or "data").expanduser()


def data_root_setting() -> str:
    """$DISCOMM_DATA as an error message shows it: its value quoted, or "unset"."""
    value = os.environ.get("DISCOMM_DATA")
    return repr(value) if value else "unset"


def cache_root() -> Path:
    """$DISCOMM_CACHE, else ~/.cache/discomm_lite."""
    cache = os.environ.get("DISCOMM_CACHE")
    return Path(cache).expanduser() if cache else Path.home() / ".cache" / "discomm_lite"


def make_cache_dir(path: Path) -> None:
    """Create the cache folder `path`, or say to set DISCOMM_CACHE when it cannot be."""
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(
            f"Cannot create the cache folder {path} ({err}); set the DISCOMM_CACHE environment "
            "variable to a writable folder."
        ) from err
