"""Plain-text tables and byte totals shared by the per-leaf reports.

``jc.summary``, ``jc.io`` artifact info and ``jc.lowrank.report`` print one row per leaf and
sum byte columns over their rows; the formatting and the sums live here once.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any


def column_total(rows: Iterable[Any], field: str) -> int:
    """The sum of attribute ``field`` over ``rows``."""
    return sum(getattr(r, field) for r in rows)


class ByteTotals:
    """Mixin for a report with per-leaf rows in ``leaves`` having byte counts.

    Gives the totals ``float32_bytes`` (every leaf as float32) and ``logical_bytes`` (the
    compressed form), and their ratio ``logical_ratio``.
    """

    leaves: Sequence[Any]

    @property
    def float32_bytes(self) -> int:
        """Bytes of every leaf as float32."""
        return column_total(self.leaves, "float32_bytes")

    @property
    def logical_bytes(self) -> int:
        """Bytes of the compressed form of every leaf."""
        return column_total(self.leaves, "logical_bytes")

    @property
    def logical_ratio(self) -> float:
        """float32 bytes / logical bytes."""
        return self.float32_bytes / max(self.logical_bytes, 1)


def format_table(
    head: Sequence[str],
    rows: Sequence[Sequence[str]],
    *,
    left: Iterable[int] = (0,),
    total: Sequence[str] | None = None,
    footer: Iterable[str] = (),
) -> str:
    """Aligns string cells in columns separated by two spaces.

    Args:
      head: the column titles.
      rows: the body rows, each as long as ``head``.
      left: indices of the left-aligned columns; the others are right-aligned.
      total: an optional last row, set off by rules above and below the body.
      footer: lines appended as they are.

    Returns:
      The table, lines joined by newlines, without trailing spaces.

    Example:
      >>> print(format_table(("path", "bytes"), [("w", "1,024"), ("b", "16")]))
      path  bytes
      w     1,024
      b        16
    """
    body = [*rows, *([total] if total is not None else [])]
    widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
    left = frozenset(left)

    def line(r: Sequence[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(c.ljust(w) if i in left else c.rjust(w) for i, (c, w) in enumerate(cells))

    lines = [line(head)]
    if total is None:
        lines += map(line, rows)
    else:
        sep = "-" * len(line(head))
        lines += [sep, *map(line, rows), sep, line(total)]
    return "\n".join([x.rstrip() for x in lines] + list(footer))
