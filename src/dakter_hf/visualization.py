"""Figures: generated / real sample grids, learning curves, bar charts of results.

Everything is drawn on a standalone `matplotlib.figure.Figure` with the Agg canvas: pyplot is never imported, no
window is opened, and no global figure state is left behind. Files are written atomically (to a temporary
file in the target directory, then `os.replace`), so a reader never sees a half-written PNG; parent
directories are created.

Class colours: by default the OSD colour code (0 sea black, 1 oil spill cyan, 2 look-alike red, 3 ship brown,
4 land green), then matplotlib's `tab10` for further classes; pass `palette` to override.
"""

from __future__ import annotations

import math
import os
import uuid
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Patch


__all__ = ["DEFAULT_PALETTE", "MASK_TO_IMAGE_COLUMNS", "SEGMENTATION_COLUMNS", "save_bar_chart", "save_learning_curves",
           "save_sample_grid", "save_seed_comparison"]

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


def _series_points(name: str, points: Any) -> tuple[np.ndarray, np.ndarray]:
    if isinstance(points, Mapping):
        points = list(points.items())
    array = np.asarray(list(points), dtype=np.float64)
    if array.size == 0:
        return np.empty(0), np.empty(0)
    if array.ndim != 2 or array.shape[1] != 2:
        raise ValueError(f"`history[{name!r}]` must be a sequence of (step, value) pairs, got shape {array.shape}.")
    finite = np.isfinite(array).all(axis=1)
    return array[finite, 0], array[finite, 1]


#: Series longer than this many points are drawn faintly, with their running mean on top (`smoothing="auto"`).
SMOOTHING_MIN_POINTS = 200


def running_mean(values: np.ndarray, window: int) -> np.ndarray:
    """The mean of the last `window` values at each position (fewer at the start), same length as `values`."""
    if window < 1:
        raise ValueError(f"`window` must be >= 1, got {window}.")
    values = np.asarray(values, dtype=np.float64)
    cumulative = np.concatenate([[0.0], np.cumsum(values)])
    ends = np.arange(1, len(values) + 1)
    starts = np.maximum(ends - window, 0)
    return (cumulative[ends] - cumulative[starts]) / (ends - starts)


def _smoothing_window(smoothing: int | str | None, num_points: int) -> int | None:
    if smoothing is None:
        return None
    if smoothing == "auto":
        return max(5, num_points // 50) if num_points > SMOOTHING_MIN_POINTS else None
    if isinstance(smoothing, bool) or not isinstance(smoothing, int) or smoothing < 1:
        raise ValueError(f"`smoothing` must be 'auto', None or a window of >= 1 points, got {smoothing!r}.")
    return smoothing if smoothing > 1 and num_points > smoothing else None


def save_learning_curves(
    history: Mapping[str, Sequence[tuple[float, float]] | Mapping[float, float]],
    path: str | os.PathLike,
    title: str | None = None,
    xlabel: str = "step",
    dpi: int = 100,
    smoothing: int | str | None = "auto",
) -> Path:
    """Save learning curves: several series, grouped into one subplot per name prefix.

    Series named `"<group>/<metric>"` (e.g. `"train/loss"`, `"train/loss_generated"`, `"eval/mean_iou"`) are
    drawn in one subplot per `<group>`; names without `/` share one subplot. Non-finite values are skipped. A noisy
    per-step series (a diffusion loss, say) is drawn faintly with its running mean on top, so its trend can be read.

    Args:
        history (`Mapping`): series name -> sequence of `(step, value)` pairs (or a `{step: value}` mapping).
        path (`str` or `os.PathLike`): output PNG path.
        title (`str`, *optional*): figure title.
        xlabel (`str`, *optional*, defaults to `"step"`): x-axis label.
        dpi (`int`, *optional*, defaults to 100): resolution of the PNG.
        smoothing (`int`, `"auto"` or `None`, *optional*, defaults to `"auto"`): the running-mean window in points
            drawn over each series longer than it; `"auto"`: a fiftieth of the series (at least 5 points) for series
            of more than `SMOOTHING_MIN_POINTS` points; `None`: raw values only.

    Returns:
        `pathlib.Path`: the written file.
    """
    if not history:
        raise ValueError("`history` is empty: nothing to plot.")
    groups: dict[str, list[tuple[str, np.ndarray, np.ndarray]]] = {}
    for name, points in history.items():
        group, _, label = str(name).partition("/") if "/" in str(name) else ("", "", str(name))
        steps, values = _series_points(name, points)
        groups.setdefault(group, []).append((label, steps, values))

    fig = Figure(figsize=(6.0 * len(groups), 4.0))
    axes = np.asarray(fig.subplots(1, len(groups), squeeze=False))[0]
    for ax, (group, series) in zip(axes, groups.items()):
        for label, steps, values in series:
            window = _smoothing_window(smoothing, len(steps))
            if window is None:
                ax.plot(steps, values, marker="o" if len(steps) <= 20 else None, markersize=3, label=label)
            else:
                (raw,) = ax.plot(steps, values, alpha=0.25, linewidth=0.8)
                ax.plot(steps, running_mean(values, window), color=raw.get_color(),
                        label=f"{label} (mean of {window})")
        ax.set_xlabel(xlabel)
        if group:
            ax.set_title(group)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path, dpi)


def _format_value(value: float) -> str:
    """Two decimals for values of 1 or more (percentages: 4.95, 55.93), three significant digits below."""
    return f"{value:.2f}" if abs(value) >= 1 else f"{value:.3g}"


def save_bar_chart(
    values: Mapping[str, float],
    path: str | os.PathLike,
    errors: Mapping[str, float] | None = None,
    ylabel: str = "",
    title: str | None = None,
    ylim: tuple[float, float] | None = None,
    dpi: int = 100,
) -> Path:
    """Save a bar chart (e.g. student mIoU per augmentation method), with optional error bars.

    Args:
        values (`Mapping[str, float]`): bar label -> value, drawn in the mapping's order and written on the bars.
        path (`str` or `os.PathLike`): output PNG path.
        errors (`Mapping[str, float]`, *optional*): bar label -> error-bar half-length (e.g. the standard
            deviation over seeds); keys must be among `values`; missing keys get no error bar.
        ylabel (`str`, *optional*): y-axis label.
        title (`str`, *optional*): figure title.
        ylim (`tuple[float, float]`, *optional*): y-axis limits; by default the axis starts at 0 (bars are not
            truncated; the values are written on the bars to read small differences).
        dpi (`int`, *optional*, defaults to 100): resolution of the PNG.

    Returns:
        `pathlib.Path`: the written file.
    """
    if not values:
        raise ValueError("`values` is empty: nothing to plot.")
    unknown = sorted(set(errors or {}) - set(values))
    if unknown:
        raise ValueError(f"`errors` has keys not in `values`: {unknown}.")
    labels = list(values)
    heights = np.array([float(values[k]) for k in labels])
    half_lengths = np.array([float((errors or {}).get(k, math.nan)) for k in labels])
    has_error = np.isfinite(half_lengths) & np.isfinite(heights)

    fig = Figure(figsize=(max(4.0, 1.1 * len(labels) + 1.5), 4.0), layout="constrained")
    ax = fig.subplots()
    positions = np.arange(len(labels))
    bars = ax.bar(positions, np.nan_to_num(heights), color="tab:blue", alpha=0.85)
    if has_error.any():  # error bars only where an error was given (no misleading zero-length caps)
        ax.errorbar(positions[has_error], heights[has_error], yerr=half_lengths[has_error], fmt="none",
                    ecolor="black", capsize=4)
    long_labels = max(len(k) for k in labels) > 8
    ax.set_xticks(positions, labels, rotation=20 if long_labels else 0, ha="right" if long_labels else "center")
    for bar, value, half_length, with_error in zip(bars, heights, half_lengths, has_error):
        text = "n/a" if math.isnan(value) else _format_value(value) + (f" ± {half_length:.2g}" if with_error else "")
        top = bar.get_height() + (half_length if with_error else 0.0)
        ax.annotate(text, (bar.get_x() + bar.get_width() / 2, top), ha="center", va="bottom", fontsize=8,
                    xytext=(0, 2), textcoords="offset points")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_ylabel(ylabel)
    ax.grid(True, axis="y", alpha=0.3)
    if title:
        ax.set_title(title)
    return _save_figure(fig, path, dpi)


def save_seed_comparison(
    arms: Mapping[str, Mapping[str, tuple[float, float]]],
    path: str | os.PathLike,
    reference: str | None = None,
    xlabel: str = "",
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Save a dot plot of experiment arms, one row each, for results over two levels of seeds.

    Each arm has one or more groups (e.g. one per generator seed), each a `(mean, std)` over inner seeds (e.g.
    student seeds): a group is a dot with a `± std` bar, the mean over an arm's groups a black tick. The `reference`
    arm (e.g. the students trained on real pairs alone) is also drawn as a dashed vertical line with a band of its
    first group's `± std`, so that each arm reads as left or right of it.

    Args:
        arms (`Mapping[str, Mapping[str, tuple[float, float]]]`): arm -> group name -> `(mean, std)`, drawn top to
            bottom in the mapping's order; every group name gets one colour across arms (legend).
        path (`str` or `os.PathLike`): output PNG path.
        reference (`str`, *optional*): an arm of `arms` to draw as the reference line.
        xlabel (`str`, *optional*): x-axis label.
        title (`str`, *optional*): figure title.
        dpi (`int`, *optional*, defaults to 100): resolution of the PNG.

    Returns:
        `pathlib.Path`: the written file.
    """
    if not arms:
        raise ValueError("`arms` is empty: nothing to plot.")
    empty = [arm for arm, groups in arms.items() if not groups]
    if empty:
        raise ValueError(f"arms without a (mean, std) group: {empty}.")
    if reference is not None and reference not in arms:
        raise ValueError(f"`reference` {reference!r} is not among the arms {list(arms)}.")
    group_names = list(dict.fromkeys(name for groups in arms.values() for name in groups))
    colours = colormaps["tab10"]
    fig = Figure(figsize=(8.0, 0.45 * len(arms) + 1.6), layout="constrained")
    ax = fig.subplots()
    if reference is not None:
        mean, std = next(iter(arms[reference].values()))
        ax.axvspan(mean - std, mean + std, color="grey", alpha=0.15, lw=0)
        ax.axvline(mean, color="grey", ls="--", lw=1, label=f"{reference} (± std)")
    offsets = np.linspace(-0.2, 0.2, len(group_names)) if len(group_names) > 1 else np.zeros(1)
    labelled = set()
    for row, groups in enumerate(arms.values()):
        for index, name in enumerate(group_names):
            if name in groups:
                mean, std = groups[name]
                ax.errorbar(mean, row + offsets[index], xerr=std, fmt="o", color=colours(index % 10), capsize=3,
                            markersize=5, label=None if name in labelled else name)
                labelled.add(name)
        ax.plot([float(np.mean([mean for mean, _ in groups.values()]))] * 2, [row - 0.35, row + 0.35], color="black",
                lw=2, label=None if row else "mean over groups")
    ax.set_yticks(np.arange(len(arms)), list(arms))
    ax.set_ylim(len(arms) - 0.5, -0.5)
    ax.set_xlabel(xlabel)
    ax.grid(True, axis="x", alpha=0.3)
    fig.legend(loc="outside lower center", ncol=min(4, len(group_names) + 2), fontsize=8, frameon=False)
    if title:
        ax.set_title(title)
    return _save_figure(fig, path, dpi)
