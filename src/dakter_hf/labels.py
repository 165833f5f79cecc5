"""The label codec: how segmentation labels live inside the joint diffusion, and how they come back out.

DAKTer diffuses a label next to its image. A hard mask of class indices becomes a one-hot map with values in
{-b, +b}, where b (`label_scale`, the SNR balancing factor) is chosen so that image and label lose their signal at
the same rate along the shared noise schedule. The model predicts class *logits*; they become

* soft labels: per-pixel class probabilities, ``softmax(logits / temperature)``;
* the clean-label estimate a scheduler needs: the expected value of the scaled one-hot label under the predicted
  class distribution, ``b * (2 * softmax(logits) - 1)``.

Every other module (model, pipeline, training loss, generation) goes through these functions.
"""

from collections.abc import Iterable, Mapping

import torch
import torch.nn.functional as F


def masks_to_scaled_onehot(masks: torch.Tensor, num_classes: int, label_scale: float) -> torch.Tensor:
    """Turn hard masks into the scaled one-hot labels the joint diffusion denoises.

    Args:
        masks (`torch.Tensor`): integer class indices of shape `(B, H, W)`, values in `[0, num_classes)`.
        num_classes (`int`): number of classes K.
        label_scale (`float`): the balancing factor b.

    Returns:
        `torch.Tensor`: float tensor of shape `(B, K, H, W)` with `+b` at the true class and `-b` elsewhere.
    """
    if masks.dim() != 3:
        raise ValueError(f"`masks` must have shape (B, H, W), got {tuple(masks.shape)}.")
    if masks.dtype.is_floating_point:
        raise ValueError(f"`masks` must hold integer class indices, got dtype {masks.dtype}.")
    if masks.numel() and (int(masks.min()) < 0 or int(masks.max()) >= num_classes):
        raise ValueError(
            f"`masks` values must lie in [0, {num_classes}), got range [{int(masks.min())}, {int(masks.max())}]."
        )
    onehot = F.one_hot(masks.long(), num_classes).permute(0, 3, 1, 2).float()
    return label_scale * (2.0 * onehot - 1.0)


def logits_to_soft_labels(logits: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Soft labels (per-pixel class probabilities) from label logits: `softmax(logits / temperature)` over dim 1."""
    if temperature <= 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    return torch.softmax(logits.float() / temperature, dim=1)


def logits_to_clean_label(logits: torch.Tensor, label_scale: float) -> torch.Tensor:
    """The clean scaled label a scheduler steps towards: `E[b * (2 * onehot - 1)]` under `softmax(logits)`."""
    return label_scale * (2.0 * torch.softmax(logits, dim=1) - 1.0)


def estimate_balancing_factor(images) -> float:
    """Estimate the SNR balancing factor b from training images.

    With images normalised to [-1, 1] and labels one-hot in {-1, +1} (so `E[y^2] = 1`), scaling the label by
    `b = sqrt(E[x^2] / E[y^2])`, the RMS of the images, gives image and label the same signal-to-noise ratio at
    every timestep of a shared noise schedule.

    Args:
        images: a tensor of images normalised to [-1, 1] (any shape), or an iterable of such batches; a batch may
            also be a mapping holding the images under `"pixel_values"` or `"image"` (as produced by a
            `DataLoader`).

    Returns:
        `float`: the estimated balancing factor b.
    """
    batches = [images] if isinstance(images, torch.Tensor) else images
    if not isinstance(batches, Iterable):
        raise TypeError(f"`images` must be a tensor or an iterable of batches, got {type(images).__name__}.")
    sum_sq = 0.0
    count = 0
    for batch in batches:
        if isinstance(batch, Mapping):
            key = next((k for k in ("pixel_values", "image") if k in batch), None)
            if key is None:
                raise ValueError(f"A batch mapping must hold 'pixel_values' or 'image', got keys {list(batch)}.")
            batch = batch[key]
        batch = torch.as_tensor(batch, dtype=torch.float64)
        if batch.numel() == 0:
            continue
        low, high = float(batch.min()), float(batch.max())
        if low < -1.0 - 1e-4 or high > 1.0 + 1e-4:
            raise ValueError(
                f"Images must be normalised to [-1, 1] before estimating the balancing factor; got values in "
                f"[{low:.3f}, {high:.3f}]."
            )
        sum_sq += float((batch**2).sum())
        count += batch.numel()
    if count == 0:
        raise ValueError("Cannot estimate the balancing factor from no images.")
    factor = (sum_sq / count) ** 0.5
    if factor == 0.0:
        raise ValueError("All images are zero: the balancing factor would be 0, which erases the label.")
    return factor


def default_id2label(num_classes: int) -> dict[int, str]:
    """Placeholder class names `{0: "class_0", ..., K-1: "class_{K-1}"}`, used when no names are known."""
    return {i: f"class_{i}" for i in range(num_classes)}


def normalize_id2label(
    id2label: Mapping, num_classes: int | None = None, source: str = "id2label"
) -> dict[int, str]:
    """Check and normalise class names to `{int: str}` sorted by index (JSON turns integer keys into strings).

    Args:
        id2label (`Mapping`): class index (an `int` or a string holding one) -> class name.
        num_classes (`int`, *optional*): the number of classes the names must cover.
        source (`str`, *optional*): how error messages name the mapping.

    Returns:
        `dict[int, str]`: the names, keys `0..K-1` in order.

    Raises:
        `ValueError`: if the keys are not `0..K-1`, or do not number `num_classes`.
    """
    try:
        out = {int(k): str(v) for k, v in id2label.items()}
    except (AttributeError, TypeError, ValueError) as error:
        raise ValueError(f"{source} must map class indices to names, got {id2label!r}.") from error
    if sorted(out) != list(range(len(out))):
        raise ValueError(f"{source} keys must be 0..K-1, got {sorted(out)}.")
    if num_classes is not None and len(out) != num_classes:
        raise ValueError(f"{source} names {len(out)} classes but the unet has num_classes={num_classes}.")
    return dict(sorted(out.items()))
