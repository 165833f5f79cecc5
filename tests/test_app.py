"""The app's sampling without a browser (`dakter_hf.app`), and the label drawings it shows
(`dakter_hf.visualization.soft_label_to_rgb` / `label_overlay`)."""

import zipfile

import numpy as np
import pytest
import torch
from datasets import load_from_disk
from huggingface_hub import DatasetCard
from test_hub_pipeline_code import make_tiny_pipeline

from dakter_hf.app import SamplingSettings, render_pairs, sample_pairs, save_pairs_archive
from dakter_hf.generation import generate_dataset
from dakter_hf.labels import decode_soft_labels
from dakter_hf.overlays import label_overlay, soft_label_to_rgb


@pytest.fixture(scope="module")
def pipe():
    return make_tiny_pipeline()


def test_pairs_are_the_rows_of_a_generated_dataset(pipe):
    dataset, settings = sample_pairs(pipe, SamplingSettings(seed=5, num_inference_steps=3, num_pairs=2))
    assert dataset["seed"] == [5, 6]
    # row i is seed + i, the same row `dakter generate --seed 5` writes with these settings
    expected = generate_dataset(pipe, [1], seed=5, batch_size=2, num_inference_steps=3, soft_label_dtype="float32")
    np.testing.assert_array_equal(np.asarray(dataset[1]["image"]), np.asarray(expected[0]["image"]))
    assert settings["num_inference_steps"] == 3 and settings["seed"] == 5


def test_scheduler_choice_leaves_the_loaded_pipeline_unchanged(pipe):
    before = type(pipe.scheduler)
    dataset, settings = sample_pairs(pipe, SamplingSettings(num_inference_steps=3, scheduler="ddim", num_pairs=1))
    assert settings["scheduler"] == "DDIMScheduler"
    assert type(pipe.scheduler) is before


def test_temperature_softens_the_soft_labels(pipe):
    sharp, _ = sample_pairs(pipe, SamplingSettings(num_inference_steps=3, soft_label_temperature=1.0, num_pairs=1))
    soft, _ = sample_pairs(pipe, SamplingSettings(num_inference_steps=3, soft_label_temperature=4.0, num_pairs=1))
    p_sharp = decode_soft_labels(sharp.with_format("numpy")["soft_label"], dtype=sharp.features)
    p_soft = decode_soft_labels(soft.with_format("numpy")["soft_label"], dtype=soft.features)
    assert p_soft.max(axis=1).mean() < p_sharp.max(axis=1).mean()


@pytest.mark.parametrize("field, value, message", [
    ("scheduler", "nope", "scheduler must be"), ("num_inference_steps", 0, "steps"), ("num_pairs", 9, "pairs"),
    ("soft_label_temperature", 0.0, "temperature"), ("seed", -1, "seed"),
])
def test_bad_settings_name_the_field(pipe, field, value, message):
    with pytest.raises(ValueError, match=message):
        sample_pairs(pipe, SamplingSettings(**{field: value}))


def test_render_and_archive(pipe, tmp_path):
    dataset, settings = sample_pairs(pipe, SamplingSettings(seed=2, num_inference_steps=3, num_pairs=2))
    images, soft_labels, overlays = render_pairs(dataset)
    assert [caption for _, caption in images] == ["seed 2", "seed 3"]
    assert images[0][0].shape == (16, 16) and soft_labels[0][0].shape == overlays[0][0].shape == (16, 16, 3)
    archive = save_pairs_archive(dataset, settings, "tiny-pipeline", str(tmp_path))
    zipfile.ZipFile(archive).extractall(tmp_path / "unzipped")
    loaded = load_from_disk(str(tmp_path / "unzipped" / "dakter-pairs-seed2-3"))
    assert loaded["seed"] == [2, 3]
    card = DatasetCard.load(tmp_path / "unzipped" / "dakter-pairs-seed2-3" / "README.md")
    assert card.data.dakter["generator"] == "tiny-pipeline"


def test_soft_label_to_rgb():
    two = np.stack([np.full((2, 2), 1.0), np.zeros((2, 2))])
    two[:, 0, 0] = [0.0, 1.0]
    rgb = soft_label_to_rgb(two)
    assert rgb.dtype == np.uint8 and rgb.shape == (2, 2, 3)
    assert rgb[0, 0].sum() > rgb[1, 1].sum()  # p(class 1) = 1 is bright in magma, 0 is black
    three = torch.zeros(3, 1, 1)
    three[2] = 1.0
    np.testing.assert_array_equal(soft_label_to_rgb(three, palette=[(0, 0, 0), (0, 1, 0), (1, 0, 0)])[0, 0],
                                  [255, 0, 0])
    with pytest.raises(ValueError, match="soft_label"):
        soft_label_to_rgb(np.zeros((4, 4)))


def test_label_overlay_tints_only_the_foreground():
    image = np.full((2, 2), 0.5)
    soft_label = np.zeros((2, 2, 2))
    soft_label[0] = 1.0
    soft_label[:, 0, 0] = [0.0, 1.0]  # one certain foreground pixel
    rgb = label_overlay(image, soft_label, alpha=1.0, palette=[(0, 0, 0), (0, 0, 1)])
    np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])
    np.testing.assert_array_equal(rgb[1, 1], [128, 128, 128])
    with pytest.raises(ValueError, match="alpha"):
        label_overlay(image, soft_label, alpha=2.0)
    with pytest.raises(ValueError, match="pixels"):
        label_overlay(np.zeros((3, 3)), soft_label)


def test_mask_classes():
    from dakter_hf.app import mask_classes

    drawing = np.zeros((4, 4), dtype=np.uint8)
    drawing[1:3, 1:3] = 255
    np.testing.assert_array_equal(mask_classes(drawing, 2), (drawing == 255).astype(np.int64))
    ids = np.array([[0, 2], [1, 0]], dtype=np.uint8)
    np.testing.assert_array_equal(mask_classes(ids, 3), ids)
    with pytest.raises(ValueError, match=r"class ids 0\.\.2"):
        mask_classes(np.full((2, 2), 7, dtype=np.uint8), 3)


def _has(name):
    import dakter_hf

    return hasattr(dakter_hf, name)


@pytest.mark.skipif(not _has("DAKTerMaskToImagePipeline"), reason="dakter_hf has no DAKTerMaskToImagePipeline yet")
def test_mask_to_image_tab_work(pipe):
    from dakter_hf.app import _task_pipelines, images_for_mask

    task_pipe = dict((title, p) for title, _, p in _task_pipelines(pipe))["Mask -> image"]
    mask = np.zeros((20, 24), dtype=np.uint8)
    mask[5:10, 5:12] = 2
    items = images_for_mask(task_pipe, mask, num_images=2, seed=3, num_inference_steps=2)
    assert [caption for _, caption in items][::2] == ["seed 3", "seed 4"]
    assert items[0][0].shape == (16, 16) and items[1][0].shape == (16, 16, 3)


@pytest.mark.skipif(not _has("DAKTerSegmentationPipeline"), reason="dakter_hf has no DAKTerSegmentationPipeline yet")
def test_segmentation_tab_work(pipe):
    from dakter_hf.app import _task_pipelines, segment_image

    task_pipe = dict((title, p) for title, _, p in _task_pipelines(pipe))["Segmentation"]
    image = np.random.default_rng(0).integers(0, 255, (30, 40)).astype(np.uint8)
    soft_label, overlay = segment_image(task_pipe, image, num_samples=1, seed=0, num_inference_steps=2,
                                        soft_label_temperature=1.0)
    assert soft_label.shape == overlay.shape == (30, 40, 3)  # at the uploaded image's size


def test_app_loads_a_pipeline_from_the_hub(pipe, hub_server, hub_repo_id, clean_hub_cache):
    from dakter_hf.app import load_pipeline

    pipe.push_to_hub(hub_repo_id)
    loaded = load_pipeline(hub_repo_id)
    dataset, _ = sample_pairs(loaded, SamplingSettings(seed=1, num_inference_steps=2, num_pairs=1))
    expected, _ = sample_pairs(pipe, SamplingSettings(seed=1, num_inference_steps=2, num_pairs=1))
    np.testing.assert_array_equal(np.asarray(dataset[0]["image"]), np.asarray(expected[0]["image"]))
    with pytest.raises(OSError, match="no-such-pipeline"):
        load_pipeline("dakter-tester/no-such-pipeline")
