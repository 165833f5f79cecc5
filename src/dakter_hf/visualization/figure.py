"""Shared drawing helpers of the figures: atomic PNG writing, class palette, array conversion."""

from __future__ import annotations

import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure


#: Default class colours (RGB in [0, 1]): the OSD colour code, extended with `tab10`.
DEFAULT_PALETTE: list[tuple[float, float, float]] = [
    (0.0, 0.0, 0.0),
    (0.0, 1.0, 1.0),
    (1.0, 0.0, 0.0),
    (0.6, 0.298, 0.0),
    (0.0, 0.6, 0.0),
] + [tuple(float(c) for c in colormaps["tab10"](i)[:3]) for i in range(10)]


def _save_figure(fig: Figure, path: str | os.PathLike, dpi: int) -> Path:
    """Render `fig` to a PNG at `path` atomically; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    FigureCanvasAgg(fig)
    # a unique hidden name in the same directory (same file system, so os.replace is atomic); opened with
    # open(..., "xb") rather than tempfile.mkstemp so the file gets the usual umask permissions, not 0600
    tmp_path = path.parent / f".{path.name}.{os.getpid()}.{uuid.uuid4().hex}.tmp"
    try:
        with open(tmp_path, "xb") as file:
            fig.savefig(file, format="png", dpi=dpi, bbox_inches="tight")
        os.replace(tmp_path, path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    return path


def _to_numpy(array: Any) -> np.ndarray | None:
    if array is None:
        return None
    if isinstance(array, torch.Tensor):
        array = array.detach().float().cpu().numpy() if array.is_floating_point() else array.detach().cpu().numpy()
    elif isinstance(array, Sequence) and array and not np.isscalar(array[0]):
        array = np.stack([_to_numpy(a) for a in array])
    return np.asarray(array)


def _palette(num_classes: int, palette: Sequence[Sequence[float]] | None) -> np.ndarray:
    colours = np.asarray(palette if palette is not None else DEFAULT_PALETTE, dtype=np.float64)
    if colours.ndim != 2 or colours.shape[1] != 3:
        raise ValueError(f"`palette` must be a list of RGB triples, got shape {colours.shape}.")
    if len(colours) < num_classes:
        raise ValueError(f"`palette` has {len(colours)} colours, fewer than the {num_classes} classes.")
    if colours.max() > 1.0:
        colours = colours / 255.0
    return colours[:num_classes]


def _image_range(images: np.ndarray) -> tuple[float, float]:
    if images.dtype == np.uint8 or images.max() > 1.0 + 1e-6:
        return 0.0, 255.0
    return (-1.0, 1.0) if images.min() < 0 else (0.0, 1.0)


