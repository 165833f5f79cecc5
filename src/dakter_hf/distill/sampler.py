"""The batch composition of a distillation run: how many real (D) and generated (D^a) rows each batch holds, and
the seeded sampler that draws them.

Each batch of `B` samples (per process) holds exactly `n_gen = round(generated_ratio * B)` generated rows and
`B - n_gen` real rows ([`batch_composition`]): stratified sampling from D ∪ D^a. The paper draws batches from the union;
`generated_ratio="auto"` (the default of `dakter_hf.commands.distill`) uses `|D^a| / (|D| + |D^a|)`, the expected
generated fraction of a uniform draw from D ∪ D^a, without its batch-to-batch variance. `real` mode uses
`generated_ratio = 0` (all-real batches of the same size), so every mode trains `max_train_steps` steps of `B` samples
per process.

[`MixedBatchSampler`] walks each source through its own sequence of seeded permutations (a new one per pass over the
source): batch `j` takes the next `B - n_gen` positions of the real sequence and the next `n_gen` positions of the
generated one. The sequence is a pure function of `(seed, j)`, which gives

* exact resume: `accelerator.skip_first_batches(loader, step)` replays nothing but index arithmetic;
* process-count invariance: with `P` processes `accelerator.prepare` hands sampler batch `P * t + p` to process `p`,
  so the global batch of step `t` contains exactly the samples of step `t` of a one-process run with `P` times the
  batch size (when `generated_ratio * B` is an integer).

The sampler draws from its own generators, never from torch's global RNG (see `dakter_hf.distill.data`).
"""

from __future__ import annotations

import argparse

import torch
from torch.utils.data import Sampler

from .losses import DISTILLATION_MODES


__all__ = [
    "DEFAULT_GENERATED_RATIO",
    "MixedBatchSampler",
    "batch_composition",
    "parse_generated_ratio",
    "resolve_generated_ratio",
]

#: Default of `--generated_ratio`: the generated fraction of a uniform draw from D ∪ D^a (see the module doc).
DEFAULT_GENERATED_RATIO = "auto"


def parse_generated_ratio(value: str) -> float | str:
    """Command-line type of `--generated_ratio`: `"auto"` (kept as is) or a fraction in `[0, 1]` (as a float).

    Raises:
        `argparse.ArgumentTypeError`: for anything else, so that argparse names the flag in its error.
    """
    if value == "auto":
        return value
    try:
        ratio = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be 'auto' or a number in [0, 1], got {value!r}") from None
    if not 0.0 <= ratio <= 1.0:
        raise argparse.ArgumentTypeError(f"must lie in [0, 1], got {value}")
    return ratio


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
    """Batches of indices of a [`~dakter_hf.distill.DistillationDataset`] with a fixed real / generated composition.

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
