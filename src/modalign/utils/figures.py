"""The one figure helper: matplotlib's object API, so a plot never switches a notebook user's backend.

    fig, ax = new_figure(figsize=(6, 4))
    ax.plot(x, y)
    save_figure(fig, "curve.png")

`Figure` objects are not registered with pyplot: nothing global changes and nothing needs closing.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from modalign.utils.paths import user_path


def new_figure(nrows: int = 1, ncols: int = 1, figsize: tuple[float, float] = (6.0, 4.0),
               **subplot_kw: Any) -> tuple[Any, Any]:
    """(Figure, axes) as pyplot.subplots returns them, without touching pyplot's state."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=figsize)
    return fig, fig.subplots(nrows, ncols, **subplot_kw)


def save_figure(fig: Any, path: str | Path, dpi: int = 110) -> Path:
    path = user_path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi)
    return path
