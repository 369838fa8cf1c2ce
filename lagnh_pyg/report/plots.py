"""Line plots of results (P@K, PR, MAP against a parameter): matplotlib with the Agg backend,
PNG files written atomically.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..files import atomic_path


# -- plots -------------------------------------------------------------------------------------
def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


#: matplotlib's default colour cycle has 10 colours; Table 3 plots 14 methods
LINE_STYLES = ("-", "--", ":", "-.")


def line_style(i: int) -> str:
    """The dash pattern of the ``i``-th line: a new one each time the 10 colours come round
    again, so that (colour, dashes) stays unique for up to 40 lines."""
    return LINE_STYLES[(i // 10) % len(LINE_STYLES)]


def line_plot(
    path: str | os.PathLike,
    series: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    title: str,
    xlabel: str,
    ylabel: str,
    ylim: tuple[float, float] | None = (0.0, 1.0),
    xscale: str = "linear",
) -> Path:
    """One PNG with one line per entry of ``series`` (``name -> (x, y)``), written atomically."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(5.5, 4.0), dpi=110)
    for i, (name, (x, y)) in enumerate(series.items()):
        ax.plot(list(x), list(y), marker="o" if len(x) <= 25 else None, markersize=3, label=name,
                linestyle=line_style(i))
    ax.set_title(title, fontsize=10)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if ylim is not None:
        ax.set_ylim(*ylim)
    if xscale == "symlog":
        ax.set_xscale("symlog", linthresh=min((abs(v) for _, (x, _) in series.items() for v in x if v), default=1.0))
    elif xscale != "linear":
        ax.set_xscale(xscale)
    ax.grid(alpha=0.3)
    if len(series) > 1 or any(series):
        ax.legend(fontsize=8)
    fig.tight_layout()
    path = Path(path)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
