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

from .overlays import as_rgb


logger = logging.getLogger(__name__)


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
    arrays = {tag: [as_rgb(image) for image in values] for tag, values in images.items()}
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
