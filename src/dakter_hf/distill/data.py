"""The training data of a distillation run: real (D) and generated (D^a) rows as one stream of examples.

Real rows and generated rows live in one [`DistillationDataset`] (indices `[0, |D|)` real, `[|D|, |D| + |D^a|)`
generated) and every example carries the same four fields -- `pixel_values`, `labels` (the hard mask; `ignore_index`
for generated rows), `soft_labels` (the decoded probabilities q; absent for real rows) and `is_generated` (plus
`pair_weight`, the weight of a generated pair's loss, when the pairs are weighted by their quality) -- so the
three modes share one code path: [`~dakter_hf.distill.distillation_loss`] decides from `mode` what each row
contributes. Which rows each batch holds is decided by [`~dakter_hf.distill.sampler.MixedBatchSampler`].

The sampler, the loader's base seed and the augmentation ([`~dakter_hf.seeding.step_generator`]) draw from their
own generators, never from torch's global RNG, so a resumed run sees the same data and augmentations and (through
the per-process global RNG states restored by `accelerator.load_state`) the same dropout as an uninterrupted one.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence

import datasets
import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader

from ..data.errors import DataError
from ..data.generated import get_generated_id2label
from ..data.transforms import image_to_tensor, mask_to_tensor, random_dihedral, resize_image, resize_mask
from ..labels import decode_soft_labels
from .sampler import MixedBatchSampler


logger = logging.getLogger(__name__)

__all__ = [
    "DistillationDataset",
    "augment_distillation_batch",
    "build_distillation_dataloader",
    "check_generated_dataset",
    "distillation_collate_fn",
    "load_generated_dataset",
]

#: Columns a generated dataset must have (see `dakter_hf.generation`).
GENERATED_COLUMNS = ("image", "soft_label")


def load_generated_dataset(name_or_path: str, split: str = "train", token: str | None = None):
    """Load a generated dataset (columns `image`, `soft_label`, ...; see `dakter_hf.generation`).

    Args:
        name_or_path (`str`): a directory written with `save_to_disk` (a `Dataset`, or a `DatasetDict` holding
            `split`), or a Hub dataset id read with `datasets.load_dataset(name_or_path, split=split)`.
        split (`str`, *optional*, defaults to `"train"`): split of a `DatasetDict` / Hub dataset.
        token (`str`, *optional*): Hub token.

    Returns:
        `datasets.Dataset`.

    Raises:
        `DataError` (a `ValueError`): if it cannot be loaded or lacks the `image` / `soft_label` columns.
    """
    try:
        if os.path.isdir(name_or_path):
            dataset = datasets.load_from_disk(name_or_path)
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise DataError(f"it is a DatasetDict without a {split!r} split ({list(dataset)})")
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(name_or_path, split=split, token=token)
    except Exception as error:  # FileNotFoundError, DatasetNotFoundError, HF errors, ...
        raise DataError(
            f"--generated_dataset {name_or_path!r} could not be loaded (not a `save_to_disk` directory nor a "
            f"loadable Hub dataset id): {type(error).__name__}: {error}"
        ) from error
    missing = [c for c in GENERATED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise DataError(
            f"--generated_dataset {name_or_path!r} is not a generated dataset: missing columns {missing} "
            f"(has {dataset.column_names}); write one with `dakter_hf.generation.generate_to_disk`."
        )
    if len(dataset) == 0:
        raise DataError(f"--generated_dataset {name_or_path!r} is empty.")
    return dataset


def _soft_label_shape(generated) -> tuple[int, ...]:
    feature = generated.features["soft_label"]
    shape = getattr(feature, "shape", None)
    if shape is None:  # nested lists of unknown shape: look at a row
        shape = np.asarray(generated.with_format("numpy")[0]["soft_label"]).shape
    return tuple(shape)


def check_generated_dataset(generated, id2label: Mapping[int, str], resolution: int | None = None) -> None:
    """Check that a generated dataset's soft labels have the real data's number of classes.

    Logs a warning (no error) when both carry class names that differ, or when the generated size differs from the
    training `resolution` (the pairs are then resized by [`DistillationDataset`]).

    Raises:
        `DataError` (a `ValueError`): when the soft labels are not `(K, H, W)` with the real data's K.
    """
    num_classes = len(id2label)
    shape = _soft_label_shape(generated)
    if len(shape) != 3:
        raise DataError(f"--generated_dataset: `soft_label` rows must have shape (K, H, W), got {shape}.")
    if shape[0] != num_classes:
        raise DataError(
            f"--generated_dataset has soft labels over K={shape[0]} classes but the real data has K={num_classes} "
            f"classes {dict(id2label)}: generate with a pipeline trained on this dataset."
        )
    if resolution is not None and tuple(shape[1:]) != (resolution, resolution):
        logger.warning(f"--generated_dataset pairs are {shape[1]}x{shape[2]}: images are resized (PIL bilinear) and "
                       f"soft labels interpolated (bilinear, anti-aliased, renormalised) to {resolution}x{resolution}.")
    try:
        generated_names = get_generated_id2label(generated)
    except Exception:  # no `label` column or no names stored: nothing to compare
        return
    if {int(k): v for k, v in generated_names.items()} != {int(k): v for k, v in id2label.items()}:
        logger.warning(f"Class names differ: generated dataset {generated_names}, real data {dict(id2label)}. "
                       "Classes are matched by index.")


class DistillationDataset(torch.utils.data.Dataset):
    """Real and generated pairs behind one index space, as training examples at one resolution.

    Every example is a dict with `pixel_values` (`(1, R, R)` float32 in [-1, 1], from `datasets` images exactly as
    [`~dakter_hf.data.build_transform`] does: PIL bilinear resize, `x / 127.5 - 1`), `labels` (`(R, R)` int64: the
    mask for real rows, all `ignore_index` for generated rows), `is_generated` (bool) and, for generated rows only,
    `soft_labels` (`(K, R, R)` float32 probabilities decoded with `dakter_hf.generation.decode_soft_labels`; resized
    bilinearly with anti-aliasing when the generated size differs from `R`, which keeps them probabilities).

    Args:
        real (`datasets.Dataset`): rows with `image` and `mask` (indices `0 .. len(real) - 1`).
        generated (`datasets.Dataset`, *optional*): rows with `image` and `soft_label` (indices after the real ones).
        resolution (`int`): training resolution R.
        ignore_index (`int`, *optional*, defaults to 255): label of the generated rows' `labels`.
        generated_weights (`Sequence[float]`, *optional*): one loss weight per generated row
            (`dakter_hf.distill.pair_quality`); every example then carries `pair_weight` (1 for real rows).
    """

    def __init__(self, real, generated=None, resolution: int = 64, ignore_index: int = 255,
                 generated_weights: Sequence[float] | None = None):
        self.real = real.select_columns(["image", "mask"])
        self.generated = None
        if generated is not None:
            self.generated = generated.select_columns(["image", "soft_label"]).with_format(
                "numpy", columns=["soft_label"], output_all_columns=True)
            self._soft_label_dtype = generated.features
        self.resolution = int(resolution)
        self.ignore_index = ignore_index
        self.generated_weights = None
        if generated_weights is not None and self.generated is not None:
            self.generated_weights = torch.as_tensor(np.asarray(generated_weights, dtype=np.float32))
            if self.generated_weights.shape != (len(self.generated),):
                raise ValueError(f"`generated_weights` must hold one weight per generated row ({len(self.generated)}), "
                                 f"got shape {tuple(self.generated_weights.shape)}.")

    @property
    def num_real(self) -> int:
        """Number of real rows (indices `0 .. num_real - 1`)."""
        return len(self.real)

    @property
    def num_generated(self) -> int:
        """Number of generated rows (indices `num_real .. num_real + num_generated - 1`)."""
        return 0 if self.generated is None else len(self.generated)

    def __len__(self) -> int:
        return self.num_real + self.num_generated

    def __getitem__(self, index: int) -> dict[str, torch.Tensor]:
        return self.__getitems__([index])[0]

    def __getitems__(self, indices: Sequence[int]) -> list[dict[str, torch.Tensor]]:
        """Fetch a batch of rows with one `datasets` query per source (the `DataLoader` fast path)."""
        indices = [int(i) for i in indices]
        for i in indices:
            if not 0 <= i < len(self):
                raise IndexError(f"index {i} out of range for {len(self)} examples")
        real_ids = [i for i in indices if i < self.num_real]
        generated_ids = [i - self.num_real for i in indices if i >= self.num_real]
        examples: dict[int, dict[str, torch.Tensor]] = {}
        if real_ids:
            rows = self.real[real_ids]
            for i, image, mask in zip(real_ids, rows["image"], rows["mask"]):
                examples[i] = self._example(image, labels=mask_to_tensor(resize_mask(mask, self.resolution)))
        if generated_ids:
            rows = self.generated[generated_ids]
            soft_labels = decode_soft_labels(np.asarray(rows["soft_label"]), dtype=self._soft_label_dtype)
            soft_labels = self._resize_soft_labels(torch.from_numpy(soft_labels))
            for i, image, q in zip(generated_ids, rows["image"], soft_labels):
                examples[self.num_real + i] = self._example(image, soft_labels=q)
                if self.generated_weights is not None:
                    examples[self.num_real + i]["pair_weight"] = self.generated_weights[i]
        if self.generated_weights is not None:
            for i in real_ids:
                examples[i]["pair_weight"] = torch.tensor(1.0)
        return [examples[i] for i in indices]

    def _example(self, image, labels: torch.Tensor | None = None, soft_labels: torch.Tensor | None = None):
        if isinstance(image, np.ndarray):
            image = PIL.Image.fromarray(image)
        pixel_values = image_to_tensor(resize_image(image, self.resolution))
        if labels is None:
            labels = torch.full(pixel_values.shape[-2:], self.ignore_index, dtype=torch.int64)
        elif tuple(labels.shape) != tuple(pixel_values.shape[-2:]):
            raise ValueError(f"image {tuple(pixel_values.shape[-2:])} and mask {tuple(labels.shape)} sizes differ")
        example = {"pixel_values": pixel_values, "labels": labels,
                   "is_generated": torch.tensor(soft_labels is not None)}
        if soft_labels is not None:
            example["soft_labels"] = soft_labels
        return example

    def _resize_soft_labels(self, soft_labels: torch.Tensor) -> torch.Tensor:
        if tuple(soft_labels.shape[-2:]) == (self.resolution, self.resolution):
            return soft_labels
        resized = F.interpolate(soft_labels, size=(self.resolution, self.resolution), mode="bilinear",
                                align_corners=False, antialias=True).clamp_min_(0)
        return resized / resized.sum(dim=1, keepdim=True)


def distillation_collate_fn(examples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, torch.Tensor]:
    """Stack [`DistillationDataset`] examples into a batch for [`distillation_loss`].

    Returns `pixel_values` `(B, 1, R, R)`, `labels` `(B, R, R)`, `is_generated` `(B,)`, when the batch holds a
    generated row, `soft_labels` `(B, K, R, R)` (zeros on real rows, which the loss never reads) and, when the
    examples carry them, `pair_weights` `(B,)`.
    """
    batch = {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]).float(),
        "labels": torch.stack([e["labels"] for e in examples]).long(),
        "is_generated": torch.stack([e["is_generated"] for e in examples]).bool(),
    }
    soft = [e.get("soft_labels") for e in examples]
    reference = next((s for s in soft if s is not None), None)
    if reference is not None:
        batch["soft_labels"] = torch.stack([s if s is not None else torch.zeros_like(reference) for s in soft]).float()
    if any("pair_weight" in e for e in examples):
        batch["pair_weights"] = torch.stack([torch.as_tensor(e.get("pair_weight", 1.0)) for e in examples]).float()
    return batch


def build_distillation_dataloader(
    real,
    generated=None,
    resolution: int = 64,
    train_batch_size: int = 16,
    generated_ratio: float = 0.0,
    max_train_steps: int = 1000,
    num_processes: int = 1,
    seed: int = 0,
    num_workers: int = 0,
    ignore_index: int = 255,
    generated_weights: Sequence[float] | None = None,
) -> DataLoader:
    """The training `DataLoader` of a distillation run (to be passed through `accelerator.prepare`).

    It yields exactly `max_train_steps * num_processes` batches of `train_batch_size` examples (the whole budget:
    after `prepare`, `max_train_steps` per process), composed as in [`MixedBatchSampler`].

    Args:
        real (`datasets.Dataset`): the real training pairs (`image`, `mask`).
        generated (`datasets.Dataset`, *optional*): the generated pairs (`image`, `soft_label`); needed when
            `generated_ratio > 0`.
        resolution (`int`, *optional*, defaults to 64): training resolution.
        train_batch_size (`int`, *optional*, defaults to 16): batch size per process.
        generated_ratio (`float`, *optional*, defaults to 0.0): fraction of each batch from `generated`.
        max_train_steps (`int`, *optional*, defaults to 1000): optimisation steps.
        num_processes (`int`, *optional*, defaults to 1): `accelerator.num_processes`.
        seed (`int`, *optional*, defaults to 0): seed of the data order.
        num_workers (`int`, *optional*, defaults to 0): loader workers.
        ignore_index (`int`, *optional*, defaults to 255): label value of unlabelled pixels.
        generated_weights (`Sequence[float]`, *optional*): a loss weight per generated pair (batches then carry
            `pair_weights`).

    Returns:
        `torch.utils.data.DataLoader` with [`distillation_collate_fn`] batches.
    """
    if generated_ratio > 0 and generated is None:
        raise ValueError("`generated_ratio` > 0 needs a generated dataset.")
    dataset = DistillationDataset(real, generated if generated_ratio > 0 else None, resolution, ignore_index,
                                  generated_weights=generated_weights)
    sampler = MixedBatchSampler(dataset.num_real, dataset.num_generated, train_batch_size, generated_ratio,
                                num_batches=max_train_steps * num_processes, seed=seed)
    # Its own generator: the loader's base seed must not be drawn from torch's global RNG, which holds the dropout
    # state restored on resume.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=distillation_collate_fn, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed))


def augment_distillation_batch(batch: Mapping[str, torch.Tensor], generator: torch.Generator | None = None):
    """Apply one random symmetry of the square per sample to `pixel_values`, `labels` and `soft_labels` alike.

    Drawn from `generator` (a checkpointed one makes resume exact). Non-square batches get 180° rotations / flips only.

    Returns:
        `dict`: a new batch.
    """
    pixel_values, labels = batch["pixel_values"], batch["labels"]
    soft_labels = batch.get("soft_labels")
    square = pixel_values.shape[-1] == pixel_values.shape[-2]
    out_x, out_y, out_q = [], [], []
    for i in range(pixel_values.shape[0]):
        stacked = labels[i][None].to(pixel_values.dtype)
        if soft_labels is not None:
            stacked = torch.cat([stacked, soft_labels[i].to(pixel_values.dtype)])
        x, stacked = random_dihedral(pixel_values[i], stacked, generator, allow_rot90=square)
        out_x.append(x)
        out_y.append(stacked[0].round().to(labels.dtype))
        if soft_labels is not None:
            out_q.append(stacked[1:].to(soft_labels.dtype))
    out = dict(batch)
    out["pixel_values"], out["labels"] = torch.stack(out_x), torch.stack(out_y)
    if soft_labels is not None:
        out["soft_labels"] = torch.stack(out_q)
    return out
