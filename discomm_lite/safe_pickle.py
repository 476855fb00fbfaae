"""Pickles read without running their code: what a pickle would import, its shape, and a
restricted reader.

Unpickling calls whatever functions the file names (`os.system` as easily as a constructor), so
a pickle from someone else may only be read by a reader that refuses every global but a few
known-harmless ones (the "Restricting Globals" recipe of Python's `pickle` documentation; torch's
`weights_only=True` reader is one for checkpoints). `pickle_imports` lists a pickle's globals by
parsing its opcodes with `pickletools`, which runs nothing, so an error can say what a refused
file is.

Harmless objects can still be hostile in their shape: a 1 KB pickle can build a dict keyed by a
tuple nested 40 deep whose two halves are one shared object, which Python then hashes in 2^40
steps, and a few KB can build a list that prints as a billion items ("billion laughs").
`check_structure` runs the pickle's stack machine on its opcodes, building nothing, and refuses
such shapes before any reader builds them.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, BinaryIO

_STRING_OPCODES = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
                             "SHORT_BINUNICODE", "BINUNICODE8"})
_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


# What `load_restricted` accepts by default: far more than torchvision's CIFAR files (4 levels,
# about 150,000 operations, one object per operation), far less than what hangs a reader.
MAX_DEPTH = 16
MAX_OBJECTS = 10_000_000
MAX_OPERATIONS = 1_000_000
MAX_BYTES = 512 * 2**20

# Opcodes that add to the container below them on the stack, which stays there.
_MUTATORS = frozenset({"APPEND", "APPENDS", "SETITEM", "SETITEMS", "ADDITEMS", "BUILD"})
_EMPTY_CONTAINERS = frozenset({"EMPTY_LIST", "EMPTY_DICT", "EMPTY_SET", "EMPTY_TUPLE"})
_MARK, _ATOM = -2, -1  # stack entries that are not objects with contents


class UnsafePickle(pickle.UnpicklingError):
    """A pickle refused for its shape (too deep, too many objects, too long) or damaged, before
    any of it was built."""


@dataclass(frozen=True)
class PickleShape:
    """What `check_structure` measured: the nesting depth of the pickled object, the number of
    objects it expands to (a shared object counted at each place it appears), its opcodes."""

    depth: int
    objects: int
    operations: int


class RefusedGlobal(pickle.UnpicklingError):
    """A pickle named a global that the reader does not allow; nothing of it was called."""

    def __init__(self, name: str) -> None:
        super().__init__(f"the pickle imports {name}, which is not allowed")
        self.name = name


def pickle_imports(data: bytes) -> list[str]:
    """The "module.name" of every global the pickle `data` would import, sorted; nothing runs.

    Protocols 0 to 5: GLOBAL and INST name theirs; STACK_GLOBAL takes the two strings pushed (or
    fetched from the memo) just before it. A stream that ends early or does not parse gives what
    was read up to there: this is for messages, the safety is the restricted reader's.
    """
    found: set[str] = set()
    pushed: list[str | None] = []  # the values of the latest pushes that matter here
    memo: dict[int, str | None] = {}
    last_string: str | None = None  # the value on top of the stack when it is a string
    try:
        for opcode, arg, _ in pickletools.genops(io.BytesIO(data)):
            name = opcode.name
            if name in ("GLOBAL", "INST"):
                found.add(str(arg).replace(" ", "."))
            elif name == "STACK_GLOBAL" and len(pushed) >= 2 and None not in pushed[-2:]:
                found.add(f"{pushed[-2]}.{pushed[-1]}")
            if name in _STRING_OPCODES:
                last_string = arg if isinstance(arg, str) else bytes(arg).decode("latin-1")
                pushed.append(last_string)
            elif name in _GET_OPCODES:
                last_string = memo.get(arg)
                pushed.append(last_string)
            elif name == "MEMOIZE":
                memo[len(memo)] = last_string
            elif name in _PUT_OPCODES:
                memo[arg] = last_string
            else:
                last_string = None
    except Exception:  # a damaged or foreign stream: keep what was found
        pass
    return sorted(found)


def check_structure(data: bytes, *, max_depth: int = MAX_DEPTH, max_objects: int = MAX_OBJECTS,
                    max_operations: int = MAX_OPERATIONS) -> PickleShape:
    """Refuse (UnsafePickle) the pickle `data` if what it builds would be hostile in its shape.

    Runs the unpickler's stack machine on the opcodes (`pickletools.genops`), with each object
    replaced by its depth and the number of objects it expands to; nothing is built or imported.
    Refused: nesting deeper than `max_depth` (hashing, comparing or printing recurses that deep);
    more than `max_objects` once shared objects are counted at each place they appear (what
    hashing, comparing or printing visits); more than `max_operations` opcodes (what this check
    itself reads); an object changed after another object took it in (a self-referring
    structure, or one grown behind the counts' back: no checkpoint or dataset holds either); a
    stream that does not parse. Bounded by `max_operations`: about a second per million.
    """
    depth: list[int] = []  # per object: its nesting depth (an atom's is 0)
    size: list[int] = []  # per object: how many objects it expands to, itself included
    taken: list[bool] = []  # per object: another object holds it
    stack: list[int] = []  # object indices, _ATOM or _MARK
    memo: dict[int, int] = {}

    def refuse(reason: str) -> UnsafePickle:
        return UnsafePickle(f"the pickle {reason}")

    def grow(target: int, items: list[int]) -> None:
        """Put `items` into object `target` (a new one, or one being filled)."""
        for item in items:
            if item == target:
                raise refuse("holds an object that contains itself")
            d, n = (0, 1) if item == _ATOM else (depth[item], size[item])
            depth[target] = max(depth[target], d + 1)
            size[target] = min(size[target] + n, max_objects + 1)
            if item != _ATOM:
                taken[item] = True
        if depth[target] > max_depth:
            raise refuse(f"nests objects more than {max_depth} deep")
        if size[target] > max_objects:
            raise refuse(f"expands to more than {max_objects:,} objects (one object referred "
                         "to from many places, many times over)")

    def new(items: list[int]) -> int:
        depth.append(1)
        size.append(1)
        taken.append(False)
        grow(len(depth) - 1, items)
        return len(depth) - 1

    def pop(before) -> list[int]:
        """The stack entries `before` names, bottom first (a mark's slice without the mark)."""
        names = [s.name for s in before]
        if "mark" in names:
            if _MARK not in stack:
                raise refuse("pops to a mark that was never set (it is damaged)")
            at = len(stack) - 1 - stack[::-1].index(_MARK)
            above, below = stack[at + 1:], names.index("mark")
            del stack[at:]
        else:
            above, below = [], len(names)
        if len(stack) < below or _MARK in stack[len(stack) - below:]:
            raise refuse("pops more than it pushed (it is damaged)")
        popped = stack[len(stack) - below:] if below else []
        del stack[len(stack) - below:]
        return popped + above

    count = 0
    try:
        for count, (opcode, arg, _) in enumerate(pickletools.genops(io.BytesIO(data)), 1):
            if count > max_operations:
                raise refuse(f"holds more than {max_operations:,} operations")
            name = opcode.name
            if name == "MARK":
                stack.append(_MARK)
            elif name in _PUT_OPCODES or name == "MEMOIZE":
                if not stack or stack[-1] == _MARK:
                    raise refuse("memoises nothing (it is damaged)")
                memo[arg if name != "MEMOIZE" else len(memo)] = stack[-1]
            elif name in _GET_OPCODES:
                if arg not in memo:
                    raise refuse("fetches an object it never stored (it is damaged)")
                stack.append(memo[arg])
            elif name == "DUP":
                stack.append(pop(opcode.stack_before)[0])
                stack += stack[-1:]
            elif name == "STOP":
                pop(opcode.stack_before)
                break
            else:
                items = pop(opcode.stack_before)
                if name in _MUTATORS:
                    target, items = items[0], items[1:]
                    if target == _ATOM:  # a BUILD on a global, say: a new object holding it
                        target = new([target])
                    elif taken[target]:
                        raise refuse("changes an object after another object took it in")
                    grow(target, items)
                    stack.append(target)
                elif opcode.stack_after:
                    plain = not opcode.stack_before and name not in _EMPTY_CONTAINERS
                    stack.append(_ATOM if plain else new(items))
        else:
            raise refuse("ends before its STOP opcode (it is damaged)")
    except UnsafePickle:
        raise
    except Exception as err:  # genops: an unknown opcode, an argument cut short
        raise refuse(f"does not parse ({err}): it is damaged") from None
    root = max(depth) if depth else 0
    return PickleShape(depth=root, objects=max(size, default=1), operations=count)


def load_restricted(file: BinaryIO, allowed: Mapping[str, Callable], *,
                    encoding: str = "ASCII", max_bytes: int = MAX_BYTES) -> Any:
    """Unpickle `file`, resolving only the globals named in `allowed` ("module.name" -> object).

    Any other global raises RefusedGlobal before it is imported, so nothing but the allowed
    callables can run. The pickle is read whole (at most `max_bytes`) and its shape checked
    first (`check_structure`: UnsafePickle for a file too large, too deep, too many objects), so
    that no file hangs the reader. `encoding` decodes Python 2 strings (torchvision reads CIFAR
    as latin1).
    """
    data = file.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnsafePickle(f"the pickle is larger than {max_bytes / 2**20:.0f} MiB")
    check_structure(data)

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            key = f"{module}.{name}"
            if key not in allowed:
                raise RefusedGlobal(key)
            return allowed[key]

    return Restricted(io.BytesIO(data), encoding=encoding).load()
