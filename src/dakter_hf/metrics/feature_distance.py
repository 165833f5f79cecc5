"""The Fréchet distance between two sets of feature vectors (the statistic behind FID): how far apart two image
distributions are in some network's features, from the mean and covariance of each set.

    d² = |μ_a - μ_b|² + Tr(Σ_a + Σ_b - 2 (Σ_a^½ Σ_b Σ_a^½)^½)

FID uses an ImageNet Inception network, which needs a download and knows nothing of SAR; `dakter_hf` takes the encoder
features of a segmentation model trained on the real pairs instead ([`dakter_hf.generation.measure_sample_realism`]).
The distance depends on the feature extractor and on the number of images (it is biased upwards for small sets), so
only distances from one extractor at equal set sizes compare; compare with the distance between two real sets of
the same sizes.
"""

from __future__ import annotations

import numpy as np


__all__ = ["frechet_distance"]


def frechet_distance(features_a, features_b) -> float:
    """
    The squared Fréchet distance between Gaussians fitted to two sets of feature vectors.

    Args:
        features_a, features_b (`array-like` of shape `(N, D)` and `(M, D)`): one feature vector per image; each set
            needs at least two rows, and both the same width `D`.

    Returns:
        `float`: d² >= 0 (0 for identical sets).
    """
    a, b = _check_features(features_a, "features_a"), _check_features(features_b, "features_b")
    if a.shape[1] != b.shape[1]:
        raise ValueError(f"`features_a` and `features_b` must have the same width, got {a.shape[1]} and {b.shape[1]}.")
    mean_term = float(np.sum((a.mean(0) - b.mean(0)) ** 2))
    cov_a, cov_b = (np.atleast_2d(np.cov(x, rowvar=False, ddof=1)) for x in (a, b))
    # Tr((Σ_a^½ Σ_b Σ_a^½)^½) from symmetric eigen-decompositions: real and stable for rank-deficient covariances.
    values, vectors = np.linalg.eigh(cov_a)
    root_a = (vectors * np.sqrt(np.clip(values, 0.0, None))) @ vectors.T
    cross = np.linalg.eigvalsh(root_a @ cov_b @ root_a)
    trace_term = float(np.trace(cov_a) + np.trace(cov_b) - 2.0 * np.sqrt(np.clip(cross, 0.0, None)).sum())
    return max(mean_term + trace_term, 0.0)


def _check_features(features, name: str) -> np.ndarray:
    array = np.asarray(features, dtype=np.float64)
    if array.ndim != 2 or array.shape[0] < 2 or array.shape[1] < 1:
        raise ValueError(f"`{name}` must be a (N, D) array with N >= 2 feature vectors, got shape {array.shape}.")
    if not np.isfinite(array).all():
        raise ValueError(f"`{name}` holds non-finite values.")
    return array
