"""Result tables: CSV files (written atomically) and markdown tables.
"""

from __future__ import annotations

import csv
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from ..files import atomic_path


# -- tables ------------------------------------------------------------------------------------
def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    path = Path(path)
    with atomic_path(path) as tmp, open(tmp, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for r in rows:
            w.writerow([_fmt_cell(v, csv_=True) for v in r])
    return path


def _fmt_cell(v: Any, csv_: bool = False) -> str:
    if v is None:
        return "" if csv_ else "–"
    if isinstance(v, float):
        return f"{v:.6f}" if csv_ else f"{v:.4f}"
    return str(v)


def markdown_table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for r in rows:
        lines.append("| " + " | ".join(_fmt_cell(v) for v in r) + " |")
    return "\n".join(lines) + "\n"
