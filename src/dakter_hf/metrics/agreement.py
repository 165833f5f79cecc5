"""Agreement of two soft labels of the same image, one number per image: how well a generated pair's own label agrees
with what a labeller (the generator's segmentation pipeline, or a student trained on real pairs) sees in its image.

Definitions, for two `(K, H, W)` per-pixel class distributions `p` and `q` of one image (each pixel sums to 1):

* **soft agreement** = `1 - mean over pixels of TV(p_x, q_x)`, with the total-variation distance
  `TV(p_x, q_x) = 1/2 * sum_k |p_xk - q_xk|` in [0, 1]. It is 1 when the two labels are identical, 0 when every pixel
  puts all its mass on classes the other one gives probability 0; with one-hot labels it is the pixel agreement of
  the two masks. This is the pair-quality score (`pair_quality`) a generated dataset stores.
* **argmax mIoU**: the mean, over the classes present in either argmax mask, of the IoU of the two masks' pixels of
  that class (`argmax` ties go to the lower class index). 1 for identical masks; it weighs a small class (an oil
  spill) as much as the background, which the pixel-level agreement does not.
"""

from __future__ import annotations

import torch


__all__ = ["argmax_mean_iou", "soft_label_agreement"]


def _check_pair(p: torch.Tensor, q: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    p, q = torch.as_tensor(p), torch.as_tensor(q)
    p, q = (x[None] if x.dim() == 3 else x for x in (p, q))
    if p.dim() != 4 or p.shape != q.shape:
        raise ValueError(f"soft labels must both have shape (B, K, H, W) (or (K, H, W)), got {tuple(p.shape)} and "
                         f"{tuple(q.shape)}.")
    return p.float(), q.float()


def soft_label_agreement(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """`1 - mean_pixels TV(p, q)` per image (see the module docstring): `(B,)` values in [0, 1].

    Args:
        p, q (`torch.Tensor`): `(B, K, H, W)` (or `(K, H, W)`) class probabilities of the same images.
    """
    p, q = _check_pair(p, q)
    total_variation = 0.5 * (p - q).abs().sum(dim=1)  # (B, H, W)
    return (1.0 - total_variation.flatten(1).mean(dim=1)).clamp(0.0, 1.0)


def argmax_mean_iou(p: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """The mIoU of the argmax masks of `p` and `q` per image, over the classes present in either (see the module
    docstring): `(B,)` values in [0, 1].

    Args:
        p, q (`torch.Tensor`): `(B, K, H, W)` (or `(K, H, W)`) class probabilities (or scores) of the same images.
    """
    p, q = _check_pair(p, q)
    num_classes = p.shape[1]
    a, b = p.argmax(dim=1).flatten(1), q.argmax(dim=1).flatten(1)  # (B, H*W)
    classes = torch.arange(num_classes)[None, :, None]
    in_a, in_b = a[:, None, :] == classes, b[:, None, :] == classes  # (B, K, H*W)
    intersection = (in_a & in_b).sum(dim=2).float()
    union = (in_a | in_b).sum(dim=2).float()
    present = union > 0  # every image has at least one class present
    iou = torch.where(present, intersection / union.clamp_min(1), torch.zeros_like(union))
    return iou.sum(dim=1) / present.sum(dim=1)
