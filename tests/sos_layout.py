"""A tiny release in SOS's original layout, written on the fly (tests never read or copy the real SOS files), and
where the real SOS subset lives for the few tests that read it (`../shared/data/sos` beside the repository)."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image


SOS_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "sos"
needs_sos = pytest.mark.skipif(
    not (SOS_DIR / "train").is_dir() or not (SOS_DIR / "test").is_dir(),
    reason=f"real SOS data not found at {SOS_DIR} (../shared/data/sos)",
)


def save_grey_as_rgb_jpeg(path: Path, grey: np.ndarray) -> None:
    """Save a greyscale array as SOS stores its chips: a JPEG with three identical channels."""
    Image.fromarray(np.repeat(grey[..., None], 3, axis=2)).save(path, quality=95)


def speckle(rng: np.random.Generator, h: int, w: int) -> np.ndarray:
    """Uniform random grey levels."""
    return rng.integers(0, 256, size=(h, w), dtype=np.uint8)


def write_sos_release(root: Path, sensor: str = "palsar", num_train: int = 4, num_test: int = 2, size: int = 32,
                      seed: int = 0) -> Path:
    """`train/<sensor>/<id>_sat.jpg` + `_mask.png` (a square slick with anti-aliased edges, RGB) and
    `test/<sensor>/sat/*_sat.jpg` + `gt/*_mask.png` (a strictly 0 / 255 diagonal); returns `root`."""
    rng = np.random.default_rng(seed)
    train, sat, gt = root / "train" / sensor, root / "test" / sensor / "sat", root / "test" / sensor / "gt"
    for d in (train, sat, gt):
        d.mkdir(parents=True)
    lo, hi = size // 4, 3 * size // 4
    for i in range(num_train):
        save_grey_as_rgb_jpeg(train / f"1{i:04d}_sat.jpg", speckle(rng, size, size))
        mask = np.zeros((size, size), np.uint8)
        mask[lo:hi, lo:hi] = 255
        mask[lo, lo:hi], mask[hi - 1, lo:hi], mask[lo:hi, lo] = 127, 128, 100  # anti-aliased edges
        Image.fromarray(np.repeat(mask[..., None], 3, axis=2)).save(train / f"1{i:04d}_mask.png")
    for i in range(num_test):
        save_grey_as_rgb_jpeg(sat / f"11{i:03d}_sat.jpg", speckle(rng, size, size))
        Image.fromarray(np.where(np.eye(size) > 0, 255, 0).astype(np.uint8)).save(gt / f"11{i:03d}_mask.png")
    return root
