"""Tests for dakter_hf.visualization: figures are written atomically as valid PNGs, without pyplot."""

import numpy as np
import pytest
import torch
from PIL import Image

from dakter_hf.visualization import (
    MASK_TO_IMAGE_COLUMNS,
    SEGMENTATION_COLUMNS,
    running_mean,
    save_bar_chart,
    save_distribution_panels,
    save_learning_curves,
    save_sample_grid,
    save_seed_comparison,
)


def _assert_png(path, min_size=(150, 100)):
    assert path.is_file()
    with Image.open(path) as image:
        assert image.format == "PNG"
        image.load()
        assert image.size[0] >= min_size[0] and image.size[1] >= min_size[1]
        pixels = np.asarray(image.convert("L"))
    assert pixels.std() > 1.0  # not a blank canvas
    assert not [p for p in path.parent.iterdir() if p.name.startswith(".")]  # no temporary file left behind


def _soft(batch, classes, size, seed=0):
    q = torch.rand(batch, classes, size, size, generator=torch.Generator().manual_seed(seed)) ** 3
    return q / q.sum(dim=1, keepdim=True)


@pytest.mark.parametrize("classes", [2, 5])
def test_sample_grid_binary_and_multiclass(tmp_path, classes):
    images = torch.rand(3, 1, 32, 32) * 2 - 1
    labels = torch.randint(0, classes, (3, 32, 32))
    labels[:, :4] = 255  # ignored pixels drawn white
    id2label = {i: name for i, name in enumerate(["sea", "oil spill", "look-alike", "ship", "land"][:classes])}
    path = save_sample_grid(images, _soft(3, classes, 32), labels, tmp_path / "nested" / "grid.png", id2label=id2label,
                            title="generated pairs")
    _assert_png(path)


def test_sample_grid_caps_rows_and_accepts_numpy_without_labels(tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (12, 24, 24), dtype=np.uint8)
    few = save_sample_grid(images[:2], _soft(2, 2, 24).numpy(), None, tmp_path / "few.png")
    many = save_sample_grid(images, _soft(12, 2, 24).numpy(), None, tmp_path / "many.png", max_rows=4)
    _assert_png(few)
    _assert_png(many)
    with Image.open(few) as a, Image.open(many) as b:
        assert b.size[1] < 3 * a.size[1]  # 4 rows drawn, not 12


def test_sample_grid_real_pairs_only(tmp_path):
    path = save_sample_grid(torch.rand(2, 32, 32), None, torch.randint(0, 2, (2, 32, 32)), tmp_path / "real.png")
    _assert_png(path)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"images": torch.rand(2, 3, 8, 8)}, "single-channel"),
        ({"soft_labels": torch.rand(2, 2, 4, 4)}, "soft_labels"),
        ({"labels": torch.zeros(3, 8, 8, dtype=torch.long)}, "labels"),
        ({"soft_labels": None, "labels": None}, "soft_labels"),
        ({"max_rows": 0}, "max_rows"),
        ({"palette": [(0, 0, 0)]}, "palette"),
    ],
)
def test_sample_grid_errors(tmp_path, kwargs, match):
    arguments = {"images": torch.rand(2, 1, 8, 8), "soft_labels": _soft(2, 2, 8), "labels": None}
    arguments.update(kwargs)
    with pytest.raises(ValueError, match=match):
        save_sample_grid(path=tmp_path / "x.png", **arguments)
    assert not (tmp_path / "x.png").exists()


def _cyan_share(path, part):
    """Share of pure cyan (oil, class 1) pixels in the left or right third of a PNG."""
    with Image.open(path) as image:
        rgb = np.asarray(image.convert("RGB")).astype(int)
    third = rgb.shape[1] // 3
    region = rgb[:, :third] if part == "left" else rgb[:, -third:]
    return float(np.mean((region[..., 0] < 40) & (region[..., 1] > 215) & (region[..., 2] > 215)))


def test_task_grids_order_and_title_their_columns(tmp_path):
    # grey images, all-oil masks (cyan): the mask column is where the cyan is
    images, masks = torch.full((2, 1, 16, 16), 0.5), torch.ones(2, 16, 16, dtype=torch.long)
    soft = _soft(2, 2, 16)
    mask_to_image = save_sample_grid(images, soft, masks, tmp_path / "m2i.png", columns=MASK_TO_IMAGE_COLUMNS)
    segmentation = save_sample_grid(images, soft, masks, tmp_path / "seg.png", columns=SEGMENTATION_COLUMNS)
    default = save_sample_grid(images, soft, masks, tmp_path / "all.png")
    for path in (mask_to_image, segmentation, default):
        _assert_png(path)
    assert _cyan_share(mask_to_image, "left") > 0.05 and _cyan_share(mask_to_image, "right") == 0.0
    assert _cyan_share(segmentation, "left") == 0.0 and _cyan_share(segmentation, "right") > 0.05
    with Image.open(segmentation) as three, Image.open(default) as four:
        assert three.size[0] < four.size[0]  # three columns, not four
    assert list(MASK_TO_IMAGE_COLUMNS) == ["label", "image", "soft_label"]
    assert list(SEGMENTATION_COLUMNS) == ["image", "soft_label", "label"]


@pytest.mark.parametrize(
    "columns, labels, match",
    [
        ({"mask": "mask"}, None, "columns"),
        ({}, None, "columns"),
        ({"image": "image", "label": "mask"}, None, "needs `labels`"),
    ],
)
def test_grid_column_errors(tmp_path, columns, labels, match):
    with pytest.raises(ValueError, match=match):
        save_sample_grid(torch.rand(2, 1, 8, 8), _soft(2, 2, 8), labels, tmp_path / "x.png", columns=columns)
    with pytest.raises(ValueError, match="needs `soft_labels`"):
        save_sample_grid(torch.rand(2, 1, 8, 8), None, torch.zeros(2, 8, 8, dtype=torch.long), tmp_path / "x.png",
                         columns={"argmax": "prediction"})
    assert not (tmp_path / "x.png").exists()


def test_learning_curves_grouped_by_prefix(tmp_path):
    history = {
        "train/loss": [(step, 1.0 / (step + 1)) for step in range(50)],
        "train/loss_generated": [(step, 0.5 / (step + 1)) for step in range(0, 50, 5)],
        "eval/mean_iou": {10: 0.4, 20: 0.55, 30: float("nan"), 40: 0.6},
    }
    path = save_learning_curves(history, tmp_path / "curves.png", title="student")
    _assert_png(path, min_size=(500, 250))
    flat = save_learning_curves({"loss": [(0, 1.0), (1, 0.5)], "empty": []}, tmp_path / "flat.png")
    _assert_png(flat)
    with pytest.raises(ValueError, match="history"):
        save_learning_curves({}, tmp_path / "none.png")
    with pytest.raises(ValueError, match="history"):
        save_learning_curves({"bad": [(0, 1, 2)]}, tmp_path / "bad.png")


def test_running_mean_and_smoothed_curves(tmp_path):
    np.testing.assert_allclose(running_mean(np.array([1.0, 3.0, 5.0, 7.0]), 2), [1.0, 2.0, 4.0, 6.0])
    np.testing.assert_allclose(running_mean(np.array([2.0, 4.0]), 1), [2.0, 4.0])
    noisy = [(step, 1.0 / (step + 1) + (-1) ** step * 0.3) for step in range(1000)]
    smoothed = save_learning_curves({"loss": noisy}, tmp_path / "auto.png")
    raw = save_learning_curves({"loss": noisy}, tmp_path / "raw.png", smoothing=None)
    _assert_png(smoothed)
    _assert_png(raw)
    assert smoothed.read_bytes() != raw.read_bytes()  # the running mean is drawn over the raw series
    save_learning_curves({"loss": noisy}, tmp_path / "window.png", smoothing=50)
    with pytest.raises(ValueError, match="smoothing"):
        save_learning_curves({"loss": noisy}, tmp_path / "bad.png", smoothing=0)
    with pytest.raises(ValueError, match="window"):
        running_mean(np.ones(3), 0)


def test_bar_chart_with_errors_and_overwrite(tmp_path):
    values = {"no generative DA": 67.46, "hard labels": 69.8, "DAKTer (soft)": 70.74, "missing": float("nan")}
    path = save_bar_chart(values, tmp_path / "bars.png", errors={"DAKTer (soft)": 0.4}, ylabel="mIoU (%)")
    _assert_png(path)
    first = path.read_bytes()
    save_bar_chart({"a": 1.0, "b": 2.0}, path, ylabel="F1")  # atomic overwrite of an existing file
    _assert_png(path)
    assert path.read_bytes() != first
    with pytest.raises(ValueError, match="errors"):
        save_bar_chart({"a": 1.0}, tmp_path / "e.png", errors={"b": 0.1})
    with pytest.raises(ValueError, match="values"):
        save_bar_chart({}, tmp_path / "e.png")


def test_seed_comparison_draws_every_group_and_checks_its_input(tmp_path):
    arms = {"real": {"shared": (74.56, 0.70)},
            "soft": {"generator seed 0": (74.97, 0.14), "generator seed 1": (75.40, 0.30)},
            "hard": {"generator seed 1": (75.03, 0.05)}}
    path = save_seed_comparison(arms, tmp_path / "arms.png", reference="real", xlabel="mIoU (%)", title="Sentinel")
    _assert_png(path)
    first = path.read_bytes()
    moved = {**arms, "hard": {"generator seed 1": (73.0, 0.05)}}  # one dot moved: the figure changes
    save_seed_comparison(moved, path, reference="real", xlabel="mIoU (%)", title="Sentinel")
    assert path.read_bytes() != first
    with pytest.raises(ValueError, match="empty"):
        save_seed_comparison({}, tmp_path / "e.png")
    with pytest.raises(ValueError, match=r"arms without a \(mean, std\) group: \['soft'\]"):
        save_seed_comparison({"real": {"shared": (1.0, 0.0)}, "soft": {}}, tmp_path / "e.png")
    with pytest.raises(ValueError, match="`reference` 'teacher' is not among the arms"):
        save_seed_comparison(arms, tmp_path / "e.png", reference="teacher")
    assert not (tmp_path / "e.png").exists()


def test_distribution_panels_draw_every_set_and_check_their_input(tmp_path):
    rng = np.random.default_rng(0)
    panels = {"oil share": {"real": rng.random(50), "generated": rng.random(80) * 0.5},
              "pieces": {"real": rng.integers(0, 9, 50), "generated": np.append(rng.integers(0, 5, 80), np.nan)},
              "outline": {"real": rng.random(50)}}
    path = save_distribution_panels(panels, tmp_path / "cdf.png", title="layouts")
    _assert_png(path, min_size=(600, 250))
    first = path.read_bytes()
    save_distribution_panels({**panels, "outline": {"real": rng.random(50) * 0.1}}, path)
    assert path.read_bytes() != first
    with pytest.raises(ValueError, match="empty"):
        save_distribution_panels({}, tmp_path / "e.png")
    with pytest.raises(ValueError, match=r"panels without a set of values: \['pieces'\]"):
        save_distribution_panels({"oil share": {"real": [0.1]}, "pieces": {}}, tmp_path / "e.png")
    assert not (tmp_path / "e.png").exists()


def test_package_does_not_use_pyplot():
    # figures are standalone Figure objects on the Agg canvas: no global pyplot state, no window
    import ast
    from pathlib import Path

    import dakter_hf.visualization as visualization

    modules = sorted(Path(visualization.__file__).parent.glob("*.py"))
    assert {m.name for m in modules} >= {"__init__.py", "charts.py", "figure.py", "sample_grid.py"}
    for module in modules:
        tree = ast.parse(module.read_text(encoding="utf-8"))
        imported = {alias.name for node in ast.walk(tree) if isinstance(node, ast.Import) for alias in node.names}
        imported |= {node.module for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)}
        assert not any("pyplot" in (name or "") for name in imported), module.name


def test_bar_values_are_written_with_two_decimals():
    from dakter_hf.visualization.charts import _format_value

    assert [_format_value(v) for v in (4.951, 55.93, 100.0, 0.00123)] == ["4.95", "55.93", "100.00", "0.00123"]
