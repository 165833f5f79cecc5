"""Input conversion of the conditional DAKTer pipelines: masks and SAR images given in any common form -> tensors.

Every check raises a `ValueError` that names the argument (`masks` or `images`), the item and what was expected.

* Masks: PIL masks of class indices, `(H, W)` / `(B, H, W)` integer arrays or tensors of class indices, or
  `(K, H, W)` / `(B, K, H, W)` float arrays or tensors of per-class probabilities, or a list of such items, or
  paths of mask files. They become `(B, K, h, w)` probabilities at the model's sample size.
* Images: PIL images, `(H, W)` / `(H, W, C)` / `(B, H, W, C)` NumPy arrays, `(H, W)` / `(C, H, W)` /
  `(B, C, H, W)` tensors (uint8 in [0, 255] or floats in [0, 1]), a list of such items, or paths of image files.
  They become `(B, C, h, w)` tensors in [-1, 1] at the model's sample size, and their original sizes are kept.
"""

import os

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F


PROBABILITY_TOLERANCE = 1e-3


def _as_list(value, name: str) -> list:
    """The items of `value` (a list or tuple, or one item), refusing empty input."""
    items = list(value) if isinstance(value, (list, tuple)) else [value]
    if not items:
        raise ValueError(f"`{name}` is empty: give at least one item.")
    return items


def _open_file(path, name: str, index: int) -> PIL.Image.Image:
    """Open and decode an image file, or raise a `ValueError` naming the argument and the file."""
    try:
        with PIL.Image.open(path) as image:
            image.load()
            return image.copy()
    except (OSError, SyntaxError, ValueError) as error:
        raise ValueError(f"`{name}`[{index}]: cannot read the image file {str(path)!r} ({error}).") from error


def _resize(tensor: torch.Tensor, size: tuple[int, int], mode: str) -> torch.Tensor:
    """Resize `(B, C, H, W)` to `size`; bilinear resizing is anti-aliased (a convex average, so it keeps sums)."""
    if tuple(tensor.shape[-2:]) == tuple(size):
        return tensor
    if mode == "nearest":
        return F.interpolate(tensor, size=size, mode="nearest-exact")
    return F.interpolate(tensor, size=size, mode="bilinear", align_corners=False, antialias=True)


def resize_probabilities(probabilities: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Resize `(B, K, H, W)` per-pixel probabilities to `size`, keeping them probabilities (sums of 1)."""
    return _resize(probabilities.float(), tuple(size), "bilinear")


# ----------------------------------------------------------------------------------------------------------------------
# Masks
# ----------------------------------------------------------------------------------------------------------------------


def _mask_item_to_tensor(item, index: int) -> torch.Tensor:
    """One item of `masks` as a tensor: integer `(B, H, W)` class indices or float `(B, K, H, W)` probabilities."""
    if isinstance(item, (str, os.PathLike)):
        item = _open_file(item, "masks", index)
    if isinstance(item, PIL.Image.Image):
        if item.mode not in ("L", "P", "1", "I", "I;16"):
            raise ValueError(
                f"`masks`[{index}]: a PIL mask must be a single-channel image of class indices (mode 'L', 'P', "
                f"'1' or 'I'), got mode {item.mode!r}."
            )
        item = np.array(item).astype(np.int64)
    if isinstance(item, np.ndarray):
        if item.dtype == object:
            raise ValueError(f"`masks`[{index}]: cannot read an array of dtype object.")
        item = torch.from_numpy(np.ascontiguousarray(item))
    if not isinstance(item, torch.Tensor):
        raise ValueError(
            f"`masks`[{index}]: expected a PIL mask, a NumPy array, a torch tensor or a file path, got "
            f"{type(item).__name__}."
        )
    if item.dtype.is_floating_point:
        if item.dim() == 3:
            item = item[None]
        if item.dim() != 4:
            raise ValueError(
                f"`masks`[{index}]: float masks are per-class probabilities of shape (K, H, W) or (B, K, H, W), got "
                f"shape {tuple(item.shape)} (class indices need an integer dtype)."
            )
        return item.float()
    if item.dtype == torch.bool:
        item = item.long()
    if item.dim() == 2:
        item = item[None]
    if item.dim() != 3:
        raise ValueError(
            f"`masks`[{index}]: integer masks are class indices of shape (H, W) or (B, H, W), got shape "
            f"{tuple(item.shape)}."
        )
    return item.long()


def prepare_masks(masks, num_classes: int, size: tuple[int, int]) -> torch.Tensor:
    """
    Masks in any supported form (see the module docstring) as `(B, K, h, w)` per-class probabilities at `size`.

    Class-index masks are resized with nearest-neighbour sampling and become one-hot; probability masks are resized
    with anti-aliased bilinear interpolation.

    Raises:
        `ValueError`: empty input, class ids outside `[0, num_classes)`, probabilities that are negative or do not
            sum to 1 over the classes, a wrong number of classes (channels), an unreadable file.
    """
    batches = []
    for index, item in enumerate(_as_list(masks, "masks")):
        tensor = _mask_item_to_tensor(item, index)
        if tensor.shape[0] == 0 or tensor.shape[-1] == 0 or tensor.shape[-2] == 0:
            raise ValueError(f"`masks`[{index}] is empty (shape {tuple(tensor.shape)}).")
        if tensor.dtype.is_floating_point:
            if tensor.shape[1] != num_classes:
                raise ValueError(
                    f"`masks`[{index}]: probability masks need one channel per class ({num_classes}), got "
                    f"{tensor.shape[1]} channels (shape {tuple(tensor.shape)})."
                )
            if not torch.isfinite(tensor).all() or tensor.min() < -PROBABILITY_TOLERANCE:
                raise ValueError(f"`masks`[{index}]: probabilities must be finite and >= 0.")
            error = (tensor.sum(dim=1) - 1).abs().max()
            if error > PROBABILITY_TOLERANCE:
                raise ValueError(
                    f"`masks`[{index}]: probabilities must sum to 1 over the {num_classes} classes at every pixel; "
                    f"the largest deviation is {float(error):.4g}."
                )
            batches.append(resize_probabilities(tensor.clamp(min=0), size))
        else:
            low, high = int(tensor.min()), int(tensor.max())
            if low < 0 or high >= num_classes:
                raise ValueError(
                    f"`masks`[{index}]: class ids must lie in [0, {num_classes}) (the model's num_classes), got "
                    f"values in [{low}, {high}]."
                )
            resized = _resize(tensor[:, None].float(), tuple(size), "nearest")[:, 0].long()
            batches.append(F.one_hot(resized, num_classes).permute(0, 3, 1, 2).float())
    return torch.cat(batches)


# ----------------------------------------------------------------------------------------------------------------------
# Images
# ----------------------------------------------------------------------------------------------------------------------


def _image_item_to_tensor(item, index: int, channels: int) -> torch.Tensor:
    """One item of `images` as a `(B, C, H, W)` float tensor in [0, 1]."""
    if isinstance(item, (str, os.PathLike)):
        item = _open_file(item, "images", index)
    if isinstance(item, PIL.Image.Image):
        if channels not in (1, 3):
            raise ValueError(f"`images`[{index}]: PIL images can feed a 1- or 3-channel model, not {channels}.")
        item = np.array(item.convert("L" if channels == 1 else "RGB"))
    if isinstance(item, np.ndarray):
        if item.dtype == object:
            raise ValueError(f"`images`[{index}]: cannot read an array of dtype object.")
        array = item
        if array.ndim == 2:
            array = array[:, :, None]
        if array.ndim == 3:
            array = array[None]
        if array.ndim != 4:
            raise ValueError(
                f"`images`[{index}]: NumPy images must be (H, W), (H, W, C) or (B, H, W, C), got shape {item.shape}."
            )
        item = torch.from_numpy(np.ascontiguousarray(array)).permute(0, 3, 1, 2)
    elif isinstance(item, torch.Tensor):
        original = tuple(item.shape)
        if item.dim() == 2:
            item = item[None]
        if item.dim() == 3:
            item = item[None]
        if item.dim() != 4:
            raise ValueError(
                f"`images`[{index}]: tensor images must be (H, W), (C, H, W) or (B, C, H, W), got shape {original}."
            )
    else:
        raise ValueError(
            f"`images`[{index}]: expected a PIL image, a NumPy array, a torch tensor or a file path, got "
            f"{type(item).__name__}."
        )
    if item.shape[1] != channels:
        raise ValueError(
            f"`images`[{index}]: the model takes {channels}-channel images, got {item.shape[1]} channels (shape "
            f"{tuple(item.shape)}; NumPy arrays are channels-last, tensors channels-first)."
        )
    if item.shape[0] == 0 or item.shape[-1] == 0 or item.shape[-2] == 0:
        raise ValueError(f"`images`[{index}] is empty (shape {tuple(item.shape)}).")
    if item.dtype == torch.uint8:
        return item.float() / 255.0
    if not item.dtype.is_floating_point:
        raise ValueError(f"`images`[{index}]: expected uint8 or float pixels, got dtype {item.dtype}.")
    item = item.float()
    if not torch.isfinite(item).all() or item.min() < 0 or item.max() > 1:
        raise ValueError(
            f"`images`[{index}]: float pixels must lie in [0, 1], got values in [{float(item.min()):.4g}, "
            f"{float(item.max()):.4g}]."
        )
    return item


def prepare_images(images, channels: int, size: tuple[int, int]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
    """
    SAR images in any supported form (see the module docstring) as `(B, C, h, w)` tensors in [-1, 1] at `size`
    (anti-aliased bilinear resizing), with each image's original `(height, width)`.

    Raises:
        `ValueError`: empty input, a wrong number of channels, pixel values outside the expected range, an
            unreadable file.
    """
    tensors, sizes = [], []
    for index, item in enumerate(_as_list(images, "images")):
        tensor = _image_item_to_tensor(item, index, channels)
        sizes += [tuple(tensor.shape[-2:])] * tensor.shape[0]
        tensors.append(_resize(tensor, tuple(size), "bilinear").clamp(0, 1) * 2 - 1)
    return torch.cat(tensors), sizes
