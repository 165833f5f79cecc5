"""Labels drawn as RGB arrays (for the app and the experiment trackers): a soft label as a colour map, labels over
their image, panels side by side, and a student's predictions next to the ground truth.

The colours are those of the figures in `dakter_hf.visualization` (the OSD code, then `tab10`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from matplotlib import colormaps

from .visualization.figure import _image_range, _palette, _to_numpy


def as_rgb(image) -> np.ndarray:
    """An `(H, W, 3)` uint8 array from a PIL image or an `(H, W)` / `(H, W, 1|3|4)` array."""
    array = np.asarray(image)
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8) if array.dtype.kind == "f" else \
            array.astype(np.uint8)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=-1)
    if array.ndim != 3 or array.shape[-1] not in (1, 3, 4):
        raise ValueError(f"An image must be (H, W) or (H, W, C) with C in 1, 3, 4; got shape {array.shape}.")
    if array.shape[-1] == 1:
        array = np.repeat(array, 3, axis=-1)
    return array[..., :3]


def _to_unit_image(image: Any) -> np.ndarray:
    """A single-channel `(H, W)`, `(1, H, W)` or `(H, W, 1)` image as floats in [0, 1]."""
    image = np.squeeze(_to_numpy(image)).astype(np.float64)
    if image.ndim != 2:
        raise ValueError(f"`image` must be single-channel (H, W), got shape {image.shape}.")
    low, high = _image_range(image)
    return np.clip((image - low) / (high - low), 0.0, 1.0)


def _check_soft_label(soft_label: Any, name: str = "soft_label") -> np.ndarray:
    soft_label = _to_numpy(soft_label).astype(np.float64)
    if soft_label.ndim != 3 or soft_label.shape[0] < 2:
        raise ValueError(f"`{name}` must be (K, H, W) class probabilities with K >= 2, got shape {soft_label.shape}.")
    return soft_label


def soft_label_to_rgb(soft_label: torch.Tensor | np.ndarray,
                      palette: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Draw one soft label as an RGB image, as the soft-label column of [`save_sample_grid`]: for K = 2 the
    probability of class 1 in the `magma` colour map, for K > 2 the probability-weighted mix of the class colours.

    Args:
        soft_label (`torch.Tensor` or `np.ndarray`): `(K, H, W)` class probabilities.
        palette (`Sequence`, *optional*): RGB class colours; defaults to [`DEFAULT_PALETTE`].

    Returns:
        `np.ndarray`: `(H, W, 3)` uint8.
    """
    soft_label = _check_soft_label(soft_label)
    if soft_label.shape[0] == 2:
        rgb = colormaps["magma"](np.clip(soft_label[1], 0.0, 1.0))[..., :3]
    else:
        rgb = np.einsum("khw,kc->hwc", soft_label, _palette(soft_label.shape[0], palette))
    return (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)


def label_overlay(image: torch.Tensor | np.ndarray, soft_label: torch.Tensor | np.ndarray, alpha: float = 0.6,
                  palette: Sequence[Sequence[float]] | None = None) -> np.ndarray:
    """Tint a greyscale image with the colours of its label: each pixel moves towards the colour mix of the
    classes other than class 0 (the background) by `alpha` times their total probability, so background stays
    the plain image and confident foreground takes its class colour. A hard mask drawn this way is its one-hot
    encoding (`np.eye(K)[mask].transpose(2, 0, 1)`).

    Args:
        image (`torch.Tensor` or `np.ndarray`): `(H, W)` (or `(1, H, W)`) image in [-1, 1], [0, 1] or [0, 255].
        soft_label (`torch.Tensor` or `np.ndarray`): `(K, H, W)` class probabilities.
        alpha (`float`, *optional*, defaults to 0.6): opacity of a certain foreground pixel's colour.
        palette (`Sequence`, *optional*): RGB class colours; defaults to [`DEFAULT_PALETTE`].

    Returns:
        `np.ndarray`: `(H, W, 3)` uint8.
    """
    if not 0.0 <= alpha <= 1.0:
        raise ValueError(f"`alpha` must be in [0, 1], got {alpha}.")
    grey = _to_unit_image(image)
    soft_label = _check_soft_label(soft_label)
    if soft_label.shape[1:] != grey.shape:
        raise ValueError(f"`soft_label` covers {soft_label.shape[1:]} pixels, the image {grey.shape}.")
    colours = _palette(soft_label.shape[0], palette)
    foreground = soft_label[1:].sum(axis=0)
    tint = np.einsum("khw,kc->hwc", soft_label[1:], colours[1:]) / np.maximum(foreground, 1e-8)[..., None]
    weight = (alpha * foreground)[..., None]
    rgb = (1.0 - weight) * grey[..., None] + weight * tint
    return (np.clip(rgb, 0.0, 1.0) * 255).round().astype(np.uint8)


def side_by_side(*panels, gap: int = 2) -> np.ndarray:
    """Join same-height images left to right with a white gap: one row of a tracker image (e.g. image | prediction
    overlay | ground-truth overlay)."""
    arrays = [as_rgb(panel) for panel in panels]
    height = arrays[0].shape[0]
    if any(a.shape[0] != height for a in arrays):
        raise ValueError(f"Panels must share their height, got {[a.shape[0] for a in arrays]}.")
    spacer = np.full((height, gap, 3), 255, dtype=np.uint8)
    parts = [arrays[0]]
    for array in arrays[1:]:
        parts += [spacer, array]
    return np.concatenate(parts, axis=1)


def segmentation_overlay_rows(pixel_values, logits, labels=None, max_rows: int = 4, ignore_index: int = 255,
                              palette=None) -> list[np.ndarray]:
    """
    Rows `image | predicted classes | ground truth` (labels drawn over the image with
    [`label_overlay`]) of a student's predictions on an evaluation batch, for the trackers.

    Args:
        pixel_values (`torch.Tensor`): `(B, 1, H, W)` model inputs (any range; drawn min-max as greyscale).
        logits (`torch.Tensor`): `(B, K, h, w)` model outputs; upsampled (bilinear) to each mask's size.
        labels (`torch.Tensor` or list of `torch.Tensor`, *optional*): `(B, H', W')` masks, or one mask per sample
            (native sizes); `ignore_index` pixels are drawn untinted. Without them the rows have two panels.
        max_rows (`int`, *optional*, defaults to 4): at most this many samples.
        ignore_index (`int`, *optional*, defaults to 255): unlabelled pixels.
        palette (*optional*): class colours (default [`~dakter_hf.visualization.DEFAULT_PALETTE`]).

    Returns:
        `list[np.ndarray]`: `(H', W'(2|3) + gaps, 3)` uint8 rows.
    """
    num_classes = logits.shape[1]
    rows = []
    for i in range(min(len(pixel_values), max_rows)):
        label = None if labels is None else torch.as_tensor(labels[i]).long().cpu()
        size = tuple(label.shape[-2:]) if label is not None else tuple(pixel_values.shape[-2:])
        image = F.interpolate(pixel_values[i:i + 1].float().cpu(), size=size, mode="bilinear", align_corners=False)
        image = image[0].mean(dim=0)
        image = ((image - image.min()) / (image.max() - image.min()).clamp_min(1e-8)).numpy()
        predicted = F.interpolate(logits[i:i + 1].float().cpu(), size=size, mode="bilinear", align_corners=False)
        predicted = F.one_hot(predicted[0].argmax(dim=0), num_classes).permute(2, 0, 1).numpy()
        panels = [image, label_overlay(image, predicted, palette=palette)]
        if label is not None:
            valid = (label != ignore_index) & (label >= 0) & (label < num_classes)
            truth = F.one_hot(torch.where(valid, label, 0), num_classes).permute(2, 0, 1) * valid
            panels.append(label_overlay(image, truth.numpy(), palette=palette))
        rows.append(side_by_side(*panels))
    return rows
