"""A small, fast raster canvas for video frames (Pillow, which matplotlib already needs).

Building a matplotlib figure per frame cost ~100 ms for a 3-D swarm; drawing the same picture
straight into an image costs about a millisecond, so videos of any length render in seconds.
Problems draw on a ``Canvas`` through their ``raster`` hook in world coordinates; the canvas maps
them to pixels through its ``View`` (a plane, or a fixed 3-D camera).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

import numpy as np
from PIL import Image, ImageDraw, ImageFont

# matplotlib's tab10, so frames and figures give agent i the same colour
PALETTE = ((31, 119, 180), (255, 127, 14), (44, 160, 44), (214, 39, 40), (148, 103, 189),
           (140, 86, 75), (227, 119, 194), (127, 127, 127), (188, 189, 34), (23, 190, 207))
INK, GRID, BACKGROUND = (40, 40, 40), (225, 225, 225), (255, 255, 255)


def colour(i: int) -> tuple[int, int, int]:
    return PALETTE[i % len(PALETTE)]


def faded(rgb: Sequence[int], amount: float) -> tuple[int, int, int]:
    """``rgb`` mixed with white: 0 keeps it, 1 is white."""
    return tuple(round(c + (255 - c) * amount) for c in rgb)


class View:
    """World → pixel map: orthographic, the box ``lo..hi`` (2 or 3 coordinates) fitted into the
    frame with a margin; 3-D boxes seen from azimuth ``azim`` and elevation ``elev`` (degrees)."""

    def __init__(self, lo: np.ndarray, hi: np.ndarray, size: tuple[int, int],
                 azim: float = -60.0, elev: float = 25.0, margin: int = 36) -> None:
        lo, hi = np.asarray(lo, float), np.asarray(hi, float)
        self.dim = lo.size
        if self.dim == 3:
            a, e = math.radians(azim), math.radians(elev)
            right = np.array([-math.sin(a), math.cos(a), 0.0])
            up = np.array([-math.sin(e) * math.cos(a), -math.sin(e) * math.sin(a), math.cos(e)])
            self.axes = np.stack([right, up], axis=1)  # (3, 2)
            self.towards_camera = np.array([math.cos(e) * math.cos(a),
                                            math.cos(e) * math.sin(a), math.sin(e)])
        else:
            self.axes = np.eye(2)
            self.towards_camera = None
        corners = np.array(np.meshgrid(*zip(lo, hi))).reshape(self.dim, -1).T @ self.axes
        c_lo, c_hi = corners.min(0), corners.max(0)
        width, height = size
        self.scale = min((width - 2 * margin) / max(c_hi[0] - c_lo[0], 1e-9),
                         (height - 2 * margin) / max(c_hi[1] - c_lo[1], 1e-9))
        self.centre = (c_lo + c_hi) / 2
        self.pixel_centre = np.array([width / 2, height / 2 + 8])

    def depth(self, points: np.ndarray) -> np.ndarray:
        """Nearness to the camera (..., ): draw in increasing order (far first)."""
        if self.towards_camera is None:
            return np.zeros(np.shape(points)[:-1])
        return np.asarray(points, float) @ self.towards_camera

    def __call__(self, points: np.ndarray) -> np.ndarray:
        """Pixel coordinates (..., 2) of world points (..., dim)."""
        flat = (np.asarray(points, float) @ self.axes - self.centre) * self.scale
        return self.pixel_centre + flat * np.array([1.0, -1.0])


class Canvas:
    """An RGB image with drawing in world coordinates (``view``) and in pixels (``text``)."""

    def __init__(self, size: tuple[int, int], view: View | None = None) -> None:
        self.size = size
        self.image = Image.new("RGB", size, BACKGROUND)
        self.draw = ImageDraw.Draw(self.image)
        self.view = view
        self.font = _font(13)
        self.small = _font(11)

    def polyline(self, points: np.ndarray, rgb: Sequence[int], width: int = 2) -> None:
        if len(points) >= 2:
            self.draw.line([tuple(p) for p in self.view(points)], fill=tuple(rgb), width=width,
                           joint="curve")

    def segment(self, a: np.ndarray, b: np.ndarray, rgb: Sequence[int], width: int = 2) -> None:
        self.draw.line([tuple(self.view(a)), tuple(self.view(b))], fill=tuple(rgb), width=width)

    def dot(self, point: np.ndarray, radius: float, rgb: Sequence[int],
            outline: Sequence[int] | None = None) -> None:
        x, y = self.view(point)
        self.draw.ellipse([x - radius, y - radius, x + radius, y + radius], fill=tuple(rgb),
                          outline=None if outline is None else tuple(outline))

    def cross(self, point: np.ndarray, radius: float, rgb: Sequence[int], width: int = 2) -> None:
        x, y = self.view(point)
        for dx, dy in ((1, 1), (1, -1)):
            self.draw.line([(x - dx * radius, y - dy * radius), (x + dx * radius, y + dy * radius)],
                           fill=tuple(rgb), width=width)

    def text(self, xy: tuple[float, float], text: str, rgb: Sequence[int] = INK,
             small: bool = False) -> None:
        self.draw.text(xy, text, fill=tuple(rgb), font=self.small if small else self.font)

    def pixels(self) -> np.ndarray:
        return np.asarray(self.image, dtype=np.uint8).copy()


@functools.lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.ImageFont:
    try:  # matplotlib ships DejaVu Sans: the same face as the figures
        from matplotlib import font_manager

        return ImageFont.truetype(font_manager.findfont("DejaVu Sans"), size)
    except (ImportError, OSError, ValueError):
        return ImageFont.load_default()
