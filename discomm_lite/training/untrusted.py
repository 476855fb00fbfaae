"""Reading a checkpoint someone else wrote: bounded before torch.load builds it, and checked
before anything is built from it (issue 25).

torch's `weights_only=True` reader refuses a pickle that would run code, but a file of plain
values can still hang or exhaust the machine: a zip entry that inflates a thousandfold, a pickle
whose shape makes Python hash or print for hours, a tensor that repeats one stored number four
billion times, a configuration whose model is many times the size of the weights saved for it,
or one that names a backbone timm would download. In the order a load meets them:

- `read_pickle`, before torch.load: the file is a zip with few enough entries, inflating to
  little more than it stores (`MAX_ENTRIES`, `MAX_INFLATION`, the machine's memory); every entry
  is read once through its checksum (CRC-32), so that a damaged file is named as such; and the
  pickle's shape is checked (`safe_pickle.check_structure`) before any of it is built;
- `check_payload`, after torch.load and before any value is used: every tensor's elements lie in
  its own storage (no stride-0 repetition), the counters are plain integers, the configuration
  holds plain values only (so that no message formats an unbounded one);
- then `rebuild`: the configuration, and the saved shapes against the model it builds, before
  the model is built for real.
"""

from __future__ import annotations

import copy
import warnings
import zipfile
from collections.abc import Iterator, Mapping
from pathlib import Path

import torch
from torch import Tensor

from discomm_lite.config.checks import shown
from discomm_lite.devices import device_memory
from discomm_lite.safe_pickle import UnsafePickle, check_structure, pickle_imports

# A checkpoint holds one zip entry per tensor storage: a few hundred for a ResNet-50 with its
# AdamW state. torch.save stores entries uncompressed; a deflated copy may inflate this much more.
MAX_ENTRIES = 100_000
MAX_INFLATION = 64 * 2**20
# Its pickle: about 20 KB, 5,000 opcodes and 8 levels deep for the toy runs, some 200 KB for a
# ViT-B; the limits leave a wide margin and keep the shape check under about 2 s.
MAX_PICKLE_BYTES = 4 * 2**20
MAX_DEPTH = 16
MAX_OPERATIONS = 1_000_000
MAX_OBJECTS = 4_000_000
_CHUNK = 2**20
# What a file of tensors imports (besides torch's storage types): not worth naming in an error.
TENSOR_GLOBALS = frozenset({"collections.OrderedDict", "_codecs.encode", "torch.Size",
                            "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                            "numpy.ndarray", "numpy.dtype", "numpy._core.multiarray._reconstruct",
                            "numpy.core.multiarray._reconstruct"})
_PLAIN = (type(None), bool, int, float, str)


class CheckpointError(RuntimeError):
    """A checkpoint that cannot be used: damaged, hostile, or written by another configuration."""


def read_pickle(path: Path) -> bytes:
    """The pickle (data.pkl) of the checkpoint at `path`, once the file passed the checks that
    bound its reading (the module docstring); CheckpointError naming the file otherwise."""
    if not zipfile.is_zipfile(path):
        raise not_a_zip(path)
    entries, directory = _directory_size(path)
    if entries > MAX_ENTRIES:
        raise CheckpointError(
            f"{path} is not a checkpoint this version reads: its zip lists {entries:,} entries "
            f"({directory / 2**20:.1f} MiB of directory), more than {MAX_ENTRIES:,} (a "
            "checkpoint holds one per tensor). It was refused before any entry was read.")
    try:
        with zipfile.ZipFile(path) as archive:
            infos = archive.infolist()
            name = _pickle_entry(path, infos)
            _check_budget(path, infos)
            data = _read_verified(path, archive, infos, name)
    except CheckpointError:
        raise
    except zipfile.BadZipFile as err:
        if "CRC" in str(err):
            raise CheckpointError(
                f"{path} is damaged: {str(err)[:200]} (its checksum does not match), so the file "
                "changed after it was written (a disk or copy error, or an edit). Use an "
                "earlier checkpoint, or copy this one again from its source.") from None
        raise unreadable(path, err) from None
    except (OSError, RuntimeError, EOFError, NotImplementedError) as err:
        raise unreadable(path, err) from None
    try:
        check_structure(data, max_depth=MAX_DEPTH, max_objects=MAX_OBJECTS,
                        max_operations=MAX_OPERATIONS)
    except UnsafePickle as err:
        raise CheckpointError(
            f"{path} is not a checkpoint this version reads: {err}, and was refused before any "
            "of it was built (a checkpoint's pickle nests 8 levels deep, with one object per "
            "opcode). Do not load it with another reader unless you trust its author.") from None
    return data


def _directory_size(path: Path) -> tuple[int, int]:
    """(entries, bytes) of the zip's central directory, from its end record (zip64 too), read
    before zipfile parses the directory into one object per entry."""
    with path.open("rb") as f:
        end = zipfile._EndRecData(f)  # the end-of-directory record, as zipfile reads it
    if end is None:
        return 0, 0
    return end[zipfile._ECD_ENTRIES_TOTAL], end[zipfile._ECD_SIZE]


def _pickle_entry(path: Path, infos: list[zipfile.ZipInfo]) -> str:
    """The name of the entry torch.load unpickles: <folder of the first entry>/data.pkl."""
    name = f"{infos[0].filename.split('/')[0]}/data.pkl" if infos else "data.pkl"
    found = [i for i in infos if i.filename == name]
    if not found:
        raise CheckpointError(f"{path} is not a checkpoint: it is a zip file without the "
                              f"{name} that torch.save writes.")
    if found[0].file_size > MAX_PICKLE_BYTES:
        raise CheckpointError(
            f"{path} is not a checkpoint this version reads: its {name} holds "
            f"{found[0].file_size / 2**20:.1f} MiB, more than {MAX_PICKLE_BYTES / 2**20:.0f} MiB "
            "(a checkpoint's is some kilobytes: the tensors are entries of their own).")
    return name


def _check_budget(path: Path, infos: list[zipfile.ZipInfo]) -> None:
    """Refuse a zip whose entries would take far more memory than the file's size, from the
    sizes its directory declares (zipfile and torch both read no more than those), or that names
    an entry twice (this check and torch's reader could then read different ones)."""
    seen: set[str] = set()
    twice = next((i.filename for i in infos if i.filename in seen or seen.add(i.filename)), None)
    if twice is not None:
        raise CheckpointError(f"{path} is not a checkpoint: its zip holds two entries named "
                              f"{shown(twice, 80)}, which torch.save never writes.")
    odd = [i for i in infos if i.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED)]
    if odd:
        raise CheckpointError(
            f"{path} is not a checkpoint torch.load reads: its entry "
            f"{shown(odd[0].filename, 80)} is compressed with zip method {odd[0].compress_type} "
            "(torch reads stored or deflated entries only).")
    total = sum(i.file_size for i in infos)
    stored = sum(i.compress_size for i in infos)
    inflation = sum(max(0, i.file_size - i.compress_size) for i in infos)
    if inflation > MAX_INFLATION:
        worst = max(infos, key=lambda i: i.file_size - i.compress_size)
        raise CheckpointError(
            f"{path} would inflate to {total / 2**20:,.1f} MiB from the {stored / 2**20:,.1f} MiB "
            f"it stores ({shown(worst.filename, 80)}: {worst.compress_size / 2**20:,.1f} MiB "
            f"inflating to {worst.file_size / 2**20:,.1f} MiB), more than "
            f"{MAX_INFLATION / 2**20:.0f} MiB beyond its size, where torch.save stores its "
            "entries uncompressed. It was refused before any entry was inflated; if you trust "
            "it, unzip it and save it again with torch.save.")
    memory = device_memory(torch.device("cpu"))
    if memory is not None and total > memory:
        raise CheckpointError(
            f"{path} holds {total / 2**30:.1f} GiB of tensors, more than this machine's "
            f"{memory / 2**30:.1f} GiB of memory: it cannot be read here.")


def _read_verified(path: Path, archive: zipfile.ZipFile, infos: list[zipfile.ZipInfo],
                   name: str) -> bytes:
    """Read every entry once, in chunks, through its CRC-32 (zipfile raises BadZipFile at the
    end of an entry that does not match); return the pickle entry's bytes.

    A file written with torch's checksums turned off (`torch.serialization.set_crc32_options`)
    records 0 for every entry: it is read without them, with a warning that damage to it cannot
    be detected.
    """
    if not any(i.CRC for i in infos if i.file_size):
        warnings.warn(f"{path} records no checksums (written with torch's CRC-32 turned off), "
                      "so damage to it cannot be detected.", stacklevel=4)
        info = copy.copy(next(i for i in infos if i.filename == name))
        del info.CRC  # zipfile then checks no checksum
        with archive.open(info) as f:
            return f.read()
    data = b""
    for info in infos:
        with archive.open(info) as f:
            if info.filename == name:
                data = f.read()
            else:
                while f.read(_CHUNK):
                    pass
    return data


def not_a_zip(path: Path) -> CheckpointError:
    """The error for a file that is not torch.save's zip format: what it is, and what it would
    import if it is a pickle (read by opcodes, nothing run)."""
    with path.open("rb") as f:
        head = f.read(_CHUNK)
    unusual = unusual_imports(pickle_imports(head)) if head.startswith(b"\x80") else []
    if unusual:
        return runs_code(path, unusual)
    return unreadable(path, "torch.save's zip format was expected")


def unusual_imports(names: list[str]) -> list[str]:
    """The globals of `names` that a file of tensors does not import."""
    return [n for n in names if n not in TENSOR_GLOBALS and not n.endswith("Storage")]


def runs_code(path: Path, names: list[str]) -> CheckpointError:
    """The error for a pickle that imports `names`: it was refused before any of it ran."""
    return CheckpointError(
        f"{path} is not a discomm_lite checkpoint: it is a Python pickle that imports "
        f"{', '.join(names)}, and reading it would run that code. It was refused before "
        "anything in it ran (a discomm_lite checkpoint holds only tensors and plain values). "
        "Do not open it with torch.load(weights_only=False) unless you trust its author.")


def unreadable(path: Path, error: Exception | str) -> CheckpointError:
    """The error for a file that is not a readable checkpoint, saying what it is."""
    text = str(error).strip()
    reason = (text if isinstance(error, str) else
              "torch's tensors-only reader refused its content" if "Weights only" in text
              else f"{type(error).__name__}: {text.splitlines()[0][:300] if text else ''}")
    return CheckpointError(
        f"{path} is not a readable checkpoint: it is {_kind_of_file(path)}, and reading it "
        f"failed ({reason}). It may be truncated or damaged, or not a checkpoint at all; use an "
        "earlier checkpoint or start the run again.")


def _kind_of_file(path: Path) -> str:
    """What `path` is, for an error: torch.save's zip format, a bare pickle, or neither."""
    with path.open("rb") as f:
        head = f.read(4)
    if not head:
        return "an empty file"
    if zipfile.is_zipfile(path):
        return "a zip file (torch.save's format)"
    if head.startswith(b"PK"):
        return "a damaged zip file (torch.save's format, perhaps cut short)"
    if head.startswith(b"\x80"):
        return "a bare Python pickle"
    return f"neither torch.save's zip format nor a pickle (it starts with {head!r})"


def check_payload(payload: dict, path: Path | str) -> None:
    """Refuse (CheckpointError) a loaded checkpoint whose values no run takes as they are.

    Every tensor's elements lie in its own storage (a stride-0 view of 4e9 elements over one
    stored number would allocate gigabytes at its first use); `format_version`, `step` and
    `epoch` are plain integers >= 0; the config is a dict of plain values (None, bool, int,
    float, str) keyed by strings. Called before any of them is used or shown.
    """
    for where, tensor in _tensors(payload, "checkpoint"):
        if tensor.layout != torch.strided:
            raise CheckpointError(f"{path} holds a {tensor.layout} tensor at {where}: a "
                                  "checkpoint holds dense tensors only.")
        stored = tensor.untyped_storage().nbytes() // max(1, tensor.element_size())
        if tensor.numel() > stored:
            raise CheckpointError(
                f"{path} holds at {where} a tensor of {tensor.numel():,} elements "
                f"{tuple(tensor.shape)} over a storage of {stored:,}: a view that repeats its "
                "stored values (stride 0), which no checkpoint holds and whose first use would "
                f"take {tensor.numel() * tensor.element_size() / 2**30:,.1f} GiB. It was refused "
                "before any use.")
    for name in ("format_version", "step", "epoch"):
        value = payload.get(name, 0)
        if type(value) is not int or value < 0:
            raise CheckpointError(f"{path} holds {name} = {shown(value)}: a checkpoint's {name} "
                                  "is a plain integer >= 0. The file was edited or damaged.")
    config = payload.get("config")
    if not isinstance(config, dict):
        raise CheckpointError(f"{path} holds a config of type {type(config).__name__}, not a "
                              "dict of the run's settings.")
    for key, value in config.items():
        if not isinstance(key, str) or type(value) not in _PLAIN:
            raise CheckpointError(
                f"{path} records a config whose {shown(key, 40)} is {shown(value, 60)} (a "
                f"{type(value).__name__}): a checkpoint's config holds plain values only "
                "(None, True/False, numbers, strings). The file was edited or damaged.")


def _tensors(value, where: str) -> Iterator[tuple[str, Tensor]]:
    """(where, tensor) for every tensor in the dicts, lists and tuples of `value`, each object
    visited once (a list shared a million times over is one list)."""
    pending, seen = [(where, value)], set()
    while pending:
        where, value = pending.pop()
        if id(value) in seen:
            continue
        seen.add(id(value))
        if isinstance(value, Tensor):
            yield where, value
        elif isinstance(value, Mapping):
            pending += [(f"{where}[{shown(k, 40)}]", v) for k, v in value.items()]
        elif isinstance(value, list | tuple):
            pending += [(f"{where}[{i}]", v) for i, v in enumerate(value)]
