"""Tables and code as the notebooks show them: Markdown strings that Jupyter renders."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence


class MarkdownText(str):
    """Markdown: a plain string that Jupyter displays rendered."""

    def _repr_markdown_(self) -> str:
        return str(self)


class MarkdownTable(MarkdownText):
    """A Markdown table (see `markdown_table`)."""


def show_source(*functions: Callable) -> MarkdownText:
    """The source code of library functions, as a Markdown code block (notebook 01 shows the
    maths next to its equations)."""
    import inspect

    return MarkdownText("\n".join(f"```python\n{inspect.getsource(f).rstrip()}\n```"
                                  for f in functions))


def _cell(value, digits: int) -> str:
    """One table cell: floats rounded, (mean, std) pairs as "m ± s" ("–" without a finite
    mean), None as "–"."""
    if value is None:
        return "–"
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float):
        return f"{value:.{digits}f}"
    if isinstance(value, tuple) and len(value) == 2 and all(
            isinstance(v, (int, float)) for v in value):
        mean, std = value
        return "–" if math.isnan(mean) else f"{mean:.{digits}f} ± {std:.{digits}f}"
    return str(value).replace("|", "\\|").replace("\n", " ")


def markdown_table(rows: Mapping | Sequence[Sequence], header: Sequence[str], *,
                   digits: int = 3) -> MarkdownTable:
    """A Markdown table of `rows` under `header`, the one way the notebooks print tables.

    Args:
        rows: a list of rows (sequences of cells); or a mapping name -> value (two columns); or
            a mapping name -> record (dict), whose columns are `header[1:]`, read as keys.
            Floats are rounded to `digits`, a (mean, std) pair is written "mean ± std" ("–" when
            the mean is NaN: no value), None as "–", and "|" in text is escaped.
        header: the column titles.

    Returns:
        The table as a `MarkdownTable` (a string that Jupyter renders).
    """
    if isinstance(rows, Mapping):
        rows = [[name, *((record.get(k) for k in header[1:]) if isinstance(record, Mapping)
                         else [record])]
                for name, record in rows.items()]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        row = list(row)
        if len(row) != len(header):
            raise ValueError(f"A row has {len(row)} cells but the header has {len(header)}: {row}")
        lines.append("| " + " | ".join(_cell(v, digits) for v in row) + " |")
    return MarkdownTable("\n".join(lines))


def folded(text: str, title: str = "Answer (open after you have predicted)") -> MarkdownText:
    """`text` (Markdown) folded under a title, as the notebooks' answers are: the numbers in it
    come from the cell that builds it, so a run with other parameters shows its own."""
    return MarkdownText(f"<details><summary><b>{title}</b></summary>\n\n{text}\n\n</details>")
