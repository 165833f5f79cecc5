"""A procedural SAR oil-spill scene simulator: the built-in default dataset.

**A stand-in for development, tests and demos — not a substitute for real data.** The scenes mimic a few
well-known properties of C-band SAR over the sea (multiplicative speckle, wind-driven backscatter gradients,
oil dampening capillary waves, look-alikes from low wind, bright ships) so the whole pipeline can be
exercised without downloading anything; numbers measured on them say nothing about real SAR performance.
"""

import zlib
from typing import Dict, Tuple

import numpy as np
from datasets import Dataset

from .schema import encode_png, rows_to_dataset
from .transforms import Resolution, as_hw


SIMULATED_ID2LABEL_5: Dict[int, str] = {0: "sea", 1: "oil_spill", 2: "look_alike", 3: "ship", 4: "land"}
SIMULATED_ID2LABEL_2: Dict[int, str] = {0: "sea", 1: "oil_spill"}
_SPLIT_CODES = {"train": 0, "validation": 1, "test": 2}


def _split_code(split: str) -> int:
    return _SPLIT_CODES.get(split, 3 + zlib.crc32(split.encode("utf-8")))


def _smooth_field(rng: np.random.Generator, grid: Tuple[np.ndarray, np.ndarray], max_freq: float, n: int = 6):
    """Zero-mean, unit-ish-std random field: a sum of ``n`` random plane waves up to ``max_freq`` cycles/scene."""
    yy, xx = grid
    freq = rng.uniform(-max_freq, max_freq, size=(2, n))
    phase = rng.uniform(0.0, 2.0 * np.pi, size=n)
    amp = rng.uniform(0.5, 1.0, size=n)
    waves = np.cos(2.0 * np.pi * (xx[..., None] * freq[0] + yy[..., None] * freq[1]) + phase)
    return waves @ (amp * np.sqrt(2.0 / np.sum(amp**2)))


def _blob(rng, grid, center, length, width, angle, feather, wobble, max_freq, bend=0.0, taper=0.0):
    """Soft membership (0..1) of a rotated, bent, tapered ellipse with a noisy boundary."""
    yy, xx = grid
    dx, dy = xx - center[0], yy - center[1]
    u = np.cos(angle) * dx + np.sin(angle) * dy
    v = -np.sin(angle) * dx + np.cos(angle) * dy - bend * u**2
    half_width = width * np.clip(1.0 - taper * (u / length + 1.0) / 2.0, 0.2, None)
    distance = np.sqrt((u / length) ** 2 + (v / half_width) ** 2)
    distance = distance * (1.0 + wobble * _smooth_field(rng, grid, max_freq))
    return 1.0 / (1.0 + np.exp(np.clip((distance - 1.0) / feather, -50.0, 50.0)))


def simulate_scene(
    rng: np.random.Generator, size: Resolution = 64, num_classes: int = 5
) -> Tuple[np.ndarray, np.ndarray]:
    """Draw one scene (see :func:`simulate_sar_scenes`).

    Args:
        rng (`np.random.Generator`): the scene's random generator.
        size (`int` or `(height, width)`): scene size in pixels.
        num_classes (`int`): 5 (sea, oil_spill, look_alike, ship, land) or 2 (sea, oil_spill).

    Returns:
        `Tuple[np.ndarray, np.ndarray]`: ``uint8`` image ``(H, W)`` and ``uint8`` mask ``(H, W)``.
    """
    if num_classes not in (2, 5):
        raise ValueError(f"num_classes must be 2 or 5, got {num_classes}")
    height, width = as_hw(size, "size")
    scale = float(max(height, width))
    grid = np.mgrid[0:height, 0:width].astype(np.float64) / scale  # (yy, xx) in scene units
    grid = (grid[0] + 0.5 / scale, grid[1] + 0.5 / scale)
    yy, xx = grid
    extent = (width / scale, height / scale)
    label = np.zeros((height, width), dtype=np.uint8)

    # Sea clutter: calibration level, wind-speed gradient and slow wind-streak modulation.
    level = rng.uniform(0.7, 1.3)
    wind_dir = rng.uniform(0.0, 2.0 * np.pi)
    ramp = (np.cos(wind_dir) * (xx - extent[0] / 2) + np.sin(wind_dir) * (yy - extent[1] / 2)) * 2.0
    sigma = level * (1.0 + rng.uniform(0.0, 0.5) * ramp) * np.exp(0.2 * _smooth_field(rng, grid, 2.5))
    sigma = np.clip(sigma, 0.15 * level, None)

    # Land: a textured, bright region behind a wiggly coastline (in ~30% of scenes).
    land = np.zeros((height, width), dtype=bool)
    if rng.random() < 0.3:
        coast_dir = rng.uniform(0.0, 2.0 * np.pi)
        p = np.cos(coast_dir) * (xx - extent[0] / 2) + np.sin(coast_dir) * (yy - extent[1] / 2)
        land = p + 0.06 * _smooth_field(rng, grid, 4.0) > rng.uniform(0.15, 0.35)
        texture = np.exp(0.45 * _smooth_field(rng, grid, 9.0, n=10) + 0.25 * _smooth_field(rng, grid, 3.0))
        sigma = np.where(land, level * rng.uniform(1.8, 2.8) * texture, sigma)
    sea = ~land

    # Look-alikes: large, rounded, diffuse, moderately dark low-wind areas.
    for _ in range(rng.choice(3, p=[0.4, 0.4, 0.2])):
        length = rng.uniform(0.10, 0.25)
        soft = _blob(
            rng, grid, center=rng.uniform(0.1, 0.9, 2) * extent, length=length, width=length * rng.uniform(0.5, 1.0),
            angle=rng.uniform(0, np.pi), feather=0.18, wobble=0.25, max_freq=3.0,
        ) * sea
        sigma = sigma * (1.0 - (1.0 - rng.uniform(0.30, 0.60)) * soft)
        label[soft > 0.5] = 2

    # Oil slicks: elongated, bent, tapered, sharper-edged and darker (dampened capillary waves).
    for _ in range(rng.choice(4, p=[0.25, 0.4, 0.25, 0.1])):
        length = rng.uniform(0.12, 0.35)
        soft = _blob(
            rng, grid, center=rng.uniform(0.15, 0.85, 2) * extent, length=length,
            width=length * rng.uniform(0.08, 0.3), angle=rng.uniform(0, np.pi), feather=0.06, wobble=0.15,
            max_freq=6.0, bend=rng.uniform(-2.0, 2.0), taper=rng.uniform(0.0, 0.8),
        ) * sea
        sigma = sigma * (1.0 - (1.0 - rng.uniform(0.12, 0.40)) * soft)
        label[soft > 0.5] = 1

    # Ships: small bright hulls with a dark turbulent wake behind them (the wake stays "sea").
    ship = np.zeros((height, width), dtype=bool)
    for _ in range(rng.choice(4, p=[0.5, 0.25, 0.15, 0.1])):
        centre = rng.uniform(0.05, 0.95, 2) * extent
        iy, ix = min(int(centre[1] * scale), height - 1), min(int(centre[0] * scale), width - 1)
        if land[iy, ix]:
            continue
        heading = rng.uniform(0.0, 2.0 * np.pi)
        hull_len = max(2.0, scale * rng.uniform(0.03, 0.06)) / scale
        hull_w = max(1.2, hull_len * scale / 3.0) / scale
        u = np.cos(heading) * (xx - centre[0]) + np.sin(heading) * (yy - centre[1])
        v = -np.sin(heading) * (xx - centre[0]) + np.cos(heading) * (yy - centre[1])
        hull = (np.abs(u) <= hull_len / 2) & (np.abs(v) <= hull_w / 2) & sea
        wake_len = hull_len * rng.uniform(3.0, 8.0)
        wake = (u < -hull_len / 2) & (u > -hull_len / 2 - wake_len) & (np.abs(v) <= hull_w / 2 + 0.1 * -u) & sea
        sigma = np.where(wake & ~hull, sigma * 0.6, sigma)
        sigma = np.where(hull, level * rng.uniform(8.0, 20.0), sigma)
        ship |= hull

    label[land] = 4
    label[ship] = 3
    if num_classes == 2:
        label = (label == 1).astype(np.uint8)

    looks = rng.integers(2, 6)
    intensity = sigma * rng.gamma(looks, 1.0 / looks, size=sigma.shape)
    amplitude = np.sqrt(intensity / level)
    image = np.clip(np.round(amplitude * 110.0), 0, 255).astype(np.uint8)
    return image, label


def simulate_sar_scenes(
    num_scenes: int,
    size: Resolution = 64,
    seed: int = 0,
    num_classes: int = 5,
    split: str = "train",
    start: int = 0,
) -> Dataset:
    """Generate synthetic SAR oil-spill scenes with pixel labels, on the fly.

    This is a stand-in for development, tests and demos, **not a substitute for real data**.

    Each scene draws, in linear intensity: sea clutter with a random calibration level, a wind-speed gradient
    and slow wind streaks; in ~30% of scenes, bright textured land behind a wiggly coastline; 0–2
    look-alikes (large, rounded, diffuse, moderately dark low-wind areas); 0–3 oil slicks (elongated, bent,
    tapered, sharper-edged and darker); 0–3 bright ships with a dark wake. The result is multiplied by
    gamma-distributed speckle (2–5 looks, mean 1) and stored as 8-bit amplitude. Labels are the drawn
    objects thresholded at half membership, so oil pixels are dark, ships bright, land textured; look-alikes
    overlap oil in brightness and differ mostly by shape and edges, which keeps the task non-trivial.

    With ``num_classes=2`` (SOS-like: 0 sea/background, 1 oil_spill) the same scenes are drawn and
    look-alikes, ships and land are labelled background.

    Determinism: scene ``i`` is drawn from ``numpy.random.default_rng([seed, split_code, i])`` and depends
    only on ``(seed, split, i)`` — not on ``num_scenes`` — so any subset or range can be regenerated, and
    different splits never share scenes.

    Args:
        num_scenes (`int`): number of scenes.
        size (`int` or `(height, width)`): scene size in pixels.
        seed (`int`): non-negative seed.
        num_classes (`int`): 5 (sea, oil_spill, look_alike, ship, land) or 2 (sea, oil_spill).
        split (`str`): split name written to the rows and mixed into the seed (``"train"``, ``"validation"``,
            ``"test"`` or any other string).
        start (`int`): index of the first scene (scenes ``start .. start + num_scenes - 1``).

    Returns:
        `Dataset` with the shared schema (``source="simulated"``, ``sensor=""``); ``get_id2label(ds)`` gives
        the class names.
    """
    if num_scenes < 0:
        raise ValueError(f"num_scenes must be >= 0, got {num_scenes}")
    if seed < 0 or start < 0:
        raise ValueError(f"seed and start must be >= 0, got seed={seed}, start={start}")
    if num_classes not in (2, 5):
        raise ValueError(f"num_classes must be 2 or 5, got {num_classes}")
    height, width = as_hw(size, "size")
    code = _split_code(split)
    rows = {name: [] for name in ("image", "mask", "id", "scene_id", "source", "sensor", "split", "patch_box")}
    for index in range(start, start + num_scenes):
        image, mask = simulate_scene(np.random.default_rng([seed, code, index]), (height, width), num_classes)
        scene_id = f"sim-{split}-s{seed}-{index:06d}"
        rows["image"].append({"bytes": encode_png(image), "path": None})
        rows["mask"].append({"bytes": encode_png(mask), "path": None})
        rows["id"].append(scene_id)
        rows["scene_id"].append(scene_id)
        rows["source"].append("simulated")
        rows["sensor"].append("")
        rows["split"].append(split)
        rows["patch_box"].append([0, 0, width, height])
    return rows_to_dataset(rows, SIMULATED_ID2LABEL_5 if num_classes == 5 else SIMULATED_ID2LABEL_2)
