"""Layout statistics of masks (`dakter_hf.metrics.layout`) and `benchmarks/layout_statistics.py`, which compares
generated datasets' layouts with the real masks'."""

import json

import numpy as np
import PIL.Image
import pytest
import torch
from datasets import Dataset

from dakter_hf.data import simulate_sar_scenes
from dakter_hf.generation import encode_soft_labels, generated_features
from dakter_hf.metrics import LAYOUT_STATISTICS, compare_layouts, connected_components, mask_layout_statistics

from repo_scripts import load_script


pytestmark = pytest.mark.usefixtures("one_torch_thread")
SIZE = 32


def test_connected_components_are_four_connected():
    mask = torch.zeros(6, 6, dtype=torch.bool)
    mask[0:2, 0:2] = True        # a square
    mask[2, 2] = True            # touches the square by a corner only: its own piece
    mask[4, 0:6] = True          # a row ...
    mask[5, 5] = True            # ... with a pixel below its end
    labels = connected_components(mask)[0]
    assert labels.max() == 3
    assert len({int(v) for v in labels[0:2, 0:2].flatten()}) == 1
    assert labels[2, 2] not in (0, labels[0, 0])
    assert labels[5, 5] == labels[4, 0] != labels[0, 0]
    assert (labels[~mask] == 0).all()


def test_a_snake_is_one_component():
    """A path whose pixels are far apart along the shape: propagation must run until it settles."""
    mask = torch.zeros(9, 9, dtype=torch.bool)
    mask[0::2, :] = True
    for row in range(1, 9, 2):
        mask[row, 8 if row % 4 == 1 else 0] = True
    assert connected_components(mask).max() == 1


def test_mask_layout_statistics_by_hand():
    masks = np.zeros((3, 8, 8), dtype=np.int64)
    masks[0, 0:4, 0:4] = 1       # one 4x4 piece in the corner: 16 px, 7 on the outline (border not counted)
    masks[0, 7, 7] = 1           # and a single pixel (on the outline itself)
    masks[1] = 1                 # all oil: no outline inside the image
    masks[2, 2, 2] = 2           # another class only: no oil
    stats = mask_layout_statistics(masks)
    assert set(stats) == set(LAYOUT_STATISTICS)
    np.testing.assert_allclose(stats["class_fraction"], [17 / 64, 1.0, 0.0])
    np.testing.assert_array_equal(stats["num_components"], [2, 1, 0])
    np.testing.assert_allclose(stats["largest_component_fraction"], [16 / 64, 1.0, 0.0])
    np.testing.assert_allclose(stats["boundary_fraction"][:2], [8 / 17, 0.0])
    assert np.isnan(stats["boundary_fraction"][2])
    np.testing.assert_allclose(mask_layout_statistics(masks, class_index=2)["class_fraction"], [0, 0, 1 / 64])


def test_compare_layouts_of_a_set_with_itself_and_with_larger_spills():
    rng = np.random.default_rng(0)
    small = np.zeros((20, 16, 16), dtype=np.int64)
    large = np.zeros_like(small)
    for i in range(20):
        r, c = rng.integers(0, 10, size=2)
        small[i, r:r + 3, c:c + 3] = 1
        large[i, r:r + 6, c:c + 6] = 1
    real = mask_layout_statistics(small)
    same = {c.statistic: c for c in compare_layouts(real, real)}
    assert all(c.wasserstein == 0 for c in same.values())
    bigger = {c.statistic: c for c in compare_layouts(real, mask_layout_statistics(large))}
    assert bigger["class_fraction"].wasserstein == pytest.approx((36 - 9) / 256)
    assert bigger["class_fraction"].generated_quartiles == pytest.approx((36 / 256,) * 3)
    assert bigger["num_components"].wasserstein == 0
    assert bigger["boundary_fraction"].generated_mean < bigger["boundary_fraction"].real_mean


def test_compare_layouts_errors_name_the_statistic():
    real = mask_layout_statistics(np.ones((2, 4, 4), dtype=np.int64))
    empty = mask_layout_statistics(np.zeros((2, 4, 4), dtype=np.int64))
    with pytest.raises(ValueError, match="'boundary_fraction' has no value in the generated set"):
        compare_layouts(real, empty)
    with pytest.raises(ValueError, match="'num_components' is missing"):
        compare_layouts({k: v for k, v in real.items() if k != "num_components"}, real)
    with pytest.raises(ValueError, match=r"\(N, H, W\)"):
        mask_layout_statistics(np.zeros((1, 2, 4, 4)))


# ----------------------------------------------------------------------------------------------------------------------
# The script
# ----------------------------------------------------------------------------------------------------------------------


def save_generated(path, masks):
    onehot = [torch.nn.functional.one_hot(torch.from_numpy(np.array(m, dtype=np.int64)), 2) for m in masks]
    probs = torch.stack(onehot).permute(0, 3, 1, 2).float()
    size = probs.shape[-1]
    Dataset.from_dict({"image": [np.full((size, size), 128, dtype=np.uint8)] * len(masks),
                       "soft_label": list(encode_soft_labels(probs)),
                       "label": [np.asarray(m, dtype=np.uint8) for m in masks], "seed": list(range(len(masks)))},
                      features=generated_features(2, size, size)).save_to_disk(str(path))
    return str(path)


DATA_ARGS = ["--dataset", "simulated", "--simulated_num_classes", "2", "--num_train_samples", "6",
             "--resolution", str(SIZE)]


def test_script_compares_generated_layouts_with_the_real_masks(tmp_path, capsys):
    script = load_script("benchmarks/layout_statistics.py")
    real = [np.asarray(m) for m in simulate_sar_scenes(6, size=SIZE, seed=0, num_classes=2)["mask"]]
    copy = save_generated(tmp_path / "copy", real)
    grown = save_generated(tmp_path / "grown", [np.maximum(m, np.roll(m, 2, axis=0)) for m in real])
    out = tmp_path / "layouts.json"
    report = script.main([*DATA_ARGS, "--generated_dataset", copy, grown, "--reference_split", "test",
                          "--output_json", str(out), "--figure", str(tmp_path / "layouts.png")])
    assert json.loads(out.read_text()) == json.loads(json.dumps(report))
    assert report["num_real_masks"] == 6
    by_name = {path: {c["statistic"]: c for c in rows} for path, rows in report["datasets"].items()}
    assert all(c["wasserstein"] == 0 for c in by_name[copy].values()), "the real masks themselves must match"
    assert by_name[grown]["class_fraction"]["generated_mean"] > by_name[grown]["class_fraction"]["real_mean"]
    assert by_name[grown]["class_fraction"]["wasserstein"] > 0
    table = capsys.readouterr().out
    assert "| class_fraction | real (6 masks) |" in table and f"| num_components | {grown} |" in table
    assert list(report["datasets"]) == ["real test", copy, grown] and "| num_components | real test |" in table
    with PIL.Image.open(tmp_path / "layouts.png") as figure:
        assert figure.format == "PNG" and figure.width > 600


def test_script_names_a_size_mismatch_and_a_missing_dataset(tmp_path, capsys):
    script = load_script("benchmarks/layout_statistics.py")
    with pytest.raises(SystemExit):
        script.main(DATA_ARGS)
    assert "pass --generated_dataset and/or --reference_split" in capsys.readouterr().err
    small = save_generated(tmp_path / "small", [np.zeros((16, 16), dtype=np.int64)])
    with pytest.raises(SystemExit, match=f"{small}.*16x16 labels.*loaded at {SIZE}x{SIZE}: pass --resolution 16"):
        script.main([*DATA_ARGS, "--generated_dataset", small])
    missing = str(tmp_path / "nothing")
    with pytest.raises(SystemExit, match=f"{missing}.*could not be loaded"):
        script.main([*DATA_ARGS, "--generated_dataset", missing])
