"""Pickles read without running their code: what a pickle would import, and a restricted reader.

Unpickling calls whatever functions the file names (`os.system` as easily as a constructor), so
a pickle from someone else may only be read by a reader that refuses every global but a few
known-harmless ones (the "Restricting Globals" recipe of Python's `pickle` documentation; torch's
`weights_only=True` reader is one for checkpoints). `pickle_imports` lists a pickle's globals by
parsing its opcodes with `pickletools`, which runs nothing, so an error can say what a refused
file is.
"""

from __future__ import annotations

import io
import pickle
import pickletools
from collections.abc import Callable, Mapping
from typing import Any, BinaryIO

_STRING_OPCODES = frozenset({"STRING", "BINSTRING", "SHORT_BINSTRING", "UNICODE", "BINUNICODE",
                             "SHORT_BINUNICODE", "BINUNICODE8"})
_GET_OPCODES = frozenset({"GET", "BINGET", "LONG_BINGET"})
_PUT_OPCODES = frozenset({"PUT", "BINPUT", "LONG_BINPUT"})


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


def load_restricted(file: BinaryIO, allowed: Mapping[str, Callable], *,
                    encoding: str = "ASCII") -> Any:
    """Unpickle `file`, resolving only the globals named in `allowed` ("module.name" -> object).

    Any other global raises RefusedGlobal before it is imported, so nothing but the allowed
    callables can run. `encoding` decodes Python 2 strings (torchvision reads CIFAR as latin1).
    """

    class Restricted(pickle.Unpickler):
        def find_class(self, module: str, name: str) -> Any:
            key = f"{module}.{name}"
            if key not in allowed:
                raise RefusedGlobal(key)
            return allowed[key]

    return Restricted(file, encoding=encoding).load()
