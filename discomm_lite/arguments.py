"""Argument types shared by the command lines (the CLI, the batch and study options): light, so
that `--help` imports no torch."""

from __future__ import annotations

import argparse
from collections.abc import Callable


def at_least(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low` (a count that would otherwise do nothing)."""
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"takes an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"takes an integer >= {low}, got {value}")
        return value

    parse.__name__ = f"integer >= {low}"
    return parse
