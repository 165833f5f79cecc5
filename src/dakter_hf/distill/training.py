"""The library side of a DAKTer distillation run: the mixed real + generated data stream, one training step, the
split-level evaluation loop, and saving / pushing the student.

`examples/distill.py` wires these pieces together under `accelerate launch`; `examples/evaluate.py` reuses the
evaluation loop. Everything here is free of single-device assumptions: the training stream is sharded by
`accelerator.prepare`, evaluation shards the split without padding and sums confusion matrices across processes.

**The mixed stream (batches drawn from D ∪ D^a).** Real rows (D) and generated rows (D^a) live in one
[`DistillationDataset`] (indices `[0, |D|)` real, `[|D|, |D| + |D^a|)` generated) and every example carries the same
four fields -- `pixel_values`, `labels` (the hard mask; `ignore_index` for generated rows), `soft_labels` (the
decoded probabilities q; absent for real rows) and `is_generated` -- so the three modes share one code path:
[`distillation_loss`] decides from `mode` what each row contributes.

Each batch of `B` samples (per process) holds exactly `n_gen = round(generated_ratio * B)` generated rows and
`B - n_gen` real rows ([`batch_composition`]): stratified sampling from D ∪ D^a. The paper draws batches from the union;
`generated_ratio="auto"` (the default of `examples/distill.py`) uses `|D^a| / (|D| + |D^a|)`, the expected generated
fraction of a uniform draw from D ∪ D^a, without its batch-to-batch variance. `real` mode uses `generated_ratio = 0`
(all-real batches of the same size), so every mode trains `max_train_steps` steps of `B` samples per process.

[`MixedBatchSampler`] walks each source through its own sequence of seeded permutations (a new one per pass over the
source): batch `j` takes the next `B - n_gen` positions of the real sequence and the next `n_gen` positions of the
generated one. The sequence is a pure function of `(seed, j)`, which gives

* exact resume: `accelerator.skip_first_batches(loader, step)` replays nothing but index arithmetic;
* process-count invariance: with `P` processes `accelerator.prepare` hands sampler batch `P * t + p` to process `p`,
  so the global batch of step `t` contains exactly the samples of step `t` of a one-process run with `P` times the
  batch size (when `generated_ratio * B` is an integer).

The sampler, the loader's base seed and the augmentation ([`~dakter_hf.seeding.step_generator`]) draw from their
own generators, never from torch's global RNG, so a resumed run sees the same data and augmentations and (through
the per-process global RNG states restored by `accelerator.load_state`) the same dropout as an uninterrupted one.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import PIL.Image
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Sampler
from tqdm.auto import tqdm

from ..data.transforms import image_to_tensor, mask_to_tensor, random_dihedral, resize_image, resize_mask
from ..metrics import SegmentationMetrics
from .losses import DISTILLATION_MODES, distillation_loss


logger = logging.getLogger(__name__)

__all__ = [
    "DEFAULT_GENERATED_RATIO",
    "DistillationDataset",
    "EvaluationTransform",
    "MixedBatchSampler",
    "augment_distillation_batch",
    "batch_composition",
    "best_evaluation",
    "build_distillation_dataloader",
    "build_evaluation_dataloader",
    "check_generated_dataset",
    "distillation_collate_fn",
    "distillation_training_step",
    "evaluate_student",
    "evaluation_dataset_from_args",
    "format_metrics_table",
    "learning_curve_history",
    "load_generated_dataset",
    "resolve_generated_ratio",
    "parse_generated_ratio",
    "save_student",
    "write_metrics_report",
]

#: Default of `--generated_ratio`: the generated fraction of a uniform draw from D ∪ D^a (see the module doc).
DEFAULT_GENERATED_RATIO = "auto"
#: Columns a generated dataset must have (see `dakter_hf.generation`).
GENERATED_COLUMNS = ("image", "soft_label")


def parse_generated_ratio(value: str) -> float | str:
    """Command-line type of `--generated_ratio`: `"auto"` (kept as is) or a fraction in `[0, 1]` (as a float).

    Raises:
        `argparse.ArgumentTypeError`: for anything else, so that argparse names the flag in its error.
    """
    import argparse

    if value == "auto":
        return value
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return ratio


# ----------------------------------------------------------------------------------------------------------------------
# Generated datasets
# ----------------------------------------------------------------------------------------------------------------------


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
        `ValueError`: if it cannot be loaded or lacks the `image` / `soft_label` columns.
    """
    import datasets

    try:
        if os.path.isdir(name_or_path):
            dataset = datasets.load_from_disk(name_or_path)
            if isinstance(dataset, datasets.DatasetDict):
                if split not in dataset:
                    raise ValueError(f"it is a DatasetDict without a {split!r} split ({list(dataset)})")
                dataset = dataset[split]
        else:
            dataset = datasets.load_dataset(name_or_path, split=split, token=token)
    except Exception as error:  # FileNotFoundError, DatasetNotFoundError, HF errors, ...
        raise ValueError(
            f"--generated_dataset {name_or_path!r} could not be loaded (not a `save_to_disk` directory nor a "
            f"loadable Hub dataset id): {type(error).__name__}: {error}"
        ) from error
    missing = [c for c in GENERATED_COLUMNS if c not in dataset.column_names]
    if missing:
        raise ValueError(
            f"--generated_dataset {name_or_path!r} is not a generated dataset: missing columns {missing} "
            f"(has {dataset.column_names}); write one with `dakter_hf.generation.generate_to_disk`."
        )
    if len(dataset) == 0:
        raise ValueError(f"--generated_dataset {name_or_path!r} is empty.")
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
        `ValueError`: when the soft labels are not `(K, H, W)` with the real data's K.
    """
    num_classes = len(id2label)
    shape = _soft_label_shape(generated)
    if len(shape) != 3:
        raise ValueError(f"--generated_dataset: `soft_label` rows must have shape (K, H, W), got {shape}.")
    if shape[0] != num_classes:
        raise ValueError(
            f"--generated_dataset has soft labels over K={shape[0]} classes but the real data has K={num_classes} "
            f"classes {dict(id2label)}: generate with a pipeline trained on this dataset."
        )
    if resolution is not None and tuple(shape[1:]) != (resolution, resolution):
        logger.warning(f"--generated_dataset pairs are {shape[1]}x{shape[2]}: images are resized (PIL bilinear) and "
                       f"soft labels interpolated (bilinear, anti-aliased, renormalised) to {resolution}x{resolution}.")
    from ..data.generated import get_generated_id2label

    try:
        generated_names = get_generated_id2label(generated)
    except Exception:  # no `label` column or no names stored: nothing to compare
        return
    if {int(k): v for k, v in generated_names.items()} != {int(k): v for k, v in id2label.items()}:
        logger.warning(f"Class names differ: generated dataset {generated_names}, real data {dict(id2label)}. "
                       "Classes are matched by index.")


def resolve_generated_ratio(generated_ratio: float | str | None, mode: str, num_real: int, num_generated: int) -> float:
    """The fraction of each batch drawn from the generated set.

    Args:
        generated_ratio (`float` or `"auto"`): a fraction in `[0, 1]`, or `"auto"`/`None` for
            `num_generated / (num_real + num_generated)` (uniform sampling from D ∪ D^a).
        mode (`str`): `"real"` always gives 0.
        num_real (`int`), num_generated (`int`): sizes of D and D^a.

    Returns:
        `float`
    """
    if mode not in DISTILLATION_MODES:
        raise ValueError(f"`mode` must be one of {DISTILLATION_MODES}, got {mode!r}.")
    if mode == "real":
        return 0.0
    if generated_ratio is None or generated_ratio == "auto":
        return num_generated / (num_real + num_generated)
    ratio = float(generated_ratio)
    if not 0.0 <= ratio <= 1.0:
        raise ValueError(f"--generated_ratio must lie in [0, 1] (or be 'auto'), got {generated_ratio}.")
    return ratio


def batch_composition(batch_size: int, generated_ratio: float) -> tuple[int, int]:
    """`(num_real, num_generated)` per batch: `num_generated = round(generated_ratio * batch_size)`.

    Raises:
        `ValueError`: if a positive ratio rounds to no generated sample, or the batch would need real samples that
            the caller does not have (checked by [`MixedBatchSampler`]).
    """
    if batch_size < 1:
        raise ValueError(f"`train_batch_size` must be >= 1, got {batch_size}.")
    num_generated = int(round(generated_ratio * batch_size))
    if generated_ratio > 0 and num_generated == 0:
        raise ValueError(
            f"--generated_ratio={generated_ratio:.4g} x --train_batch_size={batch_size} rounds to 0 generated samples "
            "per batch: raise the ratio or the batch size."
        )
    return batch_size - num_generated, num_generated


# ----------------------------------------------------------------------------------------------------------------------
# The mixed stream
# ----------------------------------------------------------------------------------------------------------------------


class _PermutationStream:
    """An endless sequence over `range(size)`: the concatenation of seeded permutations, one per pass."""

    def __init__(self, size: int, seed: int, stream_id: int):
        self.size, self.seed, self.stream_id = size, seed, stream_id
        self._cache: dict[int, torch.Tensor] = {}

    def _permutation(self, epoch: int) -> torch.Tensor:
        if epoch not in self._cache:
            if len(self._cache) > 4:
                self._cache.clear()
            generator = torch.Generator().manual_seed(
                (self.seed * 1_000_003 + self.stream_id * 7_919 + epoch) % (2**63 - 1)
            )
            self._cache[epoch] = torch.randperm(self.size, generator=generator)
        return self._cache[epoch]

    def take(self, start: int, count: int) -> list[int]:
        """Positions `[start, start + count)` of the sequence."""
        out = []
        for position in range(start, start + count):
            epoch, offset = divmod(position, self.size)
            out.append(int(self._permutation(epoch)[offset]))
        return out


class MixedBatchSampler(Sampler[list[int]]):
    """Batches of indices of a [`DistillationDataset`] with a fixed real / generated composition.

    Batch `j` holds real positions `[j * n_real, (j + 1) * n_real)` and generated positions
    `[j * n_gen, (j + 1) * n_gen)` of two endless, seeded permutation sequences (see the module doc).

    Args:
        num_real (`int`): size of the real set D (dataset indices `0 .. num_real - 1`).
        num_generated (`int`): size of the generated set D^a (dataset indices `num_real ..`).
        batch_size (`int`): samples per batch.
        generated_ratio (`float`): fraction of each batch from D^a ([`batch_composition`]).
        num_batches (`int`): number of batches to yield (`max_train_steps * num_processes`).
        seed (`int`, *optional*, defaults to 0): seed of the permutations.
    """

    def __init__(self, num_real: int, num_generated: int, batch_size: int, generated_ratio: float, num_batches: int,
                 seed: int = 0):
        self.num_real_per_batch, self.num_generated_per_batch = batch_composition(batch_size, generated_ratio)
        if self.num_real_per_batch and num_real < 1:
            raise ValueError("The real training set is empty.")
        if self.num_generated_per_batch and num_generated < 1:
            raise ValueError("--generated_ratio > 0 needs a non-empty generated dataset.")
        if num_batches < 0:
            raise ValueError(f"`num_batches` must be >= 0, got {num_batches}.")
        self.batch_size = batch_size  # read by accelerate's BatchSamplerShard
        self.num_real, self.num_generated = num_real, num_generated
        self.num_batches, self.seed = num_batches, seed
        self._real = _PermutationStream(max(num_real, 1), seed, 0)
        self._generated = _PermutationStream(max(num_generated, 1), seed, 1)

    def __len__(self) -> int:
        return self.num_batches

    def batch(self, index: int) -> list[int]:
        """The dataset indices of batch `index` (real first, then generated)."""
        n_real, n_gen = self.num_real_per_batch, self.num_generated_per_batch
        real = self._real.take(index * n_real, n_real) if n_real else []
        generated = [self.num_real + i for i in self._generated.take(index * n_gen, n_gen)] if n_gen else []
        return real + generated

    def __iter__(self):
        for index in range(self.num_batches):
            yield self.batch(index)


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
    """

    def __init__(self, real, generated=None, resolution: int = 64, ignore_index: int = 255):
        self.real = real.select_columns(["image", "mask"])
        self.generated = None
        if generated is not None:
            self.generated = generated.select_columns(["image", "soft_label"]).with_format(
                "numpy", columns=["soft_label"], output_all_columns=True)
            self._soft_label_dtype = generated.features
        self.resolution = int(resolution)
        self.ignore_index = ignore_index

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
            from ..labels import decode_soft_labels

            rows = self.generated[generated_ids]
            soft_labels = decode_soft_labels(np.asarray(rows["soft_label"]), dtype=self._soft_label_dtype)
            soft_labels = self._resize_soft_labels(torch.from_numpy(soft_labels))
            for i, image, q in zip(generated_ids, rows["image"], soft_labels):
                examples[self.num_real + i] = self._example(image, soft_labels=q)
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

    Returns `pixel_values` `(B, 1, R, R)`, `labels` `(B, R, R)`, `is_generated` `(B,)` and, when the batch holds a
    generated row, `soft_labels` `(B, K, R, R)` (zeros on real rows, which the loss never reads).
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

    Returns:
        `torch.utils.data.DataLoader` with [`distillation_collate_fn`] batches.
    """
    if generated_ratio > 0 and generated is None:
        raise ValueError("`generated_ratio` > 0 needs a generated dataset.")
    dataset = DistillationDataset(real, generated if generated_ratio > 0 else None, resolution, ignore_index)
    sampler = MixedBatchSampler(dataset.num_real, dataset.num_generated, train_batch_size, generated_ratio,
                                num_batches=max_train_steps * num_processes, seed=seed)
    # Its own generator: the loader's base seed must not be drawn from torch's global RNG, which holds the dropout
    # state restored on resume.
    return DataLoader(dataset, batch_sampler=sampler, collate_fn=distillation_collate_fn, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(seed))


# ----------------------------------------------------------------------------------------------------------------------
# Training step
# ----------------------------------------------------------------------------------------------------------------------


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


def distillation_training_step(
    accelerator,
    model,
    optimizer,
    lr_scheduler,
    batch: Mapping[str, torch.Tensor],
    mode: str = "soft",
    kd_temperature: float = 1.0,
    real_weight: float = 1.0,
    generated_weight: float = 1.0,
    max_grad_norm: float | None = 1.0,
    ignore_index: int = 255,
    augment: bool = False,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """One optimisation step of the student on a (mixed) batch: forward, [`distillation_loss`], backward, clip, step.

    Args:
        accelerator (`accelerate.Accelerator`): the accelerator that prepared `model`, `optimizer`, `lr_scheduler`.
        model: the (prepared) SegFormer student.
        optimizer, lr_scheduler: prepared optimizer and scheduler.
        batch (`Mapping`): a [`distillation_collate_fn`] batch.
        mode (`str`, *optional*, defaults to `"soft"`): `"real"`, `"hard"` or `"soft"` (see [`distillation_loss`]).
        kd_temperature (`float`, *optional*, defaults to 1.0): KD temperature tau (`"soft"` mode).
        real_weight (`float`, *optional*, defaults to 1.0), generated_weight (`float`, *optional*, defaults to 1.0):
            per-pixel weights of the real and generated terms.
        max_grad_norm (`float`, *optional*, defaults to 1.0): gradient clipping; `None` disables it.
        ignore_index (`int`, *optional*, defaults to 255): unlabelled pixels.
        augment (`bool`, *optional*, defaults to `False`): random symmetries ([`augment_distillation_batch`]).
        generator (`torch.Generator`, *optional*): source of the augmentation.

    Returns:
        `dict[str, float]`: `loss`, `loss_real`, `loss_generated` (averaged over processes) and the batch's
        `num_real` / `num_generated` (summed over processes).
    """
    if augment:
        batch = augment_distillation_batch(batch, generator)
    with accelerator.accumulate(model):
        logits = model(pixel_values=batch["pixel_values"]).logits
        output = distillation_loss(logits, batch, mode=mode, kd_temperature=kd_temperature, real_weight=real_weight,
                                   generated_weight=generated_weight, ignore_index=ignore_index)
        accelerator.backward(output.loss)
        if accelerator.sync_gradients and max_grad_norm is not None:
            accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
        optimizer.step()
        lr_scheduler.step()
        optimizer.zero_grad(set_to_none=True)
    device = output.loss.device
    losses = torch.stack([output.loss.detach(), output.loss_real.detach(), output.loss_generated.detach()]).float()
    losses = accelerator.reduce(losses, reduction="mean")
    counts = accelerator.reduce(torch.tensor([output.num_real, output.num_generated], device=device), reduction="sum")
    return {
        "loss": float(losses[0]),
        "loss_real": float(losses[1]),
        "loss_generated": float(losses[2]),
        "num_real": int(counts[0]),
        "num_generated": int(counts[1]),
    }


# ----------------------------------------------------------------------------------------------------------------------
# Evaluation
# ----------------------------------------------------------------------------------------------------------------------


class EvaluationTransform:
    """`dataset.with_transform` for evaluation: images through an image processor, masks at their native size.

    Using the checkpoint's own image processor (resize + normalisation) is what makes the scores those of
    `AutoImageProcessor` + `AutoModelForSemanticSegmentation` on the raw images; the logits are upsampled to the
    native mask size by the metric ([`SegmentationMetrics.update`]).

    Args:
        image_processor: e.g. [`~dakter_hf.distill.create_image_processor`] or `AutoImageProcessor.from_pretrained`.
    """

    def __init__(self, image_processor):
        self.image_processor = image_processor

    def __call__(self, batch: Mapping[str, list]) -> dict[str, Any]:
        images = [image if image.mode == "L" else image.convert("L") for image in batch["image"]]
        pixel_values = self.image_processor(images=images, return_tensors="pt")["pixel_values"]
        return {"pixel_values": list(pixel_values), "labels": [mask_to_tensor(mask) for mask in batch["mask"]]}


def _evaluation_collate_fn(examples: Sequence[Mapping[str, torch.Tensor]]) -> dict[str, Any]:
    labels = [e["labels"] for e in examples]
    same_size = all(label.shape == labels[0].shape for label in labels)
    return {
        "pixel_values": torch.stack([e["pixel_values"] for e in examples]).float(),
        "labels": torch.stack(labels) if same_size else labels,  # a list when native mask sizes differ
    }


def build_evaluation_dataloader(
    dataset,
    image_processor,
    batch_size: int = 16,
    process_index: int = 0,
    num_processes: int = 1,
    max_samples: int | None = None,
    num_workers: int = 0,
) -> DataLoader:
    """A `DataLoader` over this process's contiguous shard of an evaluation split, **without padding**.

    Shards partition the split exactly (no repeated samples, unlike a padded distributed sampler), so the confusion
    matrices summed over processes are the split-level one.

    Args:
        dataset (`datasets.Dataset`): rows with `image` and `mask` (native size).
        image_processor: resizes and normalises the images ([`EvaluationTransform`]).
        batch_size (`int`, *optional*, defaults to 16): batch size per process.
        process_index (`int`), num_processes (`int`): this process and the number of processes.
        max_samples (`int`, *optional*): evaluate only the first `max_samples` rows (quick runs).
        num_workers (`int`, *optional*, defaults to 0): loader workers.
    """
    dataset = dataset.select_columns(["image", "mask"])
    if max_samples is not None:
        dataset = dataset.select(range(min(max_samples, len(dataset))))
    if num_processes > 1:
        dataset = dataset.shard(num_shards=num_processes, index=process_index, contiguous=True)
    return DataLoader(dataset.with_transform(EvaluationTransform(image_processor)), batch_size=batch_size,
                      shuffle=False, collate_fn=_evaluation_collate_fn, num_workers=num_workers,
                      generator=torch.Generator().manual_seed(0))  # keeps torch's global RNG untouched


def evaluation_dataset_from_args(args, split: str, simulated_resolution: int | None = None):
    """An evaluation split selected by the shared data flags (`dakter_hf.data.add_data_args`), at its **native** size.

    Masks are scored at their native size (logits are upsampled to it), so file-based datasets are loaded without
    load-time resizing even when the script has a `--resolution` flag (which `dataset_from_args` would otherwise
    apply). Simulated scenes have no native size: they are drawn at `simulated_resolution`.

    Args:
        args (`argparse.Namespace`): parsed arguments of a script using `add_data_args`.
        split (`str`): the split to load.
        simulated_resolution (`int`, *optional*): scene size of `--dataset simulated`.

    Returns:
        `datasets.Dataset`.
    """
    import argparse

    from ..data import dataset_from_args

    if args.dataset == "simulated":
        return dataset_from_args(args, split=split, resolution=simulated_resolution)
    native = argparse.Namespace(**{**vars(args), "resolution": None})  # `resolution=None` would fall back to it
    return dataset_from_args(native, split=split, resolution=None)


@torch.no_grad()
def evaluate_student(
    model,
    dataloader: DataLoader,
    id2label: Mapping[int, str],
    accelerator=None,
    ignore_index: int = 255,
    show_progress: bool = True,
) -> dict[str, float]:
    """Split-level metrics of a SegFormer: confusion matrix over the whole split, summed across processes.

    Logits are upsampled (bilinear) to each mask's size and arg-maxed ([`SegmentationMetrics.update`]). Every process
    must call this function (the reduction is collective). The model is run un-wrapped and in eval mode, and put
    back in its previous mode.

    Args:
        model: a `SegformerForSemanticSegmentation` (or any model returning `.logits`), possibly wrapped.
        dataloader (`DataLoader`): this process's shard ([`build_evaluation_dataloader`]).
        id2label (`Mapping`): class names (keys of the per-class metrics).
        accelerator (`accelerate.Accelerator`, *optional*): reduces the confusion matrix across processes.
        ignore_index (`int`, *optional*, defaults to 255): unlabelled pixels.
        show_progress (`bool`, *optional*, defaults to `True`): tqdm bar on the main process.

    Returns:
        `dict[str, float]`: `mean_iou`, `mean_f1`, `mean_precision`, `mean_recall`, `pixel_accuracy`, per-class
        `iou_<name>`, `f1_<name>`, `precision_<name>`, `recall_<name>`, and `num_pixels` (counted pixels).
    """
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    device = accelerator.device if accelerator is not None else next(model.parameters()).device
    was_training = model.training
    model.eval()
    metrics = SegmentationMetrics(len(id2label), ignore_index=ignore_index, id2label=id2label, device=device)
    is_main = accelerator is None or accelerator.is_local_main_process
    for batch in tqdm(dataloader, desc="Evaluating", leave=False, disable=not (show_progress and is_main)):
        logits = model(pixel_values=batch["pixel_values"].to(device)).logits.float()
        labels = batch["labels"]
        if isinstance(labels, torch.Tensor):
            metrics.update(logits, labels.to(device))
        else:
            for sample_logits, sample_labels in zip(logits, labels):
                metrics.update(sample_logits[None], sample_labels[None].to(device))
    matrix = metrics.reduce(accelerator)
    model.train(was_training)
    from ..metrics import compute_segmentation_metrics

    results = compute_segmentation_metrics(matrix, id2label)
    results["num_pixels"] = int(matrix.sum())
    return results


# ----------------------------------------------------------------------------------------------------------------------
# Saving, pushing, reports
# ----------------------------------------------------------------------------------------------------------------------


def save_student(model, image_processor, save_directory: str | os.PathLike, accelerator=None) -> str:
    """Save a student with `save_pretrained` (config with `id2label`, safetensors weights) and its image processor
    (`preprocessor_config.json`) in one directory, loadable with `AutoModelForSemanticSegmentation` and
    `AutoImageProcessor` without `dakter_hf`. Call it on the main process only.

    Returns:
        `str`: the directory.
    """
    if accelerator is not None:
        model = accelerator.unwrap_model(model)
    save_directory = os.fspath(save_directory)
    os.makedirs(save_directory, exist_ok=True)
    model.save_pretrained(save_directory)
    image_processor.save_pretrained(save_directory)
    return save_directory


def write_metrics_report(path: str | os.PathLike, evaluations: Sequence[Mapping[str, Any]], best_step: int | None,
                         final_step: int | None, **extra: Any) -> dict[str, Any]:
    """Write the run's metrics JSON: every evaluation point, the best (by `mean_iou`) and the final one.

    Args:
        path (`str`): the JSON file.
        evaluations (`Sequence[Mapping]`): `{"step": ..., "mean_iou": ..., ...}` records.
        best_step (`int`, *optional*), final_step (`int`, *optional*): steps of the best / final evaluation.
        **extra: other top-level fields (mode, num_processes, losses, arguments, ...).

    Returns:
        `dict`: what was written. NaN metrics (classes absent from the split) are written as `NaN`.
    """
    by_step = {int(e["step"]): dict(e) for e in evaluations}
    report = {
        **extra,
        "evaluations": [by_step[s] for s in sorted(by_step)],
        "best": by_step.get(best_step) if best_step is not None else None,
        "final": by_step.get(final_step) if final_step is not None else None,
    }
    os.makedirs(os.path.dirname(os.fspath(path)) or ".", exist_ok=True)
    with open(path, "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
        f.write("\n")
    return report


def best_evaluation(evaluations: Sequence[Mapping[str, Any]], metric: str = "mean_iou") -> Mapping[str, Any] | None:
    """The evaluation record with the highest `metric` (NaN counts as lowest; the earliest wins ties)."""
    best = None
    for record in evaluations:
        value = record.get(metric)
        value = -math.inf if value is None or not math.isfinite(value) else value
        if best is None or value > best[0]:
            best = (value, record)
    return None if best is None else best[1]


def learning_curve_history(train_records: Sequence[Mapping[str, Any]], evaluations: Sequence[Mapping[str, Any]],
                           train_names: Sequence[str] = ("loss", "loss_real", "loss_generated"),
                           eval_names: Sequence[str] = ("mean_iou",)) -> dict[str, list[tuple[int, float]]]:
    """The `{"train/<loss>": [(step, value)], "eval/<metric>": [...]}` curves of a run, in the format of
    `dakter_hf.visualization.save_learning_curves` (one panel for the losses, one for validation mIoU).

    Generated-loss points of steps without generated samples (`real` mode) are left out.
    """
    history: dict[str, list[tuple[int, float]]] = {}
    for name in train_names:
        points = [(int(r["step"]), float(r[name])) for r in train_records if name in r
                  and not (name == "loss_generated" and r.get("num_generated", 1) == 0)]
        if points:
            history[f"train/{name}"] = points
    for name in eval_names:
        history[f"eval/{name}"] = [(int(r["step"]), float(r[name])) for r in evaluations if name in r]
    return history


def format_metrics_table(metrics: Mapping[str, float], id2label: Mapping[int, str], title: str | None = None) -> str:
    """A plain-text table of [`evaluate_student`] metrics: one row per class (IoU, F1, precision, recall) and the
    means, then pixel accuracy. Values in percent; `nan` marks classes absent from labels and predictions."""
    from ..metrics import metric_key_names

    columns = ("iou", "f1", "precision", "recall")
    names = [str(id2label[i]) for i in range(len(id2label))]
    keys = metric_key_names(len(id2label), id2label)
    width = max([len(n) for n in names] + [len("mean")]) + 2
    lines = [title] if title else []
    lines.append("class".ljust(width) + "".join(f"{c:>11}" for c in ("IoU", "F1", "precision", "recall")))
    lines.append("-" * (width + 11 * len(columns)))
    for name, key in zip(names, keys):
        lines.append(name.ljust(width) + "".join(f"{100 * metrics[f'{c}_{key}']:>11.2f}" for c in columns))
    lines.append("-" * (width + 11 * len(columns)))
    lines.append("mean".ljust(width) + "".join(f"{100 * metrics[f'mean_{c}']:>11.2f}" for c in columns))
    lines.append(f"mIoU {100 * metrics['mean_iou']:.2f} | mean F1 {100 * metrics['mean_f1']:.2f} | pixel accuracy "
                 f"{100 * metrics['pixel_accuracy']:.2f}")
    return "\n".join(lines)
