"""Charts of numbers: learning curves, bar charts of results, generator-seed comparisons of benchmark arms."""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib import colormaps
from matplotlib.figure import Figure

from .figure import _save_figure


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


def save_distribution_panels(
    panels: Mapping[str, Mapping[str, Sequence[float]]],
    path: str | os.PathLike,
    title: str | None = None,
    dpi: int = 100,
) -> Path:
    """Save empirical cumulative distributions side by side, one panel per quantity and one line per set (e.g. a
    layout statistic of the real masks and of several generated datasets): where one set's line lies right of
    another's, its values are larger at that quantile.

    Args:
        panels (`Mapping[str, Mapping[str, Sequence[float]]]`): panel title (the quantity) -> set label -> values;
            NaN values are left out. Every set label keeps one colour across panels (legend).
        path (`str` or `os.PathLike`): output PNG path.
        title (`str`, *optional*): figure title.
        dpi (`int`, *optional*, defaults to 100): resolution of the PNG.

    Returns:
        `pathlib.Path`: the written file.
    """
    if not panels:
        raise ValueError("`panels` is empty: nothing to plot.")
    empty = [name for name, sets in panels.items() if not sets]
    if empty:
        raise ValueError(f"panels without a set of values: {empty}.")
    labels = list(dict.fromkeys(label for sets in panels.values() for label in sets))
    colours = colormaps["tab10"]
    columns = min(len(panels), 4)
    rows = math.ceil(len(panels) / columns)
    fig = Figure(figsize=(3.4 * columns, 2.9 * rows + 0.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(rows, columns)).ravel()
    for ax, (name, sets) in zip(axes, panels.items()):
        for label, values in sets.items():
            values = np.sort(np.asarray(values, dtype=np.float64))
            values = values[np.isfinite(values)]
            if values.size:
                ax.step(values, np.arange(1, values.size + 1) / values.size, where="post",
                        color=colours(labels.index(label) % 10), lw=1.4, label=f"{label} (n={values.size})")
        ax.set_title(name, fontsize=9)
        ax.set_ylim(0, 1)
        ax.grid(True, alpha=0.3)
    axes[0].set_ylabel("fraction of masks at or below")
    for ax in axes[len(panels):]:
        ax.set_visible(False)
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=min(3, len(labels)), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title)
    return _save_figure(fig, path, dpi)
