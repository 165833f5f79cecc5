"""Layout statistics of class-index masks: how much of each mask a class covers, in how many pieces, how large the
largest piece is and how ragged its outline is; and how far a generated set's distribution of each statistic lies
from a real set's.

A generator can draw the median layout right and still miss the tails (on SOS PALSAR its pairs hold oil in the
median real proportion but under-draw the large spills; BENCHMARKS.md). These statistics put numbers on such
differences without a student. Components are 4-connected regions of the class.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F


__all__ = ["LAYOUT_STATISTICS", "LayoutComparison", "compare_layouts", "connected_components", "mask_layout_statistics"]

#: Per-mask statistics of :func:`mask_layout_statistics`, in the order they are reported.
LAYOUT_STATISTICS = ("class_fraction", "num_components", "largest_component_fraction", "boundary_fraction")


def _as_mask_tensor(masks) -> torch.Tensor:
    masks = torch.as_tensor(np.array(masks))
    if masks.ndim == 2:
        masks = masks[None]
    if masks.ndim != 3:
        raise ValueError(f"masks must be (N, H, W) or (H, W) class indices, got shape {tuple(masks.shape)}")
    return masks


def _neighbour_max(labels: torch.Tensor) -> torch.Tensor:
    """Largest label among each pixel and its four neighbours (zero padding)."""
    padded = F.pad(labels, (1, 1, 1, 1))
    return torch.stack([labels, padded[:, :-2, 1:-1], padded[:, 2:, 1:-1], padded[:, 1:-1, :-2],
                        padded[:, 1:-1, 2:]]).amax(dim=0)


def connected_components(foreground) -> torch.Tensor:
    """Label the 4-connected components of binary masks.

    Every foreground pixel starts with its own label and takes the largest label of its foreground neighbours until
    nothing changes, so each component ends with one label; labels are then renumbered `1 .. n` per mask.

    Args:
        foreground: `(N, H, W)` or `(H, W)` boolean masks (a tensor or an array).

    Returns:
        `torch.Tensor`: `(N, H, W)` `int64` labels, 0 on background, `1 .. n_i` on the components of mask `i`.
    """
    foreground = _as_mask_tensor(foreground).bool()
    n, height, width = foreground.shape
    seeds = torch.arange(1, height * width + 1, dtype=torch.int32).view(1, height, width).expand(n, -1, -1)
    labels = torch.where(foreground, seeds, torch.zeros((), dtype=torch.int32))
    while True:
        grown = torch.where(foreground, _neighbour_max(labels), labels)
        if torch.equal(grown, labels):
            break
        labels = grown
    renumbered = torch.zeros_like(labels, dtype=torch.int64)
    for i in range(n):
        values = labels[i][foreground[i]]
        if values.numel():
            renumbered[i][foreground[i]] = torch.unique(values, return_inverse=True)[1] + 1
    return renumbered


def mask_layout_statistics(masks, class_index: int = 1) -> dict[str, np.ndarray]:
    """Per-mask layout statistics of one class.

    Args:
        masks: `(N, H, W)` or `(H, W)` class-index masks (e.g. real masks, or the argmax of generated soft labels).
        class_index (`int`, *optional*, defaults to 1): the class described (1 = oil in the SOS and OSD datasets).

    Returns:
        `dict[str, np.ndarray]`: one `(N,)` array per name of :data:`LAYOUT_STATISTICS`:
        `class_fraction` (share of the mask's pixels in the class), `num_components` (its 4-connected pieces),
        `largest_component_fraction` (share of the mask's pixels in the largest piece, 0 without the class) and
        `boundary_fraction` (share of the class's pixels with a 4-neighbour outside it, the image border not
        counted; NaN where the class is absent).
    """
    masks = _as_mask_tensor(masks)
    foreground = masks == class_index
    n, height, width = foreground.shape
    area = foreground.sum(dim=(1, 2))
    components = connected_components(foreground)
    num_components = components.amax(dim=(1, 2)) if n else torch.zeros(0, dtype=torch.int64)
    largest = torch.zeros(n, dtype=torch.int64)
    for i in range(n):
        if num_components[i]:
            largest[i] = torch.bincount(components[i].flatten())[1:].max()
    # A pixel is on the boundary when a neighbour inside the image is outside the class (pad with the class itself).
    padded = F.pad(foreground[:, None].float(), (1, 1, 1, 1), mode="replicate")[:, 0].bool()
    interior = padded[:, :-2, 1:-1] & padded[:, 2:, 1:-1] & padded[:, 1:-1, :-2] & padded[:, 1:-1, 2:]
    boundary = (foreground & ~interior).sum(dim=(1, 2))
    pixels = float(height * width)
    boundary_fraction = torch.where(area > 0, boundary.double() / area.clamp_min(1).double(),
                                    torch.tensor(float("nan"), dtype=torch.float64))
    return {
        "class_fraction": (area.double() / pixels).numpy(),
        "num_components": num_components.numpy(),
        "largest_component_fraction": (largest.double() / pixels).numpy(),
        "boundary_fraction": boundary_fraction.numpy(),
    }


@dataclass
class LayoutComparison:
    """One statistic of a generated set beside a real set's.

    Attributes:
        statistic (`str`): the name in :data:`LAYOUT_STATISTICS`.
        real_quartiles (`tuple[float, float, float]`): 25th, 50th and 75th percentiles over the real masks.
        generated_quartiles (`tuple[float, float, float]`): the same over the generated masks.
        real_mean (`float`), generated_mean (`float`): the means.
        wasserstein (`float`): the 1-Wasserstein distance between the two empirical distributions (the mean absolute
            difference of their quantile functions), in the statistic's units.
    """

    statistic: str
    real_quartiles: tuple[float, float, float]
    generated_quartiles: tuple[float, float, float]
    real_mean: float
    generated_mean: float
    wasserstein: float

    def to_dict(self) -> dict:
        return {"statistic": self.statistic, "real_quartiles": list(self.real_quartiles),
                "generated_quartiles": list(self.generated_quartiles), "real_mean": self.real_mean,
                "generated_mean": self.generated_mean, "wasserstein": self.wasserstein}


def _wasserstein_1d(a: np.ndarray, b: np.ndarray, num_quantiles: int = 1001) -> float:
    levels = np.linspace(0.0, 1.0, num_quantiles)
    return float(np.mean(np.abs(np.quantile(a, levels) - np.quantile(b, levels))))


def compare_layouts(real: dict[str, np.ndarray], generated: dict[str, np.ndarray]) -> list[LayoutComparison]:
    """Compare the statistics of :func:`mask_layout_statistics` of two sets, one :class:`LayoutComparison` per
    statistic (NaN entries, masks without the class, left out of `boundary_fraction`).

    Raises:
        `ValueError`: a statistic is missing from either set, or has no value in one of them.
    """
    comparisons = []
    for name in LAYOUT_STATISTICS:
        if name not in real or name not in generated:
            raise ValueError(f"layout statistic {name!r} is missing; compute both sets with mask_layout_statistics")
        a = np.asarray(real[name], dtype=np.float64)
        b = np.asarray(generated[name], dtype=np.float64)
        a, b = a[~np.isnan(a)], b[~np.isnan(b)]
        if not a.size or not b.size:
            side = "real" if not a.size else "generated"
            raise ValueError(f"layout statistic {name!r} has no value in the {side} set (no mask holds the class)")
        comparisons.append(LayoutComparison(
            statistic=name,
            real_quartiles=tuple(float(q) for q in np.quantile(a, (0.25, 0.5, 0.75))),
            generated_quartiles=tuple(float(q) for q in np.quantile(b, (0.25, 0.5, 0.75))),
            real_mean=float(a.mean()), generated_mean=float(b.mean()), wasserstein=_wasserstein_1d(a, b)))
    return comparisons
