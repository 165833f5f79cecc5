"""Images in experiment trackers: the generator's validation grids and the students' prediction overlays reach
every tracker an `accelerate.Accelerator` was set up with (`--report_to tensorboard|wandb|trackio|all`), not only
PNG files.

Accelerate logs images for TensorBoard and Weights & Biases (`tracker.log_images`, also for Aim and ClearML);
trackio takes `trackio.Image` values through `tracker.log`. Other trackers get no images (their scalars are
logged as before).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence

import numpy as np


logger = logging.getLogger(__name__)


def _as_rgb(image) -> np.ndarray:
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


def _stack(images: Sequence[np.ndarray]) -> np.ndarray:
    """`(N, H, W, 3)` from same-channel images, the smaller ones padded with white at the bottom / right."""
    height = max(image.shape[0] for image in images)
    width = max(image.shape[1] for image in images)
    stacked = np.full((len(images), height, width, 3), 255, dtype=np.uint8)
    for i, image in enumerate(images):
        stacked[i, :image.shape[0], :image.shape[1]] = image
    return stacked


def log_images(accelerator, images: Mapping[str, Sequence], step: int,
               captions: Sequence[str] | None = None) -> list[str]:
    """
    Log images to every tracker of `accelerator` that takes images. Call it on every process: only the main process
    logs (as `accelerator.log`).

    Args:
        accelerator (`accelerate.Accelerator`): with its trackers initialised (`init_trackers`).
        images (`Mapping[str, Sequence]`): tag -> images (PIL images, or `(H, W[, C])` uint8 / [0, 1] float arrays);
            TensorBoard shows the images of one tag as one grid (smaller ones padded with white).
        step (`int`): the training step.
        captions (`Sequence[str]`, *optional*): one caption per image (wandb and trackio show them).

    Returns:
        `list[str]`: the names of the trackers the images were logged to.
    """
    if not accelerator.is_main_process or not images:
        return []
    arrays = {tag: [_as_rgb(image) for image in values] for tag, values in images.items()}
    logged = []
    for tracker in accelerator.trackers:
        name = getattr(tracker, "name", type(tracker).__name__)
        try:
            if name == "tensorboard":
                tracker.log_images({tag: _stack(values) for tag, values in arrays.items()}, step=step,
                                   dataformats="NHWC")
            elif name == "wandb":
                import wandb

                tracker.log({tag: [wandb.Image(v, caption=(captions or [None] * len(values))[i])
                                   for i, v in enumerate(values)] for tag, values in arrays.items()}, step=step)
            elif name == "trackio":
                import trackio

                tracker.log({f"{tag}/{i}": trackio.Image(v, caption=(captions or [None] * len(values))[i])
                             for tag, values in arrays.items() for i, v in enumerate(values)}, step=step)
            elif hasattr(tracker, "log_images"):
                tracker.log_images(arrays, step=step)
            else:
                continue
        except Exception as error:  # a tracker that cannot take images must not stop the training
            logger.warning("Could not log images to the %s tracker: %s", name, error)
            continue
        logged.append(name)
    return logged


def side_by_side(*panels, gap: int = 2) -> np.ndarray:
    """Join same-height images left to right with a white gap: one row of a tracker image (e.g. image | prediction
    overlay | ground-truth overlay)."""
    arrays = [_as_rgb(panel) for panel in panels]
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
    [`~dakter_hf.visualization.label_overlay`]) of a student's predictions on an evaluation batch, for the trackers.

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
    import torch
    import torch.nn.functional as F

    from .visualization import label_overlay

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
