"""Transforms shared by diffusion training, student training and distillation.

Conventions:

- images are resized with anti-aliased bilinear interpolation (PIL ``BILINEAR``, whose support widens on
  downscaling) and normalised to ``float32`` in ``[-1, 1]`` with shape ``(1, H, W)``: ``x / 127.5 - 1``;
- masks are resized with ``NEAREST`` (class indices are never blended) and returned as ``int64`` ``(H, W)``; on
  request, also as area-averaged class fractions ``(K, H, W)`` that keep the boundary uncertainty of a downscaled
  mask (:func:`mask_to_class_fractions`);
- augmentation draws one of the 8 symmetries of the square (90° rotations × horizontal flip; only 180°
  rotations for non-square resolutions) per sample and applies it identically to image and mask.

Typical use with 🤗 Datasets::

    ds = load_dataset_by_name("sos", data_dir, sensor="palsar")
    train = ds.with_transform(build_transform(64, augment=True))
    loader = torch.utils.data.DataLoader(train, batch_size=16, shuffle=True, collate_fn=collate_fn)
"""

from typing import Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import PIL.Image
import torch


#: An image size: one ``int`` (square) or ``(height, width)``.
Resolution = Union[int, Tuple[int, int]]


def as_hw(size: Resolution, name: str = "size") -> Tuple[int, int]:
    """Turn an ``int`` or ``(height, width)`` into a validated ``(height, width)`` tuple."""
    if isinstance(size, (int, np.integer)):
        hw = (int(size), int(size))
    else:
        hw = tuple(int(s) for s in size)
        if len(hw) != 2:
            raise ValueError(f"{name} must be an int or (height, width), got {size!r}")
    if min(hw) <= 0:
        raise ValueError(f"{name} must be positive, got {size!r}")
    return hw


def _resize(image: PIL.Image.Image, resolution: Optional[Resolution], resample: int) -> PIL.Image.Image:
    if resolution is None:
        return image
    height, width = as_hw(resolution, "resolution")
    if image.size == (width, height):
        return image
    return image.resize((width, height), resample=resample)


def resize_image(image: PIL.Image.Image, resolution: Optional[Resolution]) -> PIL.Image.Image:
    """Resize a whole image (no crop) with anti-aliased bilinear interpolation, converting it to ``"L"``.

    Args:
        image (`PIL.Image.Image`): input image.
        resolution (`int` or `(height, width)`, *optional*): target size; ``None`` keeps the size.

    Returns:
        `PIL.Image.Image`: ``"L"`` image of the target size (the input itself if nothing changes).
    """
    if image.mode != "L":
        image = image.convert("L")
    return _resize(image, resolution, PIL.Image.BILINEAR)


def resize_mask(mask: PIL.Image.Image, resolution: Optional[Resolution]) -> PIL.Image.Image:
    """Resize a class-index mask with nearest-neighbour interpolation.

    Args:
        mask (`PIL.Image.Image`): ``"L"`` (or ``"P"``) mask of class indices.
        resolution (`int` or `(height, width)`, *optional*): target size; ``None`` keeps the size.

    Returns:
        `PIL.Image.Image`: the resized mask.
    """
    return _resize(mask, resolution, PIL.Image.NEAREST)


def mask_to_class_fractions(
    mask: PIL.Image.Image, num_classes: int, resolution: Optional[Resolution] = None
) -> torch.Tensor:
    """Per-class area fractions of a class-index mask resized to `resolution`: ``(K, H, W)`` ``float32``.

    Each class's indicator image is area-averaged (PIL ``BOX``: every output pixel is the mean over the input pixels
    it covers), so a pixel on a boundary keeps the share of each class instead of the one class
    :func:`resize_mask` picks; the fractions sum to 1 per pixel. At the mask's own size it is the one-hot mask.

    Args:
        mask (`PIL.Image.Image`): ``"L"`` (or ``"P"``) mask of class indices ``0 .. K - 1``.
        num_classes (`int`): number of classes K.
        resolution (`int` or `(height, width)`, *optional*): target size; ``None`` keeps the size.

    Raises:
        `ValueError`: if the mask holds a class index outside ``0 .. K - 1``.
    """
    array = np.asarray(mask)
    if array.size and (array.min() < 0 or array.max() >= num_classes):
        raise ValueError(f"mask values must be class indices 0..{num_classes - 1}, got values up to {array.max()}")
    planes = []
    for k in range(num_classes):
        indicator = PIL.Image.fromarray((array == k).astype(np.float32), mode="F")
        planes.append(np.asarray(_resize(indicator, resolution, PIL.Image.BOX), dtype=np.float32))
    fractions = torch.from_numpy(np.stack(planes))
    return fractions / fractions.sum(dim=0, keepdim=True).clamp_min(1e-12)


def image_to_tensor(image: PIL.Image.Image) -> torch.Tensor:
    """8-bit greyscale image → ``float32`` tensor ``(1, H, W)`` in ``[-1, 1]``."""
    if image.mode != "L":
        image = image.convert("L")
    array = np.asarray(image, dtype=np.float32)
    return torch.from_numpy(array / 127.5 - 1.0).unsqueeze(0)


def mask_to_tensor(mask: PIL.Image.Image) -> torch.Tensor:
    """Class-index mask → ``int64`` tensor ``(H, W)``."""
    return torch.from_numpy(np.asarray(mask, dtype=np.int64).copy())


def tensor_to_image(pixel_values: torch.Tensor) -> PIL.Image.Image:
    """Inverse of :func:`image_to_tensor`: ``(1, H, W)`` or ``(H, W)`` in ``[-1, 1]`` → ``"L"`` image."""
    array = pixel_values.detach().float().cpu().reshape(pixel_values.shape[-2:]).numpy()
    array = np.clip(np.round((array + 1.0) * 127.5), 0, 255).astype(np.uint8)
    return PIL.Image.fromarray(array, mode="L")


def random_dihedral(
    pixel_values: torch.Tensor,
    labels: Optional[torch.Tensor] = None,
    generator: Optional[torch.Generator] = None,
    allow_rot90: bool = True,
) -> Tuple[torch.Tensor, Optional[torch.Tensor]]:
    """Apply one random symmetry (rotation by k·90° then optional horizontal flip) to an image and its mask.

    Args:
        pixel_values (`torch.Tensor`): ``(C, H, W)`` image.
        labels (`torch.Tensor`, *optional*): ``(H, W)`` or ``(K, H, W)`` mask / soft label, transformed
            identically.
        generator (`torch.Generator`, *optional*): RNG; default torch's global RNG.
        allow_rot90 (`bool`): allow 90°/270° rotations (set ``False`` for non-square images).

    Returns:
        `Tuple[torch.Tensor, Optional[torch.Tensor]]`: the transformed image and mask.
    """
    draws = torch.randint(0, 8, (1,), generator=generator).item()
    k, flip = draws % 4, draws >= 4
    if not allow_rot90:
        k = 2 * (k % 2)
    out = []
    for tensor in (pixel_values, labels):
        if tensor is None:
            out.append(None)
            continue
        if k:
            tensor = torch.rot90(tensor, k, dims=(-2, -1))
        if flip:
            tensor = torch.flip(tensor, dims=(-1,))
        out.append(tensor.contiguous())
    return out[0], out[1]


def augment_batch(
    images: torch.Tensor,
    masks: torch.Tensor,
    generator: Optional[torch.Generator] = None,
    crop_size: Optional[int] = None,
    dihedral: bool = False,
) -> Tuple[torch.Tensor, torch.Tensor]:
    """
    Per-sample random crop and/or random symmetry of a training batch, drawn from `generator`.

    Augmenting in the training step (instead of in the data loader) keeps every random draw on the step's own
    generator ([`~dakter_hf.seeding.step_generator`]), so resuming is exact.

    Args:
        images (`torch.Tensor`): `(B, C, H, W)` images.
        masks (`torch.Tensor`): `(B, H, W)` masks or `(B, K, H, W)` class fractions.
        generator (`torch.Generator`, *optional*): source of randomness.
        crop_size (`int`, *optional*): side of a random square crop per sample (patch-wise training).
        dihedral (`bool`, *optional*, defaults to `False`): apply one of the 8 symmetries of the square per sample
            (:func:`random_dihedral`).

    Returns:
        `Tuple[torch.Tensor, torch.Tensor]`: the augmented images and masks.
    """
    if crop_size is None and not dihedral:
        return images, masks
    height, width = images.shape[-2:]
    if crop_size is not None and (crop_size > height or crop_size > width):
        raise ValueError(f"`crop_size`={crop_size} is larger than the training images ({height}x{width}).")
    out_images, out_masks = [], []
    for image, mask in zip(images, masks):
        if crop_size is not None:
            top = int(torch.randint(0, height - crop_size + 1, (1,), generator=generator))
            left = int(torch.randint(0, width - crop_size + 1, (1,), generator=generator))
            image = image[:, top : top + crop_size, left : left + crop_size]
            mask = mask[..., top : top + crop_size, left : left + crop_size]
        if dihedral:
            image, mask = random_dihedral(image, mask, generator, allow_rot90=image.shape[-1] == image.shape[-2])
        out_images.append(image)
        out_masks.append(mask)
    return torch.stack(out_images), torch.stack(out_masks)


class SegmentationTransform:
    """Batched transform for ``dataset.with_transform``: image/mask columns → ``pixel_values`` and ``labels``.

    Args:
        resolution (`int` or `(height, width)`, *optional*): training resolution; ``None`` keeps native sizes
            (then all images of a batch must have the same size).
        augment (`bool`): apply a random paired flip / 90° rotation per sample.
        seed (`int`, *optional*): seed a private ``torch.Generator`` for the augmentation. ``None`` (default)
            uses torch's global RNG, which ``accelerate.utils.set_seed`` seeds and which ``DataLoader``
            re-seeds per worker (a private generator would be copied identically into every worker).
        image_column, mask_column (`str`): input column names.
        num_classes (`int`, *optional*): when given, batches with masks also get ``label_fractions``
            ``(B, K, H, W)``: the area-averaged class fractions of the full-size masks
            (:func:`mask_to_class_fractions`), transformed like the masks.

    Calling it on a batch ``{"image": [PIL, ...], "mask": [PIL, ...], ...}`` returns
    ``{"pixel_values": (B, 1, H, W) float32 in [-1, 1], "labels": (B, H, W) int64}`` (``labels`` only if the
    batch has masks). Other columns are dropped.
    """

    def __init__(
        self,
        resolution: Optional[Resolution] = None,
        augment: bool = False,
        seed: Optional[int] = None,
        image_column: str = "image",
        mask_column: str = "mask",
        num_classes: Optional[int] = None,
    ):
        self.resolution = as_hw(resolution, "resolution") if resolution is not None else None
        self.augment = augment
        self.num_classes = num_classes
        self.image_column = image_column
        self.mask_column = mask_column
        self.generator = torch.Generator().manual_seed(seed) if seed is not None else None

    def __repr__(self) -> str:
        return f"{type(self).__name__}(resolution={self.resolution}, augment={self.augment})"

    def __call__(self, batch: Dict[str, List]) -> Dict[str, torch.Tensor]:
        images = batch[self.image_column]
        masks = batch.get(self.mask_column)
        fractions = masks is not None and self.num_classes is not None
        pixel_values, labels, label_fractions = [], [], []
        for i, image in enumerate(images):
            x = image_to_tensor(resize_image(image, self.resolution))
            y = mask_to_tensor(resize_mask(masks[i], self.resolution)) if masks is not None else None
            if y is not None and tuple(y.shape) != tuple(x.shape[-2:]):
                raise ValueError(f"image size {tuple(x.shape[-2:])} and mask size {tuple(y.shape)} differ")
            if fractions:  # the mask and its fractions as one stack, so that both get the same symmetry
                y = torch.cat([y[None].float(), mask_to_class_fractions(masks[i], self.num_classes,
                                                                        tuple(y.shape))])
            if self.augment:
                x, y = random_dihedral(x, y, self.generator, allow_rot90=x.shape[-1] == x.shape[-2])
            if fractions:
                y, q = y[0].long(), y[1:]
                label_fractions.append(q)
            pixel_values.append(x)
            if y is not None:
                labels.append(y)
        out = {"pixel_values": torch.stack(pixel_values)}
        if masks is not None:
            out["labels"] = torch.stack(labels)
        if fractions:
            out["label_fractions"] = torch.stack(label_fractions)
        return out


def build_transform(
    resolution: Optional[Resolution], augment: bool = False, seed: Optional[int] = None,
    num_classes: Optional[int] = None,
) -> SegmentationTransform:
    """Build the shared transform (see :class:`SegmentationTransform`).

    Args:
        resolution (`int` or `(height, width)`, *optional*): training resolution.
        augment (`bool`): random paired flips / 90° rotations.
        seed (`int`, *optional*): seed of a private augmentation RNG (default: torch's global RNG).
        num_classes (`int`, *optional*): also output the masks' area-averaged class fractions over K classes
            (``label_fractions``).

    Returns:
        `SegmentationTransform`: use as ``dataset.with_transform(transform)``.
    """
    return SegmentationTransform(resolution=resolution, augment=augment, seed=seed, num_classes=num_classes)


def collate_fn(examples: Sequence[Dict[str, torch.Tensor]]) -> Dict[str, torch.Tensor]:
    """Stack transformed rows (``pixel_values`` (1, H, W), ``labels`` (H, W)) into a batch.

    Args:
        examples (`Sequence[Dict[str, torch.Tensor]]`): rows of a dataset with :class:`SegmentationTransform`.

    Returns:
        `Dict[str, torch.Tensor]`: ``pixel_values`` (B, 1, H, W) float32 and, if present, ``labels`` (B, H, W)
        int64.
    """
    batch = {"pixel_values": torch.stack([e["pixel_values"] for e in examples]).float()}
    if all("labels" in e for e in examples) and examples:
        batch["labels"] = torch.stack([e["labels"] for e in examples]).long()
    if all("label_fractions" in e for e in examples) and examples:
        batch["label_fractions"] = torch.stack([e["label_fractions"] for e in examples]).float()
    return batch


def dataset_to_tensors(
    dataset, resolution: Optional[Resolution] = None, batch_size: int = 256
) -> Tuple[torch.Tensor, torch.Tensor]:
    """The whole split as tensors, resized and normalised, without augmentation.

    Used e.g. to estimate the SNR balancing factor ``b = RMS(images)`` over the entire training split.

    Args:
        dataset (`datasets.Dataset`): a dataset with ``image`` and ``mask`` columns.
        resolution (`int` or `(height, width)`, *optional*): target size; ``None`` requires equal sizes.
        batch_size (`int`): rows decoded at a time.

    Returns:
        `Tuple[torch.Tensor, torch.Tensor]`: images ``(N, 1, H, W)`` float32 in ``[-1, 1]`` and masks
        ``(N, H, W)`` int64.
    """
    transform = build_transform(resolution, augment=False)
    images, masks = [], []
    plain = dataset.with_format(None).select_columns(["image", "mask"])
    for start in range(0, len(plain), batch_size):
        out = transform(plain[start : start + batch_size])
        images.append(out["pixel_values"])
        masks.append(out["labels"])
    if not images:
        raise ValueError("dataset_to_tensors: the dataset is empty")
    return torch.cat(images), torch.cat(masks)
