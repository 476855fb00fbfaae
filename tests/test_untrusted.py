"""Untrusted checkpoints stay bounded and inert (issue 25): every hostile file is generated here,
refused by every load path in seconds and well under 1 GB, with a one-line error naming it.

The files: a config whose values are a "billion laughs" list; a 300-byte pickle whose dict key is
a tuple nested 40 deep of one shared half (hashing it takes 2^40 steps); a stride-0 `step` of
4e9 elements; a config whose head is 625 times wider than its saved weights; a deflated entry
that inflates to 2 GiB; a config that downloads into a folder of its choosing or builds a hub
backbone; steps outside the run; four bytes overwritten in a tensor record.
"""

from __future__ import annotations

import io
import json
import pickle
import re
import struct
import subprocess
import sys
import time
import zipfile
import zlib
from collections import OrderedDict
from pathlib import Path

import pytest
import torch
from tinyrun import tiny_config

from discomm_lite import load_backbone, load_model
from discomm_lite.api import train
from discomm_lite.config import Config
from discomm_lite.config.checks import shown
from discomm_lite.evaluation.suite import evaluate_checkpoint
from discomm_lite.method import get_method
from discomm_lite.safe_pickle import UnsafePickle, check_structure
from discomm_lite.training import untrusted
from discomm_lite.training.checkpoint import (
    CheckpointError,
    check_compatible,
    load_checkpoint,
    rng_state,
    save_checkpoint,
)
from discomm_lite.training.setup import build_state
from discomm_lite.training.start import resume_or_start

# ---- the hostile files, written byte by byte ---------------------------------------------------


def nested_key_pickle(depth: int) -> bytes:
    """{t_depth: 1} with t_0 = () and t_(i+1) = (t_i, t_i): `depth` opcodes of 3 bytes, whose key
    Python hashes in 2^depth steps. Protocol 2 opcodes, written by hand: pickling the object
    would hash it."""
    out = b"\x80\x02}" + b")q\x00"  # PROTO 2, EMPTY_DICT, EMPTY_TUPLE, BINPUT 0
    for i in range(depth):  # BINGET i, TUPLE2 (t_i twice: the one on the stack and the memo's)
        out += b"h" + bytes([i]) + b"\x86q" + bytes([i + 1])
    return out + b"K\x01s."  # BININT1 1, SETITEM, STOP


def laughs(levels: int, fan: int = 2) -> list:
    """A list nested `levels` deep whose `fan` items are one shared list: fan^levels items."""
    value: list = [0]
    for _ in range(levels):
        value = [value] * fan
    return value


def write_torch_zip(path: Path, pickled: bytes, records: dict[str, bytes] | None = None) -> Path:
    """A zip in torch.save's layout: archive/data.pkl and archive/data/<key> records."""
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("archive/data.pkl", pickled)
        archive.writestr("archive/byteorder", "little")
        for key, data in (records or {}).items():
            archive.writestr(f"archive/data/{key}", data)
        archive.writestr("archive/version", "3\n")
    return path


class _Storage:
    def __init__(self, key: str, numel: int) -> None:
        self.key, self.numel = key, numel


class _Tensor:
    def __init__(self, storage: _Storage, size: tuple[int, ...]) -> None:
        self.args = (storage, 0, size, (1,) * len(size), False, OrderedDict())

    def __reduce__(self):
        return (torch._utils._rebuild_tensor_v2, self.args)


class _TorchPickler(pickle.Pickler):
    """Pickles `_Storage` as torch's persistent id of a uint8 storage record."""

    def persistent_id(self, obj):
        if isinstance(obj, _Storage):
            return ("storage", torch.ByteStorage, obj.key, "cpu", obj.numel)
        return None


def write_deflate_bomb(path: Path, inflated: int, crc: int = 0) -> Path:
    """A torch zip whose record data/0 is a valid deflate stream of `inflated` zero bytes, a
    uint8 tensor of its data.pkl, in a few MB: one compressed 16 MiB block repeated (a full flush
    resets the dictionary, so copies decode alone), the zip's method, sizes and `crc` patched
    in (0 by default: computing it takes seconds, and the budget refuses before any reading)."""
    unit = 2**24
    compressor = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = compressor.compress(bytes(unit)) + compressor.flush(zlib.Z_FULL_FLUSH)
    raw = block * (inflated // unit) + b"\x03\x00"  # then an empty final block
    buffer = io.BytesIO()
    _TorchPickler(buffer, protocol=2).dump({"student": {"w": _Tensor(_Storage("0", inflated),
                                                                     (inflated,))}})
    write_torch_zip(path, buffer.getvalue(), {"0": raw})
    data = bytearray(path.read_bytes())
    name = b"archive/data/0"
    for signature, name_at, method_at in ((b"PK\x03\x04", 30, 8), (b"PK\x01\x02", 46, 10)):
        for match in re.finditer(re.escape(signature), data):
            at = match.start()
            if data[at + name_at:at + name_at + len(name)] == name:
                struct.pack_into("<H", data, at + method_at, zipfile.ZIP_DEFLATED)
                struct.pack_into("<II", data, at + method_at + 6, crc, len(raw))
                struct.pack_into("<I", data, at + method_at + 14, inflated)
    path.write_bytes(bytes(data))
    return path


def real_checkpoint(path: Path, run: Config | None = None, **changes) -> dict:
    """A checkpoint of the freshly built state of `run` (the tiny run; no step trained), with
    `changes` to its payload; returns the payload."""
    run = run or tiny_config()
    state = build_state(run, get_method(run.method), torch.device("cpu"))
    payload = {"config": run.to_dict(), **state.state_dict(), "rng": rng_state(), **changes}
    save_checkpoint(path, payload)
    return payload


# ---- the shape of a pickle ---------------------------------------------------------------------


def naive_shape(value) -> tuple[int, int]:
    """(depth, objects) of `value` by recursion over the built object: the reference."""
    if isinstance(value, dict):
        children = [*value, *value.values()]
    elif isinstance(value, list | tuple | set | frozenset):
        children = list(value)
    else:
        return 0, 1
    shapes = [naive_shape(child) for child in children]
    return 1 + max((d for d, _ in shapes), default=0), 1 + sum(n for _, n in shapes)


def random_structure(generator, depth: int, shared: list):
    """Nested lists, tuples and dicts of ints and strings, reusing earlier objects (`shared`)."""
    kind = int(torch.randint(6, (1,), generator=generator))
    if depth == 0 or kind == 0:
        return int(torch.randint(1000, (1,), generator=generator))
    if kind == 1:
        return f"s{int(torch.randint(5, (1,), generator=generator))}"
    if kind == 2 and shared:
        return shared[int(torch.randint(len(shared), (1,), generator=generator))]
    n = int(torch.randint(5, (1,), generator=generator))
    items = [random_structure(generator, depth - 1, shared) for _ in range(n)]
    value = {f"k{i}": v for i, v in enumerate(items)} if kind == 3 else (
        tuple(items) if kind == 4 else items)
    shared.append(value)
    return value


@pytest.mark.parametrize("protocol", [2, 4, 5])
def test_the_shape_of_a_pickle_is_that_of_the_object_it_builds(protocol):
    generator = torch.Generator().manual_seed(protocol)
    for _ in range(60):
        value = random_structure(generator, 6, [])
        shape = check_structure(pickle.dumps(value, protocol=protocol), max_objects=10**9)
        assert (shape.depth, shape.objects) == naive_shape(value)


@pytest.mark.parametrize("data,reason", [
    (nested_key_pickle(40), "nests objects more than 16 deep"),
    (pickle.dumps(laughs(12, fan=10)), "expands to more than 10,000,000 objects"),
    (pickle.dumps(list(range(10))) * 1, None),
    (b"\x80\x02]q\x00h\x00a.", "contains itself"),  # a list appended to itself
    (b"\x80\x02]q\x00K\x01a.", None),
    (b"\x80\x02h\x05.", "never stored"),
    (pickle.dumps([1, 2])[:-1], "damaged"),
])
def test_hostile_shapes_are_refused_in_milliseconds(data, reason):
    started = time.perf_counter()
    if reason is None:
        check_structure(data)
    else:
        with pytest.raises(UnsafePickle, match=reason):
            check_structure(data)
    assert time.perf_counter() - started < 0.5


def test_a_container_changed_after_another_took_it_is_refused():
    # L0 = [], L1 = [L0] * 10, then 1 appended to L0: counts taken at L1's making would lie.
    data = b"\x80\x02]q\x00(" + b"h\x00" * 10 + b"lq\x010h\x00K\x01a0h\x01."
    with pytest.raises(UnsafePickle, match="changes an object after another object took it"):
        check_structure(data)


def test_the_opcode_budget_bounds_the_check_itself():
    data = pickle.dumps(list(range(300_000)))
    assert check_structure(data).operations > 300_000
    with pytest.raises(UnsafePickle, match="more than 1,000 operations"):
        check_structure(data, max_operations=1_000)


# ---- case 1: no message formats an unbounded value ---------------------------------------------


def test_shown_is_short_and_fast_whatever_the_value():
    started = time.perf_counter()
    texts = [shown(laughs(60)), shown({(1, 2): laughs(60)}), shown("x" * 10**7),
             shown(10**100_000), shown(torch.zeros(1).expand(4_000_000_000)), shown(-3.5)]
    assert time.perf_counter() - started < 0.1
    assert all(len(text) <= 100 for text in texts)
    assert texts[0] == "[[[...], [...]], [[...], [...]]]"
    assert texts[3] == "<an integer of 332193 bits>" and texts[5] == "-3.5"
    assert texts[4] == "<Tensor of shape (4000000000,)>"


@pytest.mark.parametrize("field", ["method", "lr", "data_root"])
def test_a_config_of_billion_laughs_is_refused_in_one_short_line(field):
    started = time.perf_counter()
    with pytest.raises(ValueError) as info:
        Config.from_dict({field: laughs(60)})
    message = str(info.value)
    assert time.perf_counter() - started < 0.1
    assert message.startswith(f"Config.{field} = [[[...], [...]], [[...], [...]]] is not valid")
    assert len(message) < 300 and "\n" not in message
    with pytest.raises(ValueError, match=r"^Unknown parameter\(s\) \[\(\(1, 2\), \(3, 4\)\)\]:"):
        Config.from_dict({((1, 2), (3, 4)): 1})
    with pytest.raises(CheckpointError, match=r"lr: checkpoint \[\[\[...\], \[...\]\], .* vs "
                                              r"now 0.001"):
        check_compatible({**Config().to_dict(), "lr": laughs(60)}, Config(), "c.pt")


def test_a_checkpoint_whose_config_is_a_billion_laughs_is_refused(tmp_path):
    # 10^12 items: refused by its shape; 10^6: a shape the reader may build, refused by its type
    # before any message formats it.
    for levels, reason in ((12, "expands to more than 4,000,000 objects"),
                           (6, "records a config whose 'method' is \\[\\[\\[...")):
        path = tmp_path / f"laughs{levels}.pt"
        real_checkpoint(path, config={**Config().to_dict(), "method": laughs(levels, fan=10)})
        started = time.perf_counter()
        with pytest.raises(CheckpointError, match=reason) as info:
            load_checkpoint(path)
        assert time.perf_counter() - started < 5
        assert str(info.value).startswith(str(path)) and len(str(info.value)) < 500


# ---- cases 2 to 5: bounded in time and memory on every load path (one child process) ---------

LOADERS = ("load_checkpoint", "load_model", "load_backbone", "evaluate_checkpoint", "resume",
           "pretrained", "cli evaluate")
MEASURE = r"""
import json, resource, sys, time, warnings
warnings.simplefilter("ignore")
from pathlib import Path
from discomm_lite import load_backbone, load_model
from discomm_lite.api import train
from discomm_lite.cli import main
from discomm_lite.config import make_config
from discomm_lite.data import load_dataset
from discomm_lite.evaluation.suite import evaluate_checkpoint
from discomm_lite.training.checkpoint import load_checkpoint

def rss():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

def call(loader, path):
    if loader == "load_checkpoint": return load_checkpoint(path)
    if loader == "load_model": return load_model(path)
    if loader == "load_backbone": return load_backbone(path)
    if loader == "evaluate_checkpoint": return evaluate_checkpoint(path)
    if loader == "resume":
        return train(make_config("synthetic-toy", out_dir=str(Path(path).parent)))
    if loader == "pretrained": return train(make_config("synthetic-toy", pretrained=path))
    if loader == "cli evaluate": return main(["evaluate", "--checkpoint", path])
    if loader == "cifar": return load_dataset("cifar10", "train", path)

baseline = rss()
results = {}
for name, (loader, path) in json.loads(sys.argv[1]).items():
    started = time.perf_counter()
    try:
        outcome = f"returned {call(loader, path)!r:.80}"
    except Exception as error:
        outcome = f"{type(error).__name__}: {error}"
    results[name] = {"seconds": time.perf_counter() - started, "outcome": outcome,
                     "rss_mb": rss() - baseline}
print(json.dumps(results))
"""


def measure(cases: dict[str, tuple[str, str]], capacity: int = 300) -> tuple[dict, str]:
    """Run each (loader, path) in one child process, in order: its outcome, its seconds, and the
    growth of the child's peak memory (MB) since the imports, which only grows; and the child's
    stderr (the CLI's messages)."""
    done = subprocess.run([sys.executable, "-c", MEASURE, json.dumps(cases)], text=True,
                          capture_output=True, timeout=capacity)
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1]), done.stderr


def hostile_files(tmp_path: Path) -> dict[str, Path]:
    """The hostile checkpoints of cases 1 to 5, each alone in its run folder."""
    files = {"nested key": write_torch_zip(folder(tmp_path, "nested"), nested_key_pickle(40))}
    # case 1: a config holding a list of 10^12 items (one list shared at every level)
    real_checkpoint(folder(tmp_path, "laughs"),
                    config={**Config().to_dict(), "method": laughs(12, fan=10)})
    files["billion laughs"] = folder(tmp_path, "laughs")
    # case 3: a stride-0 step of 4e9 elements over one stored number
    step = real_checkpoint(folder(tmp_path, "step"),
                           step=torch.zeros(1, dtype=torch.int64).expand(4_000_000_000))
    files["stride-0 step"] = folder(tmp_path, "step")
    # case 4: a head 40000 wide over the 16-wide head's weights saved
    save_checkpoint(folder(tmp_path, "wide"), {**step, "step": 0, "config": {
        **step["config"], "head_hidden_dim": 40_000}})
    files["wide head"] = folder(tmp_path, "wide")
    # case 5: 2 MB that inflate to 2 GiB
    files["deflate bomb"] = write_deflate_bomb(folder(tmp_path, "bomb"), 2**31)
    assert files["deflate bomb"].stat().st_size < 10 * 2**20
    return files


def folder(tmp_path: Path, name: str) -> Path:
    """<tmp_path>/<name>/checkpoint.pt, its folder made."""
    (tmp_path / name).mkdir(exist_ok=True)
    return tmp_path / name / "checkpoint.pt"


EXPECTED = {"nested key": "nests objects more than 16 deep",
            "billion laughs": "expands to more than 4,000,000 objects",
            "stride-0 step": "tensor of 4,000,000,000 elements",
            "wide head": r"head.mlp.0.weight: saved \(16, 256\), the configuration.s "
                         r"\(40000, 256\)",
            "deflate bomb": r"would inflate to 2,048.0 MiB from the 2.\d MiB it stores",
            # a resume compares the configurations first: the head's width differs
            "wide head, resume": r"different configuration .*head_hidden_dim: checkpoint 40000"}


def check_refusals(results: dict[str, dict], files: dict[str, Path]) -> None:
    """Every case refused in one line naming its reason, in seconds, under 1 GB; folders intact."""
    print(json.dumps(results, indent=1))  # the measured bounds (pytest -s shows them)
    for name, result in results.items():
        expected = EXPECTED.get(name, EXPECTED[name.split(",")[0]])
        assert re.search(expected, result["outcome"]), (name, result)
        assert result["outcome"].startswith(("CheckpointError", "DataFormatError")), name
        assert result["seconds"] < 10, (name, result)
        assert result["rss_mb"] < 1024, (name, result)  # peak memory growth over all cases
        assert "\n" not in result["outcome"], (name, result)
    for path in files.values():  # a refused resume leaves its run folder as it was
        assert sorted(p.name for p in path.parent.iterdir()) == ["checkpoint.pt"]


def test_hostile_files_are_refused_in_seconds_and_little_memory(tmp_path):
    files = hostile_files(tmp_path)
    cifar = tmp_path / "cifar" / "cifar-10-batches-py"  # the CIFAR batch reader's 1 KB file
    cifar.mkdir(parents=True)
    (cifar / "data_batch_1").write_bytes(nested_key_pickle(40))
    cases = {f"nested key, {loader}": (loader, str(files["nested key"]))
             for loader in LOADERS if loader != "pretrained"}  # case 2 on every load path
    cases["nested key, CIFAR batch"] = ("cifar", str(cifar.parent))
    cases.update({"billion laughs, evaluate_checkpoint": ("evaluate_checkpoint",
                                                          str(files["billion laughs"])),
                  "stride-0 step, load_checkpoint": ("load_checkpoint",
                                                     str(files["stride-0 step"])),
                  "wide head, load_model": ("load_model", str(files["wide head"])),
                  "wide head, evaluate_checkpoint": ("evaluate_checkpoint",
                                                     str(files["wide head"])),
                  "deflate bomb, load_checkpoint": ("load_checkpoint",
                                                    str(files["deflate bomb"]))})
    results, stderr = measure(cases)
    assert results.pop("nested key, cli evaluate")["outcome"] == "returned 1"
    assert re.search(r"^error: .*checkpoint.pt is not a checkpoint this version reads: the pickle "
                     r"nests objects more than 16 deep", stderr, re.MULTILINE)
    check_refusals(results, files)


@pytest.mark.slow  # each starts a run (data, models) before its checkpoint is refused
def test_hostile_files_are_refused_by_a_resume_and_a_pretrained_start(tmp_path):
    files = hostile_files(tmp_path)
    cases = {f"{name}, {loader}": (loader, str(path)) for name, path in files.items()
             for loader in ("resume", "pretrained")}
    check_refusals(measure(cases)[0], files)


def test_the_deflate_bomb_is_a_valid_zip_of_what_it_claims(tmp_path):
    unit = 2**24
    path = write_deflate_bomb(tmp_path / "bomb.pt", 3 * unit,
                              crc=zlib.crc32(bytes(3 * unit)))
    with zipfile.ZipFile(path) as archive:
        assert archive.getinfo("archive/data/0").file_size == 3 * unit
        assert archive.read("archive/data/0") == bytes(3 * unit)  # its CRC-32 checked too


def test_a_deflated_checkpoint_within_the_budget_still_loads(tmp_path):
    path = tmp_path / "checkpoint.pt"
    real_checkpoint(path)
    deflated = tmp_path / "deflated.pt"
    with zipfile.ZipFile(path) as source, zipfile.ZipFile(deflated, "w",
                                                          zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info))
    assert load_checkpoint(deflated)["step"] == 0
    load_model(deflated)


def test_too_many_entries_or_a_large_pickle_are_refused_before_reading(tmp_path, monkeypatch):
    monkeypatch.setattr(untrusted, "MAX_ENTRIES", 1_000)  # 100,000: seconds to write here
    many = tmp_path / "many.pt"
    with zipfile.ZipFile(many, "w") as archive:
        archive.writestr("archive/data.pkl", pickle.dumps({}))
        for i in range(1_001):
            archive.writestr(f"archive/data/{i}", b"")
    with pytest.raises(CheckpointError, match=r"lists 1,002 entries .* more than 1,000"):
        load_checkpoint(many)
    large = write_torch_zip(tmp_path / "large.pt", pickle.dumps(list(range(2_000_000))))
    with pytest.raises(CheckpointError, match=r"data.pkl holds 9.\d MiB, more than 4 MiB"):
        load_checkpoint(large)


# ---- case 3 and 7: counters are plain integers within the run ----------------------------------


def resume(config: Config, total_steps: int = 2):
    """`start.resume_or_start` of a new state of `config` from its run folder's checkpoint."""
    state = build_state(config, get_method(config.method), torch.device("cpu"))
    return resume_or_start(state, config, get_method(config.method), Path(config.out_dir),
                           torch.device("cpu"), total_steps=total_steps)


@pytest.mark.parametrize("step,message", [
    (-5, "holds step = -5"), (5.0, "holds step = 5.0"), (True, "holds step = True"),
    (torch.tensor(3), r"holds step = <Tensor of shape \(\)>"),
    (10**12, "holds step 1,000,000,000,000, but this run has 2 steps in all"),
])
def test_a_step_that_is_no_count_of_the_run_is_refused_before_the_metrics_are_touched(
        tmp_path, step, message):
    config = tiny_config(tmp_path)
    real_checkpoint(tmp_path / "checkpoint.pt", config, step=step)
    metrics = tmp_path / "metrics.jsonl"
    metrics.write_text('{"kind": "train", "step": 1, "loss": 0.5}\n')
    with pytest.raises(CheckpointError, match=message):
        resume(config)
    assert metrics.read_text() == '{"kind": "train", "step": 1, "loss": 0.5}\n'  # not truncated


def test_a_step_beyond_the_run_is_refused_instead_of_reporting_a_finished_run(tmp_path):
    config = tiny_config(tmp_path)  # 128 images, batch 64, one epoch: 2 steps
    real_checkpoint(tmp_path / "checkpoint.pt", config, step=10**12)
    with pytest.raises(CheckpointError, match=r"holds step 1,000,000,000,000, but this run has 2 "
                                              r"steps in all"):
        train(config, progress=False)


@pytest.mark.parametrize("step", [-5.0, 3.0, float("nan")])
def test_an_optimizer_step_outside_the_checkpoints_is_refused(tmp_path, step):
    config = tiny_config(tmp_path)
    payload = real_checkpoint(tmp_path / "checkpoint.pt", config, step=2)
    payload["optimizer"]["state"] = {0: {"step": torch.tensor(step),
                                         "exp_avg": torch.zeros(32, 3, 3, 3),
                                         "exp_avg_sq": torch.zeros(32, 3, 3, 3)}}
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    with pytest.raises(CheckpointError, match=r"holds an optimizer step of <Tensor of shape "
                                              r"\(\)> for parameter 0, outside 0 .. the "
                                              r"checkpoint's step 2"):
        resume(config)


def test_a_resumed_checkpoint_of_other_shapes_is_refused_in_one_line(tmp_path):
    config = tiny_config(tmp_path)
    payload = real_checkpoint(tmp_path / "checkpoint.pt", config)
    payload["teacher"]["head.mlp.0.weight"] = torch.zeros(3, 3)
    save_checkpoint(tmp_path / "checkpoint.pt", payload)
    with pytest.raises(CheckpointError, match=r"teacher's weights do not fit .*head.mlp.0."
                                              r"weight: saved \(3, 3\), the configuration's "
                                              r"\(16, 256\)"):
        resume(config)


# ---- case 6: a checkpoint never decides where to download or what to build ---------------------


def test_evaluate_never_downloads_into_a_folder_the_checkpoint_names(tmp_path, monkeypatch):
    import torchvision

    def no_download(*args, **kwargs):
        raise AssertionError("a download was started")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", no_download)
    monkeypatch.setenv("DISCOMM_DATA", str(tmp_path / "mine"))
    authors = tmp_path / "authors" / "choice"
    path = tmp_path / "checkpoint.pt"
    real_checkpoint(path, tiny_config(dataset="cifar10", redraw_factors="", data_root=str(authors),
                                      download=True))
    with pytest.raises(FileNotFoundError, match=f"under the data root {tmp_path / 'mine'}"):
        evaluate_checkpoint(path)
    assert not (tmp_path / "authors").exists() and not (tmp_path / "mine").exists()


def test_evaluate_reads_ones_own_data_root_and_downloads_only_where_asked(tmp_path, monkeypatch):
    import torchvision

    from discomm_lite.data import write_cifar10_standin

    roots = []

    def offline(self):
        roots.append(str(self.root))
        raise RuntimeError("offline")

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    monkeypatch.setenv("DISCOMM_DATA", str(tmp_path / "mine"))
    monkeypatch.setenv("DISCOMM_CACHE", str(tmp_path / "cache"))
    own = write_cifar10_standin(tmp_path / "own", train_per_class=4, test_per_class=2).parent
    path = tmp_path / "checkpoint.pt"
    real_checkpoint(path, tiny_config(dataset="cifar10", redraw_factors="", data_root=str(own),
                                      train_subset=0, test_subset=0))
    result = evaluate_checkpoint(path, write=False)  # one's own run: its data read where it is
    assert result["options"]["data_root"] == str(own) and roots == []
    with pytest.raises(FileNotFoundError, match="The download failed: offline"):
        evaluate_checkpoint(path, download=True, write=False)
    assert roots == [str(tmp_path / "mine")]  # where the user's settings say, not the file


def test_a_hub_backbone_in_a_checkpoint_is_refused_before_timm_is_asked(tmp_path, monkeypatch):
    import timm

    monkeypatch.setattr(timm, "create_model", lambda *a, **k: pytest.fail("timm was asked"))
    path = tmp_path / "checkpoint.pt"
    fetched = "which timm would fetch from the Hugging Face hub or a folder the file names"
    for backbone, reason in (("timm:hf-hub:someone/model", fetched),
                             ("timm:local-dir:/tmp/x", fetched),
                             ("timm:no_such_model_here", "which timm does not know")):
        real_checkpoint(path, config=tiny_config().to_dict() | {"backbone": backbone})
        for load in (load_model, load_backbone, evaluate_checkpoint):
            with pytest.raises(CheckpointError, match=re.escape(f"records the backbone "
                                                                f"'{backbone}', {reason}")):
                load(path)


# ---- case 8: a damaged record is an error naming the file --------------------------------------


def test_four_bytes_overwritten_in_a_tensor_record_are_an_error_naming_the_file(tmp_path):
    path = tmp_path / "checkpoint.pt"
    real_checkpoint(path)
    with zipfile.ZipFile(path) as archive:
        record = max((i for i in archive.infolist() if "/data/" in i.filename),
                     key=lambda i: i.file_size)
        with archive.open(record) as f:
            start = f._orig_compress_start  # the record's first byte in the file
    data = bytearray(path.read_bytes())
    data[start + 100:start + 104] = bytes(4) if data[start + 100:start + 104] != bytes(4) \
        else b"\xff" * 4
    path.write_bytes(bytes(data))
    for load in (load_checkpoint, load_model, evaluate_checkpoint):
        with pytest.raises(CheckpointError, match=rf"^{re.escape(str(path))} is damaged: Bad "
                                                  rf"CRC-32 for file '{record.filename}'"):
            load(path)


def test_a_checkpoint_written_without_checksums_loads_with_a_warning(tmp_path):
    path = tmp_path / "checkpoint.pt"
    torch.serialization.set_crc32_options(False)
    try:
        real_checkpoint(path)
    finally:
        torch.serialization.set_crc32_options(True)
    with pytest.warns(UserWarning, match="records no checksums"):
        assert load_checkpoint(path)["step"] == 0


def test_a_zip_naming_an_entry_twice_is_refused(tmp_path):
    # torch's reader and this check could each read a different one of the two.
    path = tmp_path / "checkpoint.pt"
    with pytest.warns(UserWarning, match="Duplicate name"):  # zipfile warns, and writes it
        with zipfile.ZipFile(path, "w") as archive:
            archive.writestr("archive/data.pkl", pickle.dumps({}))
            archive.writestr("archive/data.pkl", nested_key_pickle(40))
    with pytest.raises(CheckpointError, match="two entries named 'archive/data.pkl'"):
        load_checkpoint(path)
