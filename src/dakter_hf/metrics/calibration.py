"""Calibration of per-pixel class probabilities against hard ground truth, over a whole split.

Definitions (shared by [`CalibrationMetrics`], [`expected_calibration_error`] and [`negative_log_likelihood`]);
every counted pixel weighs the same, and pixels whose label is `ignore_index` are not counted:

* **expected calibration error** (ECE; Naeini et al. 2015, Guo et al. 2017), top-label, with `M` equal-width bins.
  For each pixel `i`, the *confidence* is `c_i = max_k q_ik` and the *prediction* `argmax_k q_ik` (ties: the lowest
  class index). Pixel `i` falls into bin `m` (1-based) when `c_i` lies in `((m - 1) / M, m / M]` (bin 1 also takes
  `c_i = 0`). With `n` counted pixels, `B_m` the pixels of bin `m`, `acc(B_m)` the fraction of them whose prediction
  equals the label and `conf(B_m)` their mean confidence:

      ECE = sum_m |B_m| / n * |acc(B_m) - conf(B_m)|        (empty bins contribute 0)

  It lies in [0, 1]; 0 means "of the pixels predicted with confidence c, a fraction c is right", at every c.
* **argmax ECE**: the ECE of the one-hot encoding of the same predictions (every confidence is 1, all pixels fall in
  the last bin), which equals `1 - pixel accuracy`. It is what a hard label would claim: soft labels are better
  calibrated than their own argmax when their ECE is lower.
* **negative log-likelihood** (NLL): the mean over counted pixels of `-log(max(q_{i, y_i}, eps))`, natural log, with
  `y_i` the true class; `eps` (default `1e-12`) keeps a zero probability finite (it then costs `-log(eps)` = 27.6).

Statistics are sums (per-bin pixel counts, confidence sums, correct counts; the NLL sum), so batches and processes
add up exactly before any ratio is taken, as for [`SegmentationMetrics`].
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np
import torch

from .segmentation import _as_tensor


if TYPE_CHECKING:  # pragma: no cover
    from accelerate import Accelerator


__all__ = ["CalibrationMetrics", "expected_calibration_error", "fit_temperature", "negative_log_likelihood",
           "temper_probabilities"]

#: Default number of equal-width confidence bins (Guo et al. 2017 use 15).
DEFAULT_NUM_BINS = 15
#: Default floor of the true-class probability in the NLL.
DEFAULT_NLL_EPS = 1e-12
#: How far the class probabilities of a pixel may sum from 1.
SUM_TOLERANCE = 1e-3
#: Default search interval of [`fit_temperature`].
DEFAULT_TEMPERATURE_BOUNDS = (0.01, 100.0)


class CalibrationMetrics:
    """Accumulates calibration statistics of class probabilities over a split: ECE, argmax ECE and NLL (see the
    module docstring for the exact definitions).

    Example:

    ```python
    >>> calibration = CalibrationMetrics(num_classes=2)
    >>> for probabilities, labels in batches:  # (B, K, H, W) probabilities, (B, H, W) class indices
    ...     calibration.update(probabilities, labels)
    >>> results = calibration.compute()
    >>> results["ece"], results["argmax_ece"], results["nll"]
    ```

    Args:
        num_classes (`int`): number of classes K.
        num_bins (`int`, *optional*, defaults to 15): equal-width confidence bins M.
        ignore_index (`int`, *optional*, defaults to 255): label value whose pixels are not counted; `None` counts
            every pixel.
        eps (`float`, *optional*, defaults to 1e-12): floor of the true-class probability in the NLL.
    """

    def __init__(self, num_classes: int, num_bins: int = DEFAULT_NUM_BINS, ignore_index: int | None = 255,
                 eps: float = DEFAULT_NLL_EPS) -> None:
        if isinstance(num_classes, bool) or not isinstance(num_classes, int) or num_classes < 2:
            raise ValueError(f"`num_classes` must be an integer >= 2, got {num_classes!r}.")
        if isinstance(num_bins, bool) or not isinstance(num_bins, int) or num_bins < 1:
            raise ValueError(f"`num_bins` must be a positive integer, got {num_bins!r}.")
        if not 0.0 < eps < 1.0:
            raise ValueError(f"`eps` must lie in (0, 1), got {eps!r}.")
        self.num_classes = num_classes
        self.num_bins = num_bins
        self.ignore_index = ignore_index
        self.eps = eps
        # rows: pixel count, confidence sum, correct count per bin; then the NLL sum in `self.nll_sum`
        self.bins = torch.zeros(3, num_bins, dtype=torch.float64)
        self.nll_sum = torch.zeros((), dtype=torch.float64)

    def reset(self) -> None:
        """Zero the accumulated statistics."""
        self.bins.zero_()
        self.nll_sum.zero_()

    def _check(self, probabilities: torch.Tensor, labels: torch.Tensor) -> None:
        shape = tuple(probabilities.shape)
        if probabilities.dim() != 4 or shape[1] != self.num_classes:
            raise ValueError(f"`probabilities` must have shape (B, {self.num_classes}, H, W), got {shape}.")
        if tuple(labels.shape) != (shape[0], *shape[2:]):
            raise ValueError(f"`labels` must have shape {(shape[0], *shape[2:])} to match `probabilities` {shape}, "
                             f"got {tuple(labels.shape)}.")
        if not probabilities.dtype.is_floating_point:
            raise ValueError(f"`probabilities` must be floats, got dtype {probabilities.dtype}.")
        if labels.dtype.is_floating_point or labels.dtype.is_complex:
            raise ValueError(f"`labels` must hold integer class indices, got dtype {labels.dtype}.")
        if not torch.isfinite(probabilities).all() or (probabilities < 0).any() or (probabilities > 1).any():
            raise ValueError("`probabilities` must be finite values in [0, 1].")
        deviation = float((probabilities.sum(dim=1) - 1).abs().max()) if probabilities.numel() else 0.0
        if deviation > SUM_TOLERANCE:
            raise ValueError(f"`probabilities` must sum to 1 over the class dimension (dim 1); a pixel is off by "
                             f"{deviation:.3g} (tolerance {SUM_TOLERANCE}).")

    def counted_pixels(self, probabilities: torch.Tensor | np.ndarray,
                       labels: torch.Tensor | np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
        """Checked `(B, K, H, W)` probabilities and `(B, H, W)` labels as `(N, K)` float64 probabilities and `(N,)`
        int64 labels of the counted pixels (those whose label is not `ignore_index`), on the CPU."""
        probabilities = _as_tensor(probabilities, "probabilities")
        labels = _as_tensor(labels, "labels")
        self._check(probabilities, labels)
        probabilities = probabilities.detach().to("cpu", torch.float64).movedim(1, -1).reshape(-1, self.num_classes)
        labels = labels.detach().to("cpu", torch.int64).reshape(-1)
        if self.ignore_index is not None:
            keep = labels != self.ignore_index
            probabilities, labels = probabilities[keep], labels[keep]
        if labels.numel() and (int(labels.min()) < 0 or int(labels.max()) >= self.num_classes):
            raise ValueError(f"`labels` values must lie in [0, {self.num_classes}) (or equal ignore_index="
                             f"{self.ignore_index}), got range [{int(labels.min())}, {int(labels.max())}].")
        return probabilities, labels

    @torch.no_grad()
    def update(self, probabilities: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray) -> None:
        """Add a batch.

        Args:
            probabilities (`torch.Tensor` or `np.ndarray`): `(B, K, H, W)` class probabilities (each pixel sums
                to 1).
            labels (`torch.Tensor` or `np.ndarray`): `(B, H, W)` true class indices, `ignore_index` for unlabelled
                pixels.
        """
        probabilities, labels = self.counted_pixels(probabilities, labels)
        confidence, prediction = probabilities.max(dim=1)
        bin_index = (torch.ceil(confidence * self.num_bins).long() - 1).clamp(0, self.num_bins - 1)
        correct = (prediction == labels).double()
        self.bins[0] += torch.bincount(bin_index, minlength=self.num_bins).double()
        self.bins[1] += torch.bincount(bin_index, weights=confidence, minlength=self.num_bins)
        self.bins[2] += torch.bincount(bin_index, weights=correct, minlength=self.num_bins)
        true_probability = probabilities.gather(1, labels[:, None])[:, 0]
        self.nll_sum += -torch.log(true_probability.clamp_min(self.eps)).sum()

    def reduce(self, accelerator: Accelerator | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The `(3, M)` bin statistics and the NLL sum, summed over processes (every process must call it); the local
        ones when `accelerator` is `None` or single-process."""
        if accelerator is None or getattr(accelerator, "num_processes", 1) <= 1:
            return self.bins.clone(), self.nll_sum.clone()
        packed = torch.cat([self.bins.reshape(-1), self.nll_sum.reshape(1)]).to(accelerator.device)
        packed = accelerator.reduce(packed, reduction="sum").to("cpu", torch.float64)
        return packed[:-1].reshape(3, self.num_bins), packed[-1]

    def compute(self, accelerator: Accelerator | None = None) -> dict[str, float | list[float]]:
        """Calibration of everything accumulated so far (summed over processes when `accelerator` is given).

        Returns:
            `dict`: `ece`, `argmax_ece`, `nll`, `pixel_accuracy` (NaN when no pixel was counted), `num_pixels`,
            `num_bins`, and the reliability diagram's data per bin: `bin_counts`, `bin_confidence` and
            `bin_accuracy` (NaN for empty bins).
        """
        bins, nll_sum = self.reduce(accelerator)
        counts, confidence_sums, correct_sums = bins
        total = float(counts.sum())
        nonempty = counts > 0
        bin_confidence = torch.full_like(counts, math.nan)
        bin_accuracy = torch.full_like(counts, math.nan)
        bin_confidence[nonempty] = confidence_sums[nonempty] / counts[nonempty]
        bin_accuracy[nonempty] = correct_sums[nonempty] / counts[nonempty]
        if total > 0:
            ece = float((correct_sums - confidence_sums).abs().sum() / total)
            accuracy = float(correct_sums.sum() / total)
            nll = float(nll_sum / total)
        else:
            ece = accuracy = nll = math.nan
        return {"ece": ece, "argmax_ece": 1.0 - accuracy, "nll": nll, "pixel_accuracy": accuracy,
                "num_pixels": int(total), "num_bins": self.num_bins, "bin_counts": counts.long().tolist(),
                "bin_confidence": bin_confidence.tolist(), "bin_accuracy": bin_accuracy.tolist()}


def _compute(probabilities, labels, num_bins, ignore_index, eps=DEFAULT_NLL_EPS) -> dict:
    probabilities = _as_tensor(probabilities, "probabilities")
    if probabilities.dim() != 4:
        raise ValueError(f"`probabilities` must have shape (B, K, H, W), got {tuple(probabilities.shape)}.")
    metrics = CalibrationMetrics(probabilities.shape[1], num_bins, ignore_index, eps)
    metrics.update(probabilities, labels)
    return metrics.compute()


def expected_calibration_error(probabilities: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                               num_bins: int = DEFAULT_NUM_BINS, ignore_index: int | None = 255) -> float:
    """Top-label expected calibration error with `num_bins` equal-width bins (see the module docstring).

    Args:
        probabilities (`torch.Tensor` or `np.ndarray`): `(B, K, H, W)` class probabilities; a one-hot encoding gives
            the argmax ECE, `1 - pixel accuracy`.
        labels (`torch.Tensor` or `np.ndarray`): `(B, H, W)` true class indices.
        num_bins (`int`, *optional*, defaults to 15): equal-width confidence bins.
        ignore_index (`int`, *optional*, defaults to 255): label value whose pixels are not counted.

    Returns:
        `float`: the ECE in [0, 1] (NaN when no pixel is counted).
    """
    return _compute(probabilities, labels, num_bins, ignore_index)["ece"]


def negative_log_likelihood(probabilities: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                            ignore_index: int | None = 255, eps: float = DEFAULT_NLL_EPS) -> float:
    """Mean per-pixel negative log-likelihood (natural log) of the true classes (see the module docstring).

    Args:
        probabilities (`torch.Tensor` or `np.ndarray`): `(B, K, H, W)` class probabilities.
        labels (`torch.Tensor` or `np.ndarray`): `(B, H, W)` true class indices.
        ignore_index (`int`, *optional*, defaults to 255): label value whose pixels are not counted.
        eps (`float`, *optional*, defaults to 1e-12): floor of the true-class probability.

    Returns:
        `float`: the mean NLL in nats (NaN when no pixel is counted).
    """
    return _compute(probabilities, labels, DEFAULT_NUM_BINS, ignore_index, eps)["nll"]


def _log_probabilities(probabilities: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """`log p` in float64, with a probability that underflowed to 0 in `dtype` taken as that dtype's smallest normal
    number: its logit was at least ~87 (float32) below the top one, and that is as much as the stored value says."""
    floor = torch.finfo(dtype).tiny if dtype.is_floating_point else torch.finfo(torch.float32).tiny
    return torch.log(probabilities.to(torch.float64).clamp_min(floor))


def temper_probabilities(probabilities: torch.Tensor | np.ndarray, temperature: float) -> torch.Tensor:
    """`softmax(log p / temperature)` over the class dimension (dim 1) of `(B, K, H, W)` probabilities `p`: for
    probabilities that are a softmax of logits, the same as `softmax(logits / temperature)` (a probability that
    underflowed to 0 counts as the dtype's smallest normal number). Returned in the input's floating dtype (float32
    for other dtypes)."""
    probabilities = _as_tensor(probabilities, "probabilities")
    if not temperature > 0:
        raise ValueError(f"`temperature` must be > 0, got {temperature}.")
    dtype = probabilities.dtype if probabilities.dtype.is_floating_point else torch.float32
    log_p = _log_probabilities(probabilities, probabilities.dtype)
    return torch.softmax(log_p / float(temperature), dim=1).to(dtype)


@torch.no_grad()
def fit_temperature(probabilities: torch.Tensor | np.ndarray, labels: torch.Tensor | np.ndarray,
                    ignore_index: int | None = 255, bounds: tuple[float, float] = DEFAULT_TEMPERATURE_BOUNDS,
                    tolerance: float = 1e-4) -> float:
    """The temperature T that minimises the mean NLL of `softmax(log p / T)` (temperature scaling, Guo et al. 2017)
    against hard labels, by golden-section search over log T in `bounds`.

    The NLL is convex in 1 / T, so it has one minimum along log T and the search finds it (or the bound it lies
    beyond). T > 1 softens over-confident probabilities, T < 1 sharpens under-confident ones.

    Args:
        probabilities (`torch.Tensor` or `np.ndarray`): `(B, K, H, W)` class probabilities (each pixel sums to 1), as
            computed with temperature 1.
        labels (`torch.Tensor` or `np.ndarray`): `(B, H, W)` true class indices.
        ignore_index (`int`, *optional*, defaults to 255): label value whose pixels are not counted.
        bounds (`tuple[float, float]`, *optional*, defaults to `(0.01, 100.0)`): the search interval of T.
        tolerance (`float`, *optional*, defaults to 1e-4): width in log T at which the search stops (a relative
            precision of T).

    Returns:
        `float`: the fitted temperature.
    """
    low, high = (float(b) for b in bounds)
    if not 0 < low < high or not math.isfinite(high):
        raise ValueError(f"`bounds` must be two finite temperatures 0 < low < high, got {bounds!r}.")
    if not tolerance > 0:
        raise ValueError(f"`tolerance` must be > 0, got {tolerance!r}.")
    probabilities = _as_tensor(probabilities, "probabilities")
    if probabilities.dim() != 4:
        raise ValueError(f"`probabilities` must have shape (B, K, H, W), got {tuple(probabilities.shape)}.")
    metrics = CalibrationMetrics(probabilities.shape[1], ignore_index=ignore_index)
    counted, labels = metrics.counted_pixels(probabilities, labels)
    if not labels.numel():
        raise ValueError("No pixel is counted (every label is `ignore_index`): nothing to fit a temperature on.")
    log_p = _log_probabilities(counted, probabilities.dtype)
    # -log softmax(l / T)_y = logsumexp((l - l_y) / T): one pass per evaluated temperature
    log_p = log_p - log_p.gather(1, labels[:, None])

    def nll(log_temperature: float) -> float:
        return float(torch.logsumexp(log_p / math.exp(log_temperature), dim=1).mean())

    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2
    c, d = b - ratio * (b - a), a + ratio * (b - a)
    nll_c, nll_d = nll(c), nll(d)
    while b - a > tolerance:
        if nll_c <= nll_d:
            b, d, nll_d = d, c, nll_c
            c = b - ratio * (b - a)
            nll_c = nll(c)
        else:
            a, c, nll_c = c, d, nll_d
            d = a + ratio * (b - a)
            nll_d = nll(d)
    return math.exp((a + b) / 2)
