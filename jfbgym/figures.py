"""Headless matplotlib figures: the one place that builds a figure on the Agg canvas.

Private ``Figure`` objects with their own Agg canvas work whatever pyplot backend is active and
leave no global pyplot state behind (no ``pyplot`` import at all), so rendering works on a
machine without a display and inside tests.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from jfbgym.validation import output_file


def agg_figure(width: float, height: float, dpi: int = 100) -> Any:
    """A matplotlib ``Figure`` of ``width`` x ``height`` inches on its own Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(width, height), dpi=dpi)
    FigureCanvasAgg(fig)
    return fig


def to_rgb(fig: Any) -> np.ndarray:
    """Draw ``fig`` and return its pixels, (height, width, 3) uint8 (a copy)."""
    fig.canvas.draw()
    return np.asarray(fig.canvas.buffer_rgba())[..., :3].copy()


def save(fig: Any, path: str | Path) -> Path:
    """``fig`` written to ``path`` (parent folders created) after a tight layout."""
    path = output_file(path, "path")
    fig.tight_layout()
    fig.savefig(path)
    return path
