"""Student losses: cross-entropy on real pairs, knowledge distillation on generated pairs.

DAKTer trains a student on batches drawn from D ∪ D^a (real ∪ generated). A real sample contributes the
cross-entropy against its hard mask; a generated sample contributes a loss against the soft label `q` (per-pixel
class probabilities) that the diffusion model generated with its image. Three modes share one code path:

* `"real"`: the baseline without generative augmentation; generated samples in the batch are ignored.
* `"hard"`: generated samples are trained with cross-entropy on `argmax(q)` (a hard pseudo-mask).
* `"soft"`: DAKTer. Generated samples are trained with the knowledge-distillation loss

  `L_kd = tau^2 * KL(q || softmax(z / tau))`, per pixel, averaged over pixels,

  where `z` are the student logits. The average is over pixels (like the cross-entropy), not PyTorch's
  `"batchmean"` KL reduction, which divides a sum over pixels by the batch size only and so grows with H*W.

The `"hard"` target is a one-hot distribution and `KL(onehot || softmax(z)) = CE(z, argmax q)`, so `"hard"` is
the `"soft"` loss with the target replaced by `onehot(argmax q)` and `tau = 1` -- which is exactly how it is
computed here.

SegFormer returns logits at 1/4 of the input resolution; they are upsampled (bilinear, `align_corners=False`,
as SegFormer does for its own loss) to the label resolution before any loss.

Defaults: `kd_temperature=1.0`. The softness of the target is already set on the teacher side, when the
generator's label logits are turned into `q = softmax(logits / tau_q)`; with `tau = 1` the KD gradient has the
same scale as the cross-entropy gradient, and `"soft"` and `"hard"` differ only in their target, which is the
comparison the paper makes. The paper does not report its KD temperature; it is exposed for ablation.
`real_weight = generated_weight = 1.0`: every (valid) pixel of the batch counts the same, so the real:generated
balance is the sampling ratio of the data loader, as when batches are drawn from D ∪ D^a. A batch may also carry
`pair_weights` `(B,)`: each generated sample's pixel losses are multiplied by its weight (pair-quality weighting,
`dakter_hf.distill.pair_quality`; a weight of 0 removes the sample from the loss and its gradient).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F


__all__ = [
    "DISTILLATION_MODES",
    "DistillationLossOutput",
    "distillation_loss",
    "knowledge_distillation_loss",
    "upsample_logits",
]

#: Valid values of the `mode` argument of [`distillation_loss`].
DISTILLATION_MODES = ("real", "hard", "soft")


@dataclass
class DistillationLossOutput:
    """Output of [`distillation_loss`].

    Args:
        loss (`torch.Tensor`): scalar to back-propagate:
            `(real_weight * sum_real_pixels CE + generated_weight * sum_generated_pixels L_gen) / num_pixels`,
            `num_pixels` counting the valid real pixels plus the generated pixels that take part in `mode`.
        loss_real (`torch.Tensor`): mean cross-entropy over the valid pixels of the real samples (0 if none).
        loss_generated (`torch.Tensor`): mean loss over the pixels of the generated samples: KD in `"soft"` mode,
            CE on `argmax(q)` in `"hard"` mode, 0 in `"real"` mode or when the batch holds no generated sample.
        num_real (`int`): number of real samples in the batch.
        num_generated (`int`): number of generated samples in the batch.
    """

    loss: torch.Tensor
    loss_real: torch.Tensor
    loss_generated: torch.Tensor
    num_real: int
    num_generated: int


def upsample_logits(logits: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
    """Bilinearly upsample `(B, K, h, w)` logits to `size = (H, W)` (`align_corners=False`); no-op if equal."""
    if logits.dim() != 4:
        raise ValueError(f"`student_logits` must have shape (B, K, h, w), got {tuple(logits.shape)}.")
    if tuple(logits.shape[-2:]) == tuple(size):
        return logits
    return F.interpolate(logits, size=tuple(size), mode="bilinear", align_corners=False)


def _check_temperature(temperature: float) -> None:
    if not temperature > 0:
        raise ValueError(f"`kd_temperature` must be > 0, got {temperature}.")


def _check_soft_labels(soft_labels: torch.Tensor, logits: torch.Tensor, atol: float = 1e-3) -> None:
    if soft_labels.dim() != 4:
        raise ValueError(f"`soft_labels` must have shape (B, K, H, W), got {tuple(soft_labels.shape)}.")
    if soft_labels.shape[:2] != logits.shape[:2]:
        raise ValueError(
            f"`soft_labels` (B, K) = {tuple(soft_labels.shape[:2])} does not match `student_logits` (B, K) = "
            f"{tuple(logits.shape[:2])}."
        )
    if soft_labels.numel():
        with torch.no_grad():
            sums = soft_labels.sum(dim=1)
            if bool(soft_labels.min() < 0) or bool(((sums - 1).abs() > atol).any()):
                raise ValueError(
                    "`soft_labels` must be per-pixel probabilities (non-negative, summing to 1 over dim 1); "
                    "got label logits? Apply `dakter_hf.labels.logits_to_soft_labels` first."
                )


def _kd_per_pixel(logits: torch.Tensor, target: torch.Tensor, temperature: float) -> torch.Tensor:
    """`tau^2 * KL(target || softmax(logits / tau))` per pixel, `(B, H, W)`; `0 * log 0 = 0` for the target."""
    log_student = F.log_softmax(logits.float() / temperature, dim=1)
    target = target.float()
    kl = torch.xlogy(target, target) - target * log_student
    return kl.sum(dim=1) * temperature**2


def knowledge_distillation_loss(
    student_logits: torch.Tensor, soft_labels: torch.Tensor, kd_temperature: float = 1.0
) -> torch.Tensor:
    """Per-pixel KD loss `tau^2 * KL(q || softmax(z / tau))`, averaged over all pixels of the batch.

    Args:
        student_logits (`torch.Tensor`): `(B, K, h, w)` logits, upsampled to the soft-label size if needed.
        soft_labels (`torch.Tensor`): `(B, K, H, W)` class probabilities `q` (exact zeros allowed).
        kd_temperature (`float`, *optional*, defaults to 1.0): `tau > 0`.

    Returns:
        `torch.Tensor`: scalar loss (independent of H*W for the same per-pixel content).
    """
    _check_temperature(kd_temperature)
    _check_soft_labels(soft_labels, student_logits)
    logits = upsample_logits(student_logits, soft_labels.shape[-2:])
    return _kd_per_pixel(logits, soft_labels, kd_temperature).mean()


def _get(batch: Mapping[str, Any] | Any, key: str):
    if isinstance(batch, Mapping):
        return batch.get(key)
    return getattr(batch, key, None)


def distillation_loss(
    student_logits: torch.Tensor,
    batch: Mapping[str, Any],
    mode: str = "soft",
    kd_temperature: float = 1.0,
    real_weight: float = 1.0,
    generated_weight: float = 1.0,
    ignore_index: int = 255,
) -> DistillationLossOutput:
    """The student loss on a batch that may mix real and generated samples.

    Args:
        student_logits (`torch.Tensor`): `(B, K, h, w)` student logits (e.g. SegFormer's, at 1/4 resolution);
            upsampled bilinearly to the label resolution.
        batch (`Mapping`): holds
            - `"is_generated"` (`torch.Tensor`, `(B,)` bool): which samples are generated. Optional when the
              batch is homogeneous: inferred as all-real if `soft_labels` is missing, all-generated if `labels`
              is missing.
            - `"labels"` (`torch.Tensor`, `(B, H, W)` int): hard masks; only the rows of real samples are read
              (generated rows may hold anything, e.g. `ignore_index`). Required if the batch has real samples.
            - `"soft_labels"` (`torch.Tensor`, `(B, K, H, W)` float): probabilities `q`; only generated rows are
              read (real rows may hold anything finite, e.g. zeros). Required for generated samples in `"hard"`
              and `"soft"` modes.
            - `"pair_weights"` (`torch.Tensor`, `(B,)` float, *optional*): non-negative weights of the generated
              samples' losses (real rows are not read).
        mode (`str`, *optional*, defaults to `"soft"`): one of `"real"`, `"hard"`, `"soft"` (see module doc).
        kd_temperature (`float`, *optional*, defaults to 1.0): KD temperature `tau > 0` (`"soft"` mode only).
        real_weight (`float`, *optional*, defaults to 1.0): multiplier of the real pixels' CE.
        generated_weight (`float`, *optional*, defaults to 1.0): multiplier of the generated pixels' loss.
        ignore_index (`int`, *optional*, defaults to 255): label value of unlabelled real pixels.

    Returns:
        [`DistillationLossOutput`]: the total loss and its components. Components with no sample are zero but
        stay in the autograd graph (so every process of a distributed run back-propagates through the same
        parameters).
    """
    if mode not in DISTILLATION_MODES:
        raise ValueError(f"`mode` must be one of {DISTILLATION_MODES}, got {mode!r}.")
    _check_temperature(kd_temperature)
    for name, weight in (("real_weight", real_weight), ("generated_weight", generated_weight)):
        if weight < 0:
            raise ValueError(f"`{name}` must be >= 0, got {weight}.")
    if student_logits.dim() != 4:
        raise ValueError(f"`student_logits` must have shape (B, K, h, w), got {tuple(student_logits.shape)}.")
    batch_size, num_classes = student_logits.shape[:2]
    device = student_logits.device

    labels, soft_labels = _get(batch, "labels"), _get(batch, "soft_labels")
    is_generated = _get(batch, "is_generated")
    if is_generated is None:
        if labels is not None and soft_labels is not None:
            raise ValueError("`batch` holds both 'labels' and 'soft_labels': it must also hold 'is_generated'.")
        if labels is None and soft_labels is None:
            raise ValueError("`batch` must hold 'labels' and/or 'soft_labels'.")
        is_generated = torch.full((batch_size,), labels is None, dtype=torch.bool, device=device)
    is_generated = torch.as_tensor(is_generated, device=device)
    if is_generated.shape != (batch_size,) or is_generated.dtype != torch.bool:
        raise ValueError(
            f"`is_generated` must be a bool tensor of shape ({batch_size},), got {is_generated.dtype} "
            f"{tuple(is_generated.shape)}."
        )
    is_real = ~is_generated
    num_generated = int(is_generated.sum())
    num_real = batch_size - num_generated
    use_generated = mode != "real" and num_generated > 0

    if num_real > 0 and labels is None:
        raise ValueError("`batch` has real samples but no 'labels'.")
    if use_generated and soft_labels is None:
        raise ValueError(f"`batch` has generated samples but no 'soft_labels' (needed in mode {mode!r}).")
    if labels is not None and (labels.dim() != 3 or labels.shape[0] != batch_size):
        raise ValueError(f"`labels` must have shape ({batch_size}, H, W), got {tuple(labels.shape)}.")
    if soft_labels is not None:
        if soft_labels.dim() != 4 or soft_labels.shape[:2] != (batch_size, num_classes):
            raise ValueError(
                f"`soft_labels` must have shape ({batch_size}, {num_classes}, H, W), got {tuple(soft_labels.shape)}."
            )
        if labels is not None and labels.shape[-2:] != soft_labels.shape[-2:]:
            raise ValueError(
                f"`labels` {tuple(labels.shape)} and `soft_labels` {tuple(soft_labels.shape)} must share (H, W)."
            )
    size = (labels if labels is not None else soft_labels).shape[-2:]
    logits = upsample_logits(student_logits, size).float()
    zero = logits.sum() * 0.0  # keeps empty components in the graph

    # Real samples: cross-entropy on the hard mask; generated rows and ignored pixels masked out.
    if num_real > 0:
        real_labels = torch.where(is_real[:, None, None], labels.long(), torch.full_like(labels.long(), ignore_index))
        real_valid = real_labels != ignore_index
        real_pixel_loss = F.cross_entropy(logits, real_labels, ignore_index=ignore_index, reduction="none")
        real_sum = real_pixel_loss.sum()  # ignored pixels are exactly 0
        num_real_pixels = int(real_valid.sum())
    else:
        real_sum, num_real_pixels = zero, 0

    # Generated samples: soft target q ("soft") or onehot(argmax q) ("hard"), via the same KL.
    if use_generated:
        generated_logits, generated_q = logits[is_generated], soft_labels[is_generated]
        _check_soft_labels(generated_q, generated_logits)
        if mode == "hard":
            target = F.one_hot(generated_q.argmax(dim=1), num_classes).permute(0, 3, 1, 2)
            temperature = 1.0
        else:
            target, temperature = generated_q, kd_temperature
        generated_pixel_loss = _kd_per_pixel(generated_logits, target, temperature)
        pair_weights = _get(batch, "pair_weights")
        if pair_weights is not None:
            pair_weights = torch.as_tensor(pair_weights, device=device).float()
            if pair_weights.shape != (batch_size,) or bool((pair_weights[is_generated] < 0).any()):
                raise ValueError(f"`pair_weights` must be ({batch_size},) non-negative weights, got "
                                 f"{tuple(pair_weights.shape)} {pair_weights.tolist()}.")
            generated_pixel_loss = generated_pixel_loss * pair_weights[is_generated][:, None, None]
        generated_sum = generated_pixel_loss.sum()
        num_generated_pixels = generated_pixel_loss.numel()
    else:
        generated_sum, num_generated_pixels = zero, 0

    loss_real = real_sum / max(num_real_pixels, 1)
    loss_generated = generated_sum / max(num_generated_pixels, 1)
    total = (real_weight * real_sum + generated_weight * generated_sum) / max(
        num_real_pixels + num_generated_pixels, 1
    )
    return DistillationLossOutput(
        loss=total,
        loss_real=loss_real,
        loss_generated=loss_generated,
        num_real=num_real,
        num_generated=num_generated,
    )
