"""Tests for dakter_hf.data: loaders, validation, simulator and transforms.

Real SOS data is read from ../shared/data/sos (relative to the repository root) when present; OSD and generic
folder fixtures are generated in tmp_path. No data file is ever written into the repository.
"""

import argparse
import json
import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from datasets import concatenate_datasets, load_from_disk
from PIL import Image

from dakter_hf.data import (
    HELDOUT_SPLIT,
    OSD_COLORMAP,
    OSD_ID2LABEL,
    DataError,
    add_data_args,
    build_transform,
    check_data_args,
    collate_fn,
    dataset_from_args,
    dataset_to_tensors,
    get_id2label,
    load_dataset_by_name,
    load_mask_folder,
    load_osd,
    load_sos,
    resize_image,
    resize_mask,
    set_id2label,
    simulate_sar_scenes,
    tile_boxes,
)

from sos_layout import SOS_DIR, needs_sos, save_grey_as_rgb_jpeg, speckle, write_sos_release


def arr(image) -> np.ndarray:
    return np.asarray(image)


# ------------------------------------------------------------------------------------------------ fixtures


@pytest.fixture
def sos_fixture(tmp_path):
    """A tiny SOS-layout release: 4 train pairs (anti-aliased masks) and 2 test pairs per sensor 'palsar'."""
    return write_sos_release(tmp_path / "sos")


def make_osd(root: Path, split_name: str = "train", n: int = 3, size=(65, 125), noise: int = 0, seed: int = 0):
    """An OSD-layout split: images/*.jpg, labels/*.png (colour) and labels_1D/*.png (index)."""
    rng = np.random.default_rng(seed)
    h, w = size
    dirs = {k: root / split_name / k for k in ("images", "labels", "labels_1D")}
    for d in dirs.values():
        d.mkdir(parents=True, exist_ok=True)
    palette = np.array([OSD_COLORMAP[k] for k in range(5)], dtype=np.int64)
    index_masks = {}
    for i in range(n):
        name = f"img_{i:04d}"
        index = np.zeros((h, w), np.uint8)
        index[5:20, 10:60] = 1
        index[30:45, 70:100] = 2
        index[50:53, 20:26] = 3
        index[:, 110:] = 4
        index[0, 0] = i % 5
        colour = palette[index]
        if noise:
            colour = colour + rng.integers(-noise, noise + 1, size=colour.shape)
        save_grey_as_rgb_jpeg(dirs["images"] / f"{name}.jpg", speckle(rng, h, w))
        Image.fromarray(np.clip(colour, 0, 255).astype(np.uint8)).save(dirs["labels"] / f"{name}.png")
        Image.fromarray(index).save(dirs["labels_1D"] / f"{name}.png")
        index_masks[name] = index
    return index_masks


@pytest.fixture
def folder_fixture(tmp_path):
    """images/ + masks/ with 5 good pairs of 3-class index masks, matched as x.jpg <-> x_mask.png / x.png."""
    rng = np.random.default_rng(1)
    images, masks = tmp_path / "images", tmp_path / "masks"
    images.mkdir()
    masks.mkdir()
    for i in range(5):
        save_grey_as_rgb_jpeg(images / f"s{i}.jpg", speckle(rng, 24, 24))
        mask = rng.integers(0, 3, size=(24, 24), dtype=np.uint8)
        Image.fromarray(mask).save(masks / (f"s{i}_mask.png" if i % 2 else f"s{i}.png"))
    return images, masks


# ------------------------------------------------------------------------------------------------ SOS (real)


@needs_sos
def test_sos_real_train_palsar_loads_with_binary_masks():
    ds = load_sos(SOS_DIR, "palsar", "train")
    assert len(ds) == 600
    assert set(ds.column_names) == {"image", "mask", "id", "scene_id", "source", "sensor", "split", "patch_box"}
    assert get_id2label(ds) == {0: "sea", 1: "oil_spill"}
    assert set(ds["source"]) == {"sos"} and set(ds["sensor"]) == {"palsar"} and set(ds["split"]) == {"train"}
    # The >127 rule, checked against the raw files on masks that have anti-aliased (soft) edges.
    checked_soft = 0
    for row in ds.select(range(0, 600, 20)):
        image, mask = row["image"], row["mask"]
        assert image.mode == "L" and mask.mode == "L" and image.size == mask.size == (256, 256)
        raw = arr(Image.open(SOS_DIR / "train/palsar" / f"{row['id']}_mask.png").convert("L"))
        np.testing.assert_array_equal(arr(mask), (raw > 127).astype(np.uint8))
        checked_soft += len(np.unique(raw)) > 2
        raw_image = arr(Image.open(SOS_DIR / "train/palsar" / f"{row['id']}_sat.jpg"))[..., 0]
        np.testing.assert_array_equal(arr(image), raw_image)
    assert checked_soft > 0, "expected some anti-aliased training masks in the sample"


@needs_sos
def test_sos_real_test_sentinel_and_subsets():
    ds = load_sos(SOS_DIR, "sentinel", "test")
    assert len(ds) == 150 and set(ds["sensor"]) == {"sentinel"}
    values = np.unique(np.concatenate([np.unique(arr(m)) for m in ds.select(range(0, 150, 10))["mask"]]))
    assert set(values.tolist()) <= {0, 1} and 1 in values

    a = load_sos(SOS_DIR, "sentinel", "train", num_samples=150, seed=0)
    b = load_sos(SOS_DIR, "sentinel", "train", num_samples=150, seed=0)
    c = load_sos(SOS_DIR, "sentinel", "train", num_samples=150, seed=1)
    small = load_sos(SOS_DIR, "sentinel", "train", num_samples=40, seed=0)
    assert len(a) == 150 and a["id"] == b["id"]
    assert a["id"] != c["id"]
    assert set(small["id"]) <= set(a["id"])
    assert len(set(a["id"])) == 150


@needs_sos
def test_sos_real_concatenates_with_binary_simulated():
    sos = load_sos(SOS_DIR, "palsar", "test", num_samples=5)
    sim = simulate_sar_scenes(3, size=32, seed=0, num_classes=2)
    joined = concatenate_datasets([sos, sim])
    assert len(joined) == 8 and get_id2label(joined) == {0: "sea", 1: "oil_spill"}


# ------------------------------------------------------------------------------------------------ SOS (fixture)


def test_sos_layout_threshold_rule(sos_fixture):
    train = load_sos(sos_fixture, "palsar", "train")
    assert len(train) == 4
    mask = arr(train[0]["mask"])
    expected = np.zeros((32, 32), np.uint8)
    expected[8:24, 8:24] = 1
    expected[8, 8:24] = 0  # value 127 -> sea (oil is strictly > 127)
    expected[8:24, 8] = 0  # value 100 -> sea; row 23 has 128 -> oil
    np.testing.assert_array_equal(mask, expected)
    test = load_sos(sos_fixture, "palsar", "test")
    assert len(test) == 2 and test["split"] == ["test", "test"]
    np.testing.assert_array_equal(arr(test[0]["mask"]), np.eye(32, dtype=np.uint8))
    with pytest.raises(ValueError, match="sensor"):
        load_sos(sos_fixture, "radarsat", "train")
    with pytest.raises(DataError, match="sentinel"):
        load_sos(sos_fixture, "sentinel", "train")


def test_sos_layout_missing_mask_names_file(sos_fixture):
    (sos_fixture / "train/palsar/10002_mask.png").unlink()
    with pytest.raises(DataError, match="10002_sat.jpg"):
        load_sos(sos_fixture, "palsar", "train")
    ds, info = load_sos(sos_fixture, "palsar", "train", on_error="skip", output_loading_info=True)
    assert len(ds) == 3 and [s.key for s in info.skipped] == ["10002"]


def test_subset_larger_than_data_raises(sos_fixture):
    with pytest.raises(DataError, match="num_samples=10"):
        load_sos(sos_fixture, "palsar", "train", num_samples=10)


# ------------------------------------------------------------------------------------------------ OSD


def test_osd_index_and_colour_labels_agree(tmp_path):
    masks = make_osd(tmp_path / "osd", "train", n=3)
    make_osd(tmp_path / "osd", "test", n=2, seed=1)
    ds = load_osd(tmp_path / "osd", "train")  # auto -> labels_1D
    assert len(ds) == 3 and get_id2label(ds) == OSD_ID2LABEL
    assert set(ds["source"]) == {"osd"} and ds[0]["patch_box"] == [0, 0, 125, 65]
    colour = load_osd(tmp_path / "osd", "train", mask_type="color")
    for row_i, row_c in zip(ds, colour):
        np.testing.assert_array_equal(arr(row_i["mask"]), masks[row_i["id"]])
        np.testing.assert_array_equal(arr(row_i["mask"]), arr(row_c["mask"]))
        assert row_i["image"].mode == "L"
    assert len(load_osd(tmp_path / "osd", "test")) == 2


def test_osd_colour_tolerance_and_off_palette_error(tmp_path):
    masks = make_osd(tmp_path / "osd", "train", n=2, noise=20)  # JPEG-like noise, within tolerance 40
    ds = load_osd(tmp_path / "osd", "train", mask_type="color")
    for row in ds:
        np.testing.assert_array_equal(arr(row["mask"]), masks[row["id"]])
    with pytest.raises(DataError, match="tolerance"):
        load_osd(tmp_path / "osd", "train", mask_type="color", color_tolerance=5)

    bad = tmp_path / "osd/train/labels/img_0001.png"
    colour = arr(Image.open(bad)).copy()
    colour[0, 0] = (128, 0, 128)  # purple: no class colour nearby
    Image.fromarray(colour).save(bad)
    with pytest.raises(DataError, match=r"img_0001\.png.*\(128, 0, 128\)"):
        load_osd(tmp_path / "osd", "train", mask_type="color")


def test_osd_split_folder_names_are_robust(tmp_path):
    make_osd(tmp_path / "release/oil-spill", "Training", n=2)
    make_osd(tmp_path / "release/oil-spill", "Testing", n=1)
    assert len(load_osd(tmp_path / "release", "train")) == 2
    assert len(load_osd(tmp_path / "release", "test")) == 1
    with pytest.raises(DataError, match="validation"):
        load_osd(tmp_path / "release", "validation")
    # data_dir may point at the split folder itself, but a folder without split folders is never reused
    assert len(load_osd(tmp_path / "release/oil-spill/Training", "train")) == 2
    with pytest.raises(DataError, match="no folder for split 'test'"):
        load_osd(tmp_path / "release/oil-spill/Training", "test")


def test_osd_tiling(tmp_path):
    masks = make_osd(tmp_path / "osd", "train", n=2)
    ds = load_osd(tmp_path / "osd", "train", patch_size=32, stride=32)
    boxes = tile_boxes(125, 65, 32, 32)
    assert len(boxes) == 3 * 4  # x: 0,32,64,93 ; y: 0,32,33
    assert len(ds) == 2 * len(boxes)
    full = load_osd(tmp_path / "osd", "train")
    scene = {row["id"]: arr(row["image"]) for row in full}
    for row in ds:
        left, top, right, bottom = row["patch_box"]
        assert row["image"].size == (32, 32) and row["id"].startswith(row["scene_id"] + "_x")
        np.testing.assert_array_equal(arr(row["image"]), scene[row["scene_id"]][top:bottom, left:right])
        np.testing.assert_array_equal(arr(row["mask"]), masks[row["scene_id"]][top:bottom, left:right])
    overlapping = load_osd(tmp_path / "osd", "train", patch_size=(64, 64), stride=(1, 61))
    assert {tuple(b) for b in overlapping["patch_box"]} == {
        (0, 0, 64, 64), (61, 0, 125, 64), (0, 1, 64, 65), (61, 1, 125, 65)
    }
    with pytest.raises(DataError, match="img_0000.jpg"):
        load_osd(tmp_path / "osd", "train", patch_size=100)


# ------------------------------------------------------------------------------------------------ folder


def test_folder_loader_index_masks(folder_fixture):
    images, masks = folder_fixture
    ds = load_mask_folder(images, masks)
    assert len(ds) == 5 and ds["id"] == [f"s{i}" for i in range(5)]
    assert get_id2label(ds) == {0: "class_0", 1: "class_1", 2: "class_2"}  # inferred K = max + 1
    for row in ds:
        name = f"{row['id']}_mask.png" if int(row["id"][1]) % 2 else f"{row['id']}.png"
        np.testing.assert_array_equal(arr(row["mask"]), arr(Image.open(masks / name)))
    named = load_mask_folder(images, masks, id2label={0: "a", 1: "b", 2: "c", 3: "d"})
    assert get_id2label(named)[3] == "d"


def test_folder_loader_colormap_and_threshold(tmp_path):
    (tmp_path / "im").mkdir()
    (tmp_path / "gt").mkdir()
    rng = np.random.default_rng(2)
    index = rng.integers(0, 3, size=(16, 16))
    colormap = {0: (0, 0, 0), 1: (255, 255, 0), 2: (0, 0, 255)}
    Image.fromarray(speckle(rng, 16, 16)).save(tmp_path / "im/a.png")
    Image.fromarray(np.array([colormap[k] for k in range(3)], np.uint8)[index]).save(tmp_path / "gt/a.png")
    ds = load_mask_folder(tmp_path / "im", tmp_path / "gt", colormap=colormap)
    np.testing.assert_array_equal(arr(ds[0]["mask"]), index)
    assert len(get_id2label(ds)) == 3
    with pytest.raises(DataError, match="colormap"):  # colour mask but no colormap
        load_mask_folder(tmp_path / "im", tmp_path / "gt")

    Image.fromarray((index > 0).astype(np.uint8) * 255).save(tmp_path / "gt/a.png")
    binary = load_mask_folder(tmp_path / "im", tmp_path / "gt", mask_threshold=127)
    np.testing.assert_array_equal(arr(binary[0]["mask"]), (index > 0).astype(np.uint8))
    assert get_id2label(binary) == {0: "class_0", 1: "class_1"}


# ------------------------------------------------------------------------------------------------ bad input


def test_empty_folder_raises(tmp_path):
    (tmp_path / "images").mkdir()
    (tmp_path / "masks").mkdir()
    with pytest.raises(DataError, match="no image files found in .*images"):
        load_mask_folder(tmp_path / "images", tmp_path / "masks")
    with pytest.raises(DataError, match="does not exist"):
        load_mask_folder(tmp_path / "nope", tmp_path / "masks")


def test_image_without_mask_and_mask_without_image(folder_fixture):
    images, masks = folder_fixture
    (masks / "s3_mask.png").unlink()
    with pytest.raises(DataError, match=r"s3\.jpg has no mask") as err:
        load_mask_folder(images, masks, num_classes=3)
    assert any(f.endswith("s3.jpg") for f in err.value.files)
    (images / "s4.jpg").unlink()
    with pytest.raises(DataError, match=r"s4\.png has no image"):
        load_mask_folder(images, masks, num_classes=3)


def test_size_mismatch_names_both_files(folder_fixture):
    images, masks = folder_fixture
    Image.fromarray(np.zeros((20, 24), np.uint8)).save(masks / "s2.png")
    with pytest.raises(DataError, match=r"size mismatch: image .*s2\.jpg is 24x24.*s2\.png is 24x20"):
        load_mask_folder(images, masks, num_classes=3)


def test_truncated_and_unreadable_images(folder_fixture):
    images, masks = folder_fixture
    data = (images / "s1.jpg").read_bytes()
    (images / "s1.jpg").write_bytes(data[: len(data) // 2])
    with pytest.raises(DataError, match=r"cannot read image file .*s1\.jpg"):
        load_mask_folder(images, masks, num_classes=3)
    (images / "s1.jpg").write_bytes(b"not an image at all")
    with pytest.raises(DataError, match=r"s1\.jpg"):
        load_mask_folder(images, masks, num_classes=3)


def test_mask_values_out_of_range(folder_fixture):
    images, masks = folder_fixture
    Image.fromarray(np.full((24, 24), 7, np.uint8)).save(masks / "s0.png")
    with pytest.raises(DataError, match=r"s0\.png has value\(s\) \[7\].*num_classes=3"):
        load_mask_folder(images, masks, num_classes=3)


def test_skip_reports_bad_pairs(folder_fixture, caplog):
    images, masks = folder_fixture
    Image.fromarray(np.full((24, 24), 7, np.uint8)).save(masks / "s0.png")  # out of range
    (images / "s1.jpg").write_bytes(b"garbage")  # unreadable
    (masks / "s3_mask.png").unlink()  # image without mask
    with caplog.at_level(logging.WARNING, logger="dakter_hf.data"):
        ds, info = load_mask_folder(images, masks, num_classes=3, on_error="skip", output_loading_info=True)
    assert ds["id"] == ["s2", "s4"]
    assert info.num_skipped == 3 and sorted(s.key for s in info.skipped) == ["s0", "s1", "s3"]
    assert "skipped 3 bad pair(s)" in caplog.text and "s1.jpg" in caplog.text
    with pytest.raises(DataError, match=r"s3\.jpg has no mask"):
        load_mask_folder(images, masks, num_classes=3)  # on_error="raise" is the default
    with pytest.raises(ValueError, match="on_error"):
        load_mask_folder(images, masks, on_error="ignore")


# ------------------------------------------------------------------------------------------------ simulator


def as_arrays(ds):
    return np.stack([arr(i) for i in ds["image"]]), np.stack([arr(m) for m in ds["mask"]])


def test_simulator_determinism_and_independence():
    a_img, a_mask = as_arrays(simulate_sar_scenes(6, size=32, seed=3))
    b_img, b_mask = as_arrays(simulate_sar_scenes(6, size=32, seed=3))
    np.testing.assert_array_equal(a_img, b_img)
    np.testing.assert_array_equal(a_mask, b_mask)
    c_img, _ = as_arrays(simulate_sar_scenes(6, size=32, seed=4))
    assert not np.array_equal(a_img, c_img)
    # scene i depends only on (seed, i): not on num_scenes, and ranges regenerate exactly
    few_img, _ = as_arrays(simulate_sar_scenes(3, size=32, seed=3))
    np.testing.assert_array_equal(few_img, a_img[:3])
    tail = simulate_sar_scenes(2, size=32, seed=3, start=4)
    np.testing.assert_array_equal(as_arrays(tail)[0], a_img[4:])
    # train and test never share scenes
    test_img, _ = as_arrays(simulate_sar_scenes(6, size=32, seed=3, split="test"))
    assert not any(np.array_equal(t, a) for t in test_img for a in a_img)


def test_simulator_schema_and_label_consistency():
    ds = simulate_sar_scenes(200, size=64, seed=0)
    assert set(ds["source"]) == {"simulated"} and set(ds["sensor"]) == {""}
    assert get_id2label(ds) == {0: "sea", 1: "oil_spill", 2: "look_alike", 3: "ship", 4: "land"}
    images, masks = as_arrays(ds)
    assert images.shape == masks.shape == (200, 64, 64) and masks.max() <= 4
    mean = {k: images[masks == k].mean() for k in range(5)}
    for k in range(5):
        assert (masks == k).any(axis=(1, 2)).mean() > 0.2, f"class {k} too rare"
    assert mean[1] < mean[2] < mean[0] < mean[4] < mean[3]  # oil darkest, ships brightest
    # look-alikes resemble oil: the brightness ranges of the two classes overlap substantially
    oil_hi, la_lo = np.percentile(images[masks == 1], 75), np.percentile(images[masks == 2], 25)
    assert la_lo < oil_hi
    # land is textured: its per-scene spread is larger than the sea's
    assert images[masks == 4].std() > images[masks == 0].std()

    binary = simulate_sar_scenes(20, size=64, seed=0, num_classes=2)
    b_images, b_masks = as_arrays(binary)
    np.testing.assert_array_equal(b_images, images[:20])
    np.testing.assert_array_equal(b_masks, (masks[:20] == 1).astype(np.uint8))
    assert get_id2label(binary) == {0: "sea", 1: "oil_spill"}


# ------------------------------------------------------------------------------------------------ transforms


def test_transform_range_shapes_and_resize():
    ds = simulate_sar_scenes(4, size=48, seed=0)
    out = ds.with_transform(build_transform(32, augment=False))[0:4]
    x, y = out["pixel_values"], out["labels"]
    assert x.shape == (4, 1, 32, 32) and x.dtype == torch.float32
    assert y.shape == (4, 32, 32) and y.dtype == torch.int64
    assert x.min() >= -1 and x.max() <= 1
    images, masks = as_arrays(ds)
    expected = np.asarray(resize_image(Image.fromarray(images[0]), 32), np.float32) / 127.5 - 1
    np.testing.assert_allclose(x[0, 0].numpy(), expected, atol=1e-6)
    assert set(np.unique(y.numpy())) <= set(np.unique(masks))  # nearest: no invented classes

    checker = Image.fromarray(((np.indices((64, 64)).sum(0) % 2) * 255).astype(np.uint8))
    small = np.asarray(resize_image(checker, 16), np.float32)
    assert small.std() < 5 and abs(small.mean() - 127.5) < 5  # anti-aliased, not aliased to 0 / 255
    assert resize_mask(Image.fromarray(masks[0]), (24, 12)).size == (12, 24)


def test_augmentation_keeps_image_and_mask_aligned():
    rng = np.random.default_rng(0)
    bright = rng.random((16, 16)) > 0.5
    image = np.where(bright, rng.integers(150, 256, (16, 16)), rng.integers(0, 100, (16, 16))).astype(np.uint8)
    mask = bright.astype(np.uint8)
    batch = {"image": [Image.fromarray(image)] * 64, "mask": [Image.fromarray(mask)] * 64}
    transform = build_transform(None, augment=True, seed=0)
    out = transform(batch)
    x, y = out["pixel_values"][:, 0], out["labels"]
    torch.testing.assert_close((x > 0).long(), y)  # thresholded image still equals the mask
    variants = {tuple(v.flatten().tolist()) for v in y}
    assert len(variants) == 8  # all 8 symmetries of the square occur
    again = build_transform(None, augment=True, seed=0)(batch)
    torch.testing.assert_close(again["labels"], y)  # seeded
    rect = build_transform((8, 16), augment=True, seed=0)(batch)
    assert rect["pixel_values"].shape == (64, 1, 8, 16)  # no 90-degree turns for non-square sizes


def test_collate_and_dataset_to_tensors():
    ds = simulate_sar_scenes(5, size=32, seed=1)
    loader = torch.utils.data.DataLoader(
        ds.with_transform(build_transform(16, augment=True)), batch_size=2, collate_fn=collate_fn
    )
    batch = next(iter(loader))
    assert batch["pixel_values"].shape == (2, 1, 16, 16) and batch["labels"].shape == (2, 16, 16)
    images, masks = dataset_to_tensors(ds.with_transform(build_transform(8, augment=True)), resolution=16)
    assert images.shape == (5, 1, 16, 16) and masks.shape == (5, 16, 16) and masks.dtype == torch.int64
    reference = ds.with_transform(build_transform(16))[0:5]
    torch.testing.assert_close(images, reference["pixel_values"])  # no augmentation


# ------------------------------------------------------------------------------------------------ id2label, dispatch


def test_id2label_survives_disk_and_dataset_ops(tmp_path, folder_fixture):
    ds = simulate_sar_scenes(4, size=16, seed=0)
    ds.save_to_disk(str(tmp_path / "sim"))
    reloaded = load_from_disk(str(tmp_path / "sim"))
    assert get_id2label(reloaded) == get_id2label(ds)
    np.testing.assert_array_equal(arr(reloaded[2]["mask"]), arr(ds[2]["mask"]))
    for derived in (ds.shuffle(seed=0), ds.select([1]), ds.map(lambda e: e), ds.train_test_split(0.5)["test"]):
        assert get_id2label(derived) == get_id2label(ds)
    # file-referenced images are embedded on save: the reloaded dataset does not need the source files
    images, masks = folder_fixture
    folder = load_mask_folder(images, masks, id2label={0: "x", 1: "y", 2: "z"})
    folder.save_to_disk(str(tmp_path / "folder"))
    for f in images.iterdir():
        f.unlink()
    again = load_from_disk(str(tmp_path / "folder"))
    assert get_id2label(again) == {0: "x", 1: "y", 2: "z"} and again[0]["image"].mode == "L"
    renamed = set_id2label(again, {0: "a", 1: "b", 2: "c"})
    assert get_id2label(renamed) == {0: "a", 1: "b", 2: "c"}
    with pytest.raises(DataError, match="id2label"):
        from datasets import Image as ImageFeature

        get_id2label(again.cast_column("mask", ImageFeature()))


def test_heldout_split_is_the_rest_of_the_training_split(sos_fixture):
    parser = add_data_args(argparse.ArgumentParser())
    args = parser.parse_args(["--dataset", "sos", "--data_dir", str(sos_fixture), "--sensor", "palsar",
                              "--num_train_samples", "3", "--data_seed", "1"])
    subset, heldout = dataset_from_args(args, "train"), dataset_from_args(args, HELDOUT_SPLIT)
    everything = dataset_from_args(parser.parse_args(["--dataset", "sos", "--data_dir", str(sos_fixture),
                                                      "--sensor", "palsar"]), "train")
    assert len(subset) == 3 and len(heldout) == 1
    assert not set(subset["id"]) & set(heldout["id"])
    assert set(subset["id"]) | set(heldout["id"]) == set(everything["id"])
    args.num_train_samples = 4
    with pytest.raises(DataError, match="uses every training pair"):
        dataset_from_args(args, HELDOUT_SPLIT)
    for flags in (["--dataset", "sos", "--data_dir", str(sos_fixture), "--sensor", "palsar"],
                  ["--num_train_samples", "3"]):
        with pytest.raises(ValueError, match="--num_train_samples subset"):
            dataset_from_args(parser.parse_args(flags), HELDOUT_SPLIT)


def test_dispatcher_and_cli_flags(tmp_path, sos_fixture, folder_fixture):
    parser = add_data_args(argparse.ArgumentParser())
    parser.add_argument("--resolution", type=int, default=16)
    args = parser.parse_args(["--num_train_samples", "7", "--data_seed", "2"])
    train, test = dataset_from_args(args, "train"), dataset_from_args(args, "test")
    assert len(train) == 7 and train[0]["image"].size == (16, 16) and set(train["split"]) == {"train"}
    assert len(test) == 128 and not set(train["id"]) & set(test["id"])

    args = parser.parse_args(
        ["--dataset", "sos", "--data_dir", str(sos_fixture), "--sensor", "palsar", "--num_train_samples", "2"]
    )
    sos = dataset_from_args(args, "train", resolution=8)
    assert len(sos) == 2 and sos[0]["mask"].size == (8, 8)
    assert len(dataset_from_args(args, "test")) == 2
    with pytest.raises(ValueError, match="sensor"):
        load_dataset_by_name("sos", data_dir=sos_fixture)
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset_by_name("imagenet")

    images, masks = folder_fixture
    root = tmp_path / "mine"
    (root / "train").mkdir(parents=True)
    images.rename(root / "train/images")
    masks.rename(root / "train/masks")
    folder = load_dataset_by_name("folder", data_dir=root, split="train", num_classes=3, sensor="s1")
    assert len(folder) == 5 and set(folder["sensor"]) == {"s1"} and set(folder["source"]) == {"folder"}
    make_osd(tmp_path / "osd", "train", n=1)
    osd = load_dataset_by_name("osd", data_dir=tmp_path / "osd", patch_size=64, stride=61)
    assert len(osd) == 4  # x in {0, 61}, y in {0, 1}


def test_tiling_and_mask_flags(tmp_path, capsys):
    parser = add_data_args(argparse.ArgumentParser())
    make_osd(tmp_path / "osd", "train", n=1)
    args = parser.parse_args(["--dataset", "osd", "--data_dir", str(tmp_path / "osd"), "--patch_size", "64",
                              "--patch_stride", "61"])
    tiles = dataset_from_args(args, "train")
    assert len(tiles) == 4 and tiles[0]["image"].size == (64, 64)

    (tmp_path / "f/train/images").mkdir(parents=True)
    (tmp_path / "f/train/masks").mkdir(parents=True)
    rng = np.random.default_rng(3)
    index = rng.integers(0, 2, size=(16, 16))
    Image.fromarray(speckle(rng, 16, 16)).save(tmp_path / "f/train/images/a.png")
    Image.fromarray((index * 255).astype(np.uint8)).save(tmp_path / "f/train/masks/a.png")
    binary = dataset_from_args(parser.parse_args(["--dataset", "folder", "--data_dir", str(tmp_path / "f"),
                                                  "--mask_threshold", "127"]), "train")
    np.testing.assert_array_equal(arr(binary[0]["mask"]), index)
    assert get_id2label(binary) == {0: "class_0", 1: "class_1"}

    colours = {0: (0, 0, 0), 1: (255, 255, 0)}
    Image.fromarray(np.array([colours[0], colours[1]], np.uint8)[index]).save(tmp_path / "f/train/masks/a.png")
    (tmp_path / "colors.json").write_text(json.dumps({"0": [0, 0, 0], "1": [255, 255, 0]}))
    for colormap in ('{"0": [0, 0, 0], "1": [255, 255, 0]}', str(tmp_path / "colors.json")):
        coloured = dataset_from_args(parser.parse_args(["--dataset", "folder", "--data_dir", str(tmp_path / "f"),
                                                        "--colormap", colormap]), "train")
        np.testing.assert_array_equal(arr(coloured[0]["mask"]), index)

    with pytest.raises(ValueError, match="--colormap: expected a JSON object"):
        dataset_from_args(parser.parse_args(["--dataset", "folder", "--data_dir", str(tmp_path / "f"),
                                             "--colormap", "red"]), "train")
    with pytest.raises(ValueError, match="three values in 0..255"):
        dataset_from_args(parser.parse_args(["--dataset", "folder", "--data_dir", str(tmp_path / "f"),
                                             "--colormap", '{"0": [0, 0, 300]}']), "train")
    with pytest.raises(ValueError, match="--mask_threshold applies to --dataset folder, not 'osd'"):
        dataset_from_args(parser.parse_args(["--dataset", "osd", "--data_dir", str(tmp_path / "osd"),
                                             "--mask_threshold", "127"]), "train")
    for flags, message in [(["--dataset", "sos", "--data_dir", str(tmp_path)], "--dataset sos needs --sensor"),
                           (["--dataset", "folder"], "--dataset folder needs --data_dir"),
                           (["--dataset", "osd", "--data_dir", str(tmp_path / "nowhere")], "is not a directory"),
                           (["--dataset", "folder", "--data_dir", str(tmp_path), "--colormap", "[1]"], "--colormap")]:
        with pytest.raises(SystemExit):
            check_data_args(parser, parser.parse_args(flags))
        assert message in capsys.readouterr().err
    with pytest.raises(ValueError, match="--patch_stride needs --patch_size"):
        dataset_from_args(parser.parse_args(["--dataset", "osd", "--data_dir", str(tmp_path / "osd"),
                                             "--patch_stride", "8"]), "train")
