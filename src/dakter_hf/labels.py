"""The label codec: how segmentation labels live inside the joint diffusion, and how they come back out.

DAKTer diffuses a label next to its image. A hard mask of class indices becomes a one-hot map with values in
{-b, +b}, where b (`label_scale`, the SNR balancing factor) is chosen so that image and label lose their signal at
the same rate along the shared noise schedule. The model predicts class *logits*; they become

* soft labels: per-pixel class probabilities, ``softmax(logits / temperature)``;
* the clean-label estimate a scheduler needs: the expected value of the scaled one-hot label under the predicted
  class distribution, ``b * (2 * softmax(logits) - 1)``.

Every other module (model, pipeline, training loss, generation) goes through these functions.

Also here: the class names (`id2label`) of a dataset or a pipeline, and the storage codec of soft labels in a
generated dataset (quantised to `uint8` values that sum to 255 per pixel, or `float16` / `float32`).
This module is inlined into the remote-code pipeline file: it imports neither `datasets` nor the package.
"""

import logging
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F


logger = logging.getLogger(__name__)

#: Storage types of the `soft_label` column of a generated dataset.
SOFT_LABEL_DTYPES = ("uint8", "float16", "float32")
#: Quantised soft labels of one pixel are integers summing to this value; decoding divides by it.
QUANTIZATION_LEVELS = 255
_CLASS_AXIS = -3  # soft labels are (K, H, W) for a row and (B, K, H, W) for a batch


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
    return soft_labels_to_scaled_label(torch.softmax(logits, dim=1), label_scale)


def soft_labels_to_scaled_label(soft_labels: torch.Tensor, label_scale: float) -> torch.Tensor:
    """The scaled label of per-pixel class probabilities `(B, K, H, W)`: `b * (2 * p - 1)`, the expected scaled
    one-hot label (a one-hot `p` gives exactly [`masks_to_scaled_onehot`])."""
    return label_scale * (2.0 * soft_labels - 1.0)


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


def resolve_id2label(pipe, id2label: Mapping | None = None) -> dict[int, str]:
    """The class names of a pipeline's generated labels: `id2label` if given (checked against
    `pipe.unet.config.num_classes`), else the pipeline's own [`DAKTerPipeline.id2label`] (saved in its
    `model_index.json`; `class_<i>` placeholders, with a warning, when it has none)."""
    if id2label is not None:
        return normalize_id2label(id2label, pipe.unet.config.num_classes)
    if pipe.config.get("id2label") is None:
        logger.warning("No class names stored with the pipeline: using %s. Pass `id2label` to name them.",
                       pipe.id2label)
    return pipe.id2label


# ----------------------------------------------------------------------------------------------------------------
# Soft-label storage codec (the `soft_label` column of a generated dataset)
# ----------------------------------------------------------------------------------------------------------------


def quantize_soft_labels(probs: np.ndarray | torch.Tensor, axis: int = _CLASS_AXIS) -> np.ndarray:
    """Quantise per-pixel class probabilities to `uint8` values that sum to exactly 255 per pixel.

    Largest-remainder rounding: every probability times 255 is rounded down, then the pixel's missing units (at
    most K - 1) go to the classes with the largest remainders. Decoding as `value / 255` therefore gives
    probabilities that sum to 1 per pixel and differ from the input by less than 1/255.

    Args:
        probs (`np.ndarray` or `torch.Tensor`): non-negative probabilities summing to 1 along `axis` (small deviations
            are renormalised).
        axis (`int`, *optional*, defaults to -3): the class axis (`(K, H, W)` rows and `(B, K, H, W)` batches).

    Returns:
        `np.ndarray`: `uint8` array of the input's shape.
    """
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().numpy()
    probs = np.asarray(probs, dtype=np.float64)
    if probs.ndim == 0:
        raise ValueError("`probs` must have a class axis, got a scalar.")
    if not np.all(np.isfinite(probs)) or probs.size and probs.min() < -1e-6:
        raise ValueError("`probs` must hold finite, non-negative probabilities.")
    probs = np.clip(probs, 0.0, None)
    total = probs.sum(axis=axis, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("`probs` has a pixel whose probabilities sum to 0: not a probability distribution.")
    scaled = probs / total * QUANTIZATION_LEVELS
    floor = np.floor(scaled)
    deficit = QUANTIZATION_LEVELS - floor.sum(axis=axis, keepdims=True)  # integer in [0, K - 1]
    order = np.argsort(-(scaled - floor), axis=axis, kind="stable")  # classes by decreasing remainder
    rank = np.argsort(order, axis=axis, kind="stable")  # rank of each class in that order
    return (floor + (rank < deficit)).astype(np.uint8)


def encode_soft_labels(probs: np.ndarray | torch.Tensor, dtype: str = "uint8") -> np.ndarray:
    """Encode soft labels for storage: [`quantize_soft_labels`] for `"uint8"`, a plain cast for `"float16"` and
    `"float32"`.

    Args:
        probs (`np.ndarray` or `torch.Tensor`): probabilities, `(K, H, W)` or `(B, K, H, W)`.
        dtype (`str`, *optional*, defaults to `"uint8"`): one of [`SOFT_LABEL_DTYPES`].

    Returns:
        `np.ndarray` of the requested dtype.
    """
    dtype = check_soft_label_dtype(dtype)
    if dtype == "uint8":
        return quantize_soft_labels(probs)
    if isinstance(probs, torch.Tensor):
        probs = probs.detach().cpu().float().numpy()
    return np.asarray(probs).astype(dtype)


def decode_soft_labels(value: Any, dtype: str | np.dtype | Mapping | Any | None = None) -> np.ndarray | torch.Tensor:
    """Turn stored soft labels back into `float32` probabilities that sum to 1 per pixel.

    `value` is a row `(K, H, W)` or a batch `(B, K, H, W)` of the `soft_label` column in whatever form `datasets`
    returns it: nested Python lists (no format), a NumPy array (`"numpy"`), a torch tensor (`"torch"`). `datasets`
    reads `uint8` back as `int64` and `float16` as `float32`/`float64`, so the storage type is decided as follows:

    1. if `dtype` is given, it decides: a name (`"uint8"`, `"float16"`, `"float32"`), a NumPy dtype, the dataset's
       `Features` (its `soft_label` feature is read) or the `soft_label` feature itself;
    2. otherwise, integer arrays are quantised values and floating arrays whose maximum exceeds 1 are quantised
       values read as floats (probabilities never exceed 1, while quantised values of a pixel sum to 255, so their
       maximum is at least 255 / K > 1 for K < 255); every other floating array holds probabilities.

    Quantised values are divided by 255; every result is then renormalised per pixel (this only removes the
    rounding of `float16` storage).

    Args:
        value: the stored soft labels, `(K, H, W)` or `(B, K, H, W)`.
        dtype (*optional*): the storage type hint described above.

    Returns:
        `np.ndarray` (or `torch.Tensor` for a tensor input) of `float32` probabilities with the input's shape.

    Example:

    ```py
    >>> ds = datasets.load_from_disk("outputs/generated").with_format("numpy")
    >>> probs = decode_soft_labels(ds[0]["soft_label"], dtype=ds.features)  # (K, H, W), sums to 1 per pixel
    ```
    """
    is_tensor = isinstance(value, torch.Tensor)
    array = value.detach().cpu().numpy() if is_tensor else np.asarray(value)
    if array.dtype == object:
        raise ValueError("`value` is ragged: soft labels must have one shape (K, H, W) per row.")
    if array.ndim not in (3, 4):
        raise ValueError(f"`value` must have shape (K, H, W) or (B, K, H, W), got {array.shape}.")
    if not (np.issubdtype(array.dtype, np.integer) or np.issubdtype(array.dtype, np.floating)):
        raise ValueError(f"`value` must hold numbers, got dtype {array.dtype}.")
    stored = _stored_soft_label_dtype(dtype)
    if stored is None:
        quantized = np.issubdtype(array.dtype, np.integer) or bool(array.size and array.max() > 1.0)
    else:
        quantized = stored == "uint8"
    probs = array.astype(np.float32)
    if quantized:
        probs /= QUANTIZATION_LEVELS
    total = probs.sum(axis=_CLASS_AXIS, keepdims=True)
    if np.any(total <= 0):
        raise ValueError("`value` has a pixel whose soft label sums to 0: not stored soft labels.")
    probs /= total
    return torch.from_numpy(probs) if is_tensor else probs


def check_soft_label_dtype(dtype: str) -> str:
    """`dtype` if it is one of [`SOFT_LABEL_DTYPES`], else a `ValueError` naming `soft_label_dtype`."""
    if dtype not in SOFT_LABEL_DTYPES:
        raise ValueError(f"`soft_label_dtype` must be one of {SOFT_LABEL_DTYPES}, got {dtype!r}.")
    return dtype


def _stored_soft_label_dtype(hint) -> str | None:
    """The storage dtype name named by a `decode_soft_labels` hint (see there), or None without a hint."""
    if hint is None:
        return None
    if isinstance(hint, Mapping):  # `Features` or a plain dict of features
        if "soft_label" not in hint:
            raise ValueError(f"`dtype` features have no 'soft_label' column: {list(hint)}.")
        hint = hint["soft_label"]
    if hasattr(hint, "dtype") and not isinstance(hint, (np.dtype, str)):  # Array3D / Value
        hint = hint.dtype
    elif hasattr(hint, "feature"):  # nested List / Sequence features
        return _stored_soft_label_dtype(hint.feature)
    name = np.dtype(hint).name if not isinstance(hint, str) else hint
    return check_soft_label_dtype(name)
