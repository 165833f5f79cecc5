"""Layout variety for mask-conditioned datasets: random perturbations of real masks before images are drawn for them.

Drawing new images for the real masks only (FreeMask-style) repeats the real layouts. Perturbing each mask first --
growing or shrinking its regions by a few pixels, moving them, or adding the regions of another mask of the set --
gives layouts the real pairs do not have, while each stays close to a real one (the idea MORP-Synth, arXiv 2512.02290,
reports for SAR oil spills). One perturbation per row, drawn from the row's seed, so a rerun or a resumed run draws the
same layouts; what was applied is a short string ([`apply_mask_perturbation`] reads it back):

| string | effect |
|---|---|
| `dilate:r` | every non-background class grows by `r` pixels (a disk), into background pixels only |
| `erode:r` | every non-background class shrinks by `r` pixels; the freed pixels become background |
| `shift:dy,dx` | the whole mask moves by `dy` rows and `dx` columns; uncovered pixels are background (no wrap) |
| `compose:name` | the non-background pixels of mask `name` (another mask of the set) fill this one's background |

Background is class 0; every other class is a region class, so the class ids of a K-class mask stay in `[0, K)`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import PIL.Image


__all__ = ["MASK_PERTURBATIONS", "MaskPerturber", "apply_mask_perturbation"]

#: The kinds of layout perturbation, in the order they are drawn from.
MASK_PERTURBATIONS = ("dilate", "erode", "shift", "compose")
#: Dilation / erosion radii are drawn uniformly from 1..MAX_RADIUS pixels (at the resolution the masks are drawn at).
MAX_RADIUS = 3
#: Shifts are drawn uniformly from -m..m pixels per axis, m = MAX_SHIFT_FRACTION x the side (not both zero).
MAX_SHIFT_FRACTION = 0.25
_TAG = 0x6C61796F  # "layo": the perturbations' random stream, apart from the sampling noise and the flips


def _disk_offsets(radius: int) -> list[tuple[int, int]]:
    return [(dy, dx) for dy in range(-radius, radius + 1) for dx in range(-radius, radius + 1)
            if dy * dy + dx * dx <= radius * radius]


def _morphology(region: np.ndarray, radius: int, grow: bool) -> np.ndarray:
    """Binary dilation (`grow`) or erosion of a boolean `(H, W)` array by a disk of `radius` pixels. Erosion treats
    the image border as part of the region (a spill crossing the frame does not shrink from the frame)."""
    if radius == 0:
        return region.copy()
    height, width = region.shape
    padded = np.pad(region, radius, mode="constant" if grow else "edge")
    out = np.zeros_like(region) if grow else np.ones_like(region)
    for dy, dx in _disk_offsets(radius):
        window = padded[radius + dy:radius + dy + height, radius + dx:radius + dx + width]
        out = out | window if grow else out & window
    return out


def _shift(mask: np.ndarray, dy: int, dx: int) -> np.ndarray:
    height, width = mask.shape
    out = np.zeros_like(mask)
    if abs(dy) < height and abs(dx) < width:
        out[max(dy, 0):height + min(dy, 0), max(dx, 0):width + min(dx, 0)] = \
            mask[max(-dy, 0):height - max(dy, 0), max(-dx, 0):width - max(dx, 0)]
    return out


def _resized(mask: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    if mask.shape == shape:
        return mask
    image = PIL.Image.fromarray(mask.astype(np.uint8)).resize(shape[::-1], PIL.Image.NEAREST)
    return np.asarray(image).astype(mask.dtype)


def apply_mask_perturbation(mask: np.ndarray, perturbation: str, other: np.ndarray | None = None) -> np.ndarray:
    """Apply one perturbation string (see the module docstring) to an `(H, W)` class-index mask; `other` is the mask
    a `compose:...` string adds (resized to `mask`'s size by nearest neighbour if it differs). Returns a new array of
    the same shape and dtype whose values are among `mask`'s and `other`'s."""
    mask = np.asarray(mask)
    kind, _, argument = perturbation.partition(":")
    if kind in ("dilate", "erode") and argument.isdigit():
        radius, out = int(argument), mask.copy()
        for value in np.unique(mask[mask != 0]):  # ascending ids: when two classes grow into a pixel, the lower wins
            region = mask == value
            if kind == "dilate":
                out[_morphology(region, radius, grow=True) & (out == 0)] = value
            else:
                out[region & ~_morphology(region, radius, grow=False)] = 0
        return out
    if kind == "shift":
        try:
            dy, dx = (int(v) for v in argument.split(","))
        except ValueError:
            raise ValueError(f"Unknown mask perturbation {perturbation!r}: a shift is 'shift:dy,dx'.") from None
        return _shift(mask, dy, dx)
    if kind == "compose":
        if other is None:
            raise ValueError(f"Mask perturbation {perturbation!r} needs the `other` mask it adds.")
        other = _resized(np.asarray(other), mask.shape)
        return np.where(mask == 0, other, mask).astype(mask.dtype)
    raise ValueError(f"Unknown mask perturbation {perturbation!r}; expected 'dilate:r', 'erode:r', 'shift:dy,dx' or "
                     "'compose:name'.")


class MaskPerturber:
    """Draws and applies one random layout perturbation per row of a mask-conditioned dataset.

    Args:
        load_mask (`Callable[[int], np.ndarray]`): the `(H, W)` class-index mask of a source row (for `compose`).
        names (`Sequence[str]`): the names of the source rows (recorded by `compose`); their number is the number of
            masks.
        kinds (`Sequence[str]`, *optional*): the kinds drawn from, uniformly (default: all of [`MASK_PERTURBATIONS`]).

    Calling it with `(mask, source_index, row_seed)` returns the perturbed mask and the string of what was applied.
    Erosion never empties a mask that has regions: its radius is reduced until some region pixels remain, and the
    string records the radius applied. `compose` adds a mask other than the row's own.
    """

    def __init__(self, load_mask: Callable[[int], np.ndarray], names: Sequence[str],
                 kinds: Sequence[str] = MASK_PERTURBATIONS):
        kinds = tuple(kinds)
        unknown = [kind for kind in kinds if kind not in MASK_PERTURBATIONS]
        if not kinds or unknown:
            raise ValueError(f"`perturb_masks`: unknown or no perturbation kinds {unknown or list(kinds)}; choose "
                             f"among {list(MASK_PERTURBATIONS)}.")
        if "compose" in kinds and len(names) < 2:
            raise ValueError("`perturb_masks`: 'compose' adds the regions of another mask of the set, but the set has "
                             f"{len(names)} mask; leave 'compose' out.")
        self.load_mask, self.names, self.kinds = load_mask, list(names), kinds

    def settings(self) -> dict:
        """What the perturbations depend on (recorded in a run's manifest and in the dataset card)."""
        return {"kinds": list(self.kinds), "max_radius": MAX_RADIUS, "max_shift_fraction": MAX_SHIFT_FRACTION}

    def __call__(self, mask: np.ndarray, source_index: int, row_seed: int) -> tuple[np.ndarray, str]:
        mask = np.asarray(mask)
        rng = np.random.default_rng([int(row_seed) & 0xFFFFFFFFFFFFFFFF, _TAG])
        kind = self.kinds[int(rng.integers(len(self.kinds)))]
        if kind in ("dilate", "erode"):
            radius = int(rng.integers(1, MAX_RADIUS + 1))
            perturbed = apply_mask_perturbation(mask, f"{kind}:{radius}")
            while kind == "erode" and radius > 0 and mask.any() and not perturbed.any():
                radius -= 1
                perturbed = apply_mask_perturbation(mask, f"erode:{radius}")
            return perturbed, f"{kind}:{radius}"
        if kind == "shift":
            limits = [max(1, int(round(MAX_SHIFT_FRACTION * side))) for side in mask.shape]
            # uniform over the (2 m_y + 1)(2 m_x + 1) - 1 shifts other than (0, 0)
            index = int(rng.integers((2 * limits[0] + 1) * (2 * limits[1] + 1) - 1))
            index += index >= limits[0] * (2 * limits[1] + 1) + limits[1]  # skip the centre
            dy, dx = index // (2 * limits[1] + 1) - limits[0], index % (2 * limits[1] + 1) - limits[1]
            perturbation = f"shift:{dy},{dx}"
            return apply_mask_perturbation(mask, perturbation), perturbation
        other = int(rng.integers(len(self.names) - 1))
        other += other >= source_index  # any mask but the row's own
        perturbation = f"compose:{self.names[other]}"
        return apply_mask_perturbation(mask, perturbation, np.asarray(self.load_mask(other))), perturbation
