"""Sample grids: one row per sample, columns image | soft label | argmax | label (or a task's own columns)."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.figure import Figure
from matplotlib.patches import Patch

from .figure import _image_range, _palette, _save_figure, _to_numpy


#: [`save_sample_grid`] columns of a mask -> image grid: the mask drawn for, the image drawn, the model's soft label.
MASK_TO_IMAGE_COLUMNS = {"label": "mask", "image": "generated image", "soft_label": "soft label"}
#: [`save_sample_grid`] columns of a segmentation grid: the real image, its predicted soft label, its real mask.
SEGMENTATION_COLUMNS = {"image": "image", "soft_label": "soft label", "label": "ground truth"}
_COLUMN_KEYS = ("image", "soft_label", "argmax", "label")


def save_sample_grid(
    images: torch.Tensor | np.ndarray,
    soft_labels: torch.Tensor | np.ndarray | None,
    labels: torch.Tensor | np.ndarray | None,
    path: str | os.PathLike,
    id2label: Mapping[int | str, str] | None = None,
    max_rows: int = 8,
    palette: Sequence[Sequence[float]] | None = None,
    title: str | None = None,
    dpi: int = 100,
    columns: Mapping[str, str] | None = None,
) -> Path:
    """Save a grid of samples, one row each: image | soft label | argmax of the soft label | hard label.

    The soft-label column shows, for K = 2, the probability of class 1 (oil) as a colour map with a colourbar;
    for K > 2, the probability-weighted mix of the class colours. The argmax and hard-label columns use the class
    colours, explained by a legend. Columns whose input is `None` are left out. `columns` picks, orders and titles
    the columns, e.g. [`MASK_TO_IMAGE_COLUMNS`] (mask | generated image | soft label) or [`SEGMENTATION_COLUMNS`]
    (image | soft label | ground truth).

    Args:
        images (`torch.Tensor` or `np.ndarray`): `(B, 1, H, W)` or `(B, H, W)` single-channel images, in
            [-1, 1], [0, 1] or [0, 255] (inferred from the values).
        soft_labels (`torch.Tensor` or `np.ndarray`, *optional*): `(B, K, H, W)` class probabilities.
        labels (`torch.Tensor` or `np.ndarray`, *optional*): `(B, H, W)` hard masks (e.g. the real mask);
            values outside `[0, K)` (such as the ignore index 255) are drawn white.
        path (`str` or `os.PathLike`): output PNG path.
        id2label (`Mapping`, *optional*): class names for the legend.
        max_rows (`int`, *optional*, defaults to 8): at most this many samples are drawn.
        palette (`Sequence`, *optional*): RGB class colours (in [0, 1] or [0, 255]); defaults to
            [`DEFAULT_PALETTE`].
        title (`str`, *optional*): figure title.
        dpi (`int`, *optional*, defaults to 100): resolution of the PNG.
        columns (`Mapping[str, str]`, *optional*): column key -> title, in drawing order; keys among `"image"`,
            `"soft_label"`, `"argmax"` (both need `soft_labels`) and `"label"` (needs `labels`). Defaults to
            every column whose input is given, titled "image", "soft label", "argmax", "label".

    Returns:
        `pathlib.Path`: the written file.
    """
    images = _to_numpy(images)
    soft_labels = _to_numpy(soft_labels)
    labels = _to_numpy(labels)
    if max_rows < 1:
        raise ValueError(f"`max_rows` must be >= 1, got {max_rows}.")
    if images.ndim == 4:
        if images.shape[1] != 1:
            raise ValueError(f"`images` must be single-channel (B, 1, H, W) or (B, H, W), got {images.shape}.")
        images = images[:, 0]
    if images.ndim != 3:
        raise ValueError(f"`images` must have shape (B, 1, H, W) or (B, H, W), got {images.shape}.")
    batch, height, width = images.shape
    if soft_labels is None and labels is None:
        raise ValueError("Pass `soft_labels` and/or `labels`.")
    if soft_labels is not None and (soft_labels.ndim != 4 or soft_labels.shape[0] != batch
                                    or soft_labels.shape[2:] != (height, width)):
        raise ValueError(f"`soft_labels` must have shape ({batch}, K, {height}, {width}), got {soft_labels.shape}.")
    if labels is not None and labels.shape != (batch, height, width):
        raise ValueError(f"`labels` must have shape ({batch}, {height}, {width}), got {labels.shape}.")

    if soft_labels is not None:
        num_classes = soft_labels.shape[1]
    elif id2label is not None:
        num_classes = len(id2label)
    else:
        valid = labels[(labels >= 0) & (labels < 255)]
        num_classes = max(int(valid.max()) + 1 if valid.size else 1, 2)
    names = {int(k): str(v) for k, v in (id2label or {}).items()}
    colours = _palette(num_classes, palette)

    def colour_mask(mask: np.ndarray) -> np.ndarray:
        rgb = np.ones(mask.shape + (3,))  # out-of-range / ignored pixels: white
        valid = (mask >= 0) & (mask < num_classes)
        rgb[valid] = colours[mask[valid].astype(np.int64)]
        return rgb

    columns = _grid_columns(columns, soft_labels is not None, labels is not None)
    titles, keys = list(columns.values()), list(columns)
    rows = min(batch, max_rows)
    vmin, vmax = _image_range(images)

    def panel(key: str, row: int) -> tuple[np.ndarray, dict]:
        if key == "image":
            return images[row], {"cmap": "gray", "vmin": vmin, "vmax": vmax}
        if key == "label":
            return colour_mask(labels[row]), {}
        q = soft_labels[row]
        if key == "argmax":
            return colour_mask(q.argmax(axis=0)), {}
        if num_classes == 2:
            return q[1], {"cmap": "magma", "vmin": 0.0, "vmax": 1.0}
        return np.clip(np.einsum("khw,kc->hwc", q, colours), 0.0, 1.0), {}

    fig = Figure(figsize=(2.4 * len(keys), 2.4 * rows * height / width + 1.2), layout="constrained")
    axes = np.asarray(fig.subplots(rows, len(keys), squeeze=False))
    probability_image = None
    for row in range(rows):
        for column, key in enumerate(keys):
            ax = axes[row, column]
            data, style = panel(key, row)
            shown = ax.imshow(data, interpolation="nearest", **style)
            if key == "soft_label" and num_classes == 2:
                probability_image, probability_column = shown, column
            ax.set_xticks([])
            ax.set_yticks([])
            if row == 0:
                ax.set_title(titles[column], fontsize=10)

    if probability_image is not None:
        colourbar = fig.colorbar(probability_image, ax=axes[-1, probability_column], location="bottom",
                                 fraction=0.08, pad=0.02)
        colourbar.set_label(f"p({names.get(1, 'class 1')})")
    handles = [Patch(facecolor=colours[k], edgecolor="0.5", label=names.get(k, str(k))) for k in range(num_classes)]
    if "label" in keys and ((labels[:rows] < 0) | (labels[:rows] >= num_classes)).any():
        handles.append(Patch(facecolor="white", edgecolor="0.5", label="ignored"))
    fig.legend(handles=handles, loc="outside lower center", ncol=min(len(handles), 6), frameon=False, fontsize=9)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path, dpi)


def _grid_columns(columns: Mapping[str, str] | None, has_soft_labels: bool, has_labels: bool) -> dict[str, str]:
    """The checked `columns` of [`save_sample_grid`] (key -> title), or its default columns."""
    if columns is None:
        defaults = {"image": "image", "soft_label": "soft label", "argmax": "argmax", "label": "label"}
        return {k: v for k, v in defaults.items()
                if (k != "label" or has_labels) and (k not in ("soft_label", "argmax") or has_soft_labels)}
    columns = dict(columns)
    unknown = sorted(set(columns) - set(_COLUMN_KEYS))
    if not columns or unknown:
        raise ValueError(f"`columns` must map some of {list(_COLUMN_KEYS)} to titles, got {list(columns)}.")
    for key, given, name in (("soft_label", has_soft_labels, "soft_labels"), ("argmax", has_soft_labels,
                             "soft_labels"), ("label", has_labels, "labels")):
        if key in columns and not given:
            raise ValueError(f"`columns` has {key!r}, which needs `{name}`; got `{name}=None`.")
    return columns


