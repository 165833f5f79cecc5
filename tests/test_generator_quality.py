"""Tests of `dakter_hf.generation.quality`: alignment, calibration and mask fidelity of a (tiny) generator on a labelled
split, the report beside the generator and in its card, the figures, and bad input."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from dakter_hf.data import simulate_sar_scenes
from dakter_hf.distill import create_image_processor, create_student
from dakter_hf.generation import QUALITY_NAME, measure_generator_quality, save_generator_quality
from dakter_hf.metrics import CalibrationMetrics, SegmentationMetrics
from dakter_hf.model_cards import QUALITY_KEY, read_card_metadata
from dakter_hf.pipelines import DAKTerSegmentationPipeline

from tiny_models import tiny_pipeline


SIZE = 16
OPTIONS = dict(num_inference_steps=2, batch_size=2, seed=5)


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline(num_classes=2, id2label={0: "sea", 1: "oil"})


@pytest.fixture(scope="module")
def split():
    return simulate_sar_scenes(3, size=SIZE, seed=4, num_classes=2, split="test")


def assert_same_metrics(actual, expected):
    """Equal metric dicts (floats up to rounding, NaN equal to NaN, lists element-wise)."""
    assert set(actual) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(actual[key], dtype=float), np.asarray(value, dtype=float),
                                   rtol=1e-6, equal_nan=True, err_msg=key)


class ConstantStudent(torch.nn.Module):
    """Predicts class 0 everywhere, whatever the image: its scores depend on the masks alone."""

    def __init__(self):
        super().__init__()
        self.weight = torch.nn.Parameter(torch.zeros(1))

    def forward(self, pixel_values):
        logits = torch.zeros(pixel_values.shape[0], 2, SIZE // 4, SIZE // 4)
        logits[:, 0] = 1.0
        return SimpleNamespace(logits=logits)


def test_alignment_and_calibration_are_the_segmentation_pipelines(pipe, split):
    report = measure_generator_quality(pipe, split, **OPTIONS)
    # the same draws, made and scored by hand: image i with seed 5 + i
    segmenter = DAKTerSegmentationPipeline.from_pipe(pipe)
    segmenter.set_progress_bar_config(disable=True)
    out = segmenter(images=list(split["image"]), generator=[torch.Generator().manual_seed(5 + i) for i in range(3)],
                    num_inference_steps=2, output_type="pt")
    masks = np.stack([np.asarray(m, dtype=np.int64) for m in split["mask"]])
    alignment, calibration = SegmentationMetrics(2, id2label={0: "sea", 1: "oil"}), CalibrationMetrics(2)
    alignment.update(out.soft_labels, masks)
    calibration.update(out.soft_labels, masks)
    assert_same_metrics(report["alignment"], alignment.compute())
    assert_same_metrics(report["calibration"], calibration.compute())
    assert report["calibration"]["num_pixels"] == 3 * SIZE * SIZE
    assert report["mask_fidelity"] is None and report["num_images"] == 3
    assert report["settings"]["conditioning"] == "replacement" and report["settings"]["seed"] == 5
    assert "iou_oil" in report["alignment"]
    again = measure_generator_quality(pipe, split, **OPTIONS)
    assert json.dumps(again, sort_keys=True) == json.dumps(report, sort_keys=True)  # seeded: reproducible


def test_mask_fidelity_scores_the_masks_the_images_were_drawn_for(pipe, split, tmp_path):
    processor = create_image_processor(SIZE)
    report = measure_generator_quality(pipe, split, ConstantStudent(), processor, num_images_per_mask=2,
                                       figures_dir=tmp_path, **OPTIONS)
    fidelity = report["mask_fidelity"]
    masks = np.stack([np.asarray(m, dtype=np.int64) for m in split["mask"]])
    expected = SegmentationMetrics(2, id2label={0: "sea", 1: "oil"})
    expected.update(np.zeros_like(masks), masks)
    # a student that ignores its input scores the drawn images exactly as the real ones: against the same masks
    assert_same_metrics(fidelity["real"], expected.compute())
    assert_same_metrics(fidelity["generated"], expected.compute())
    assert fidelity["mean_iou_ratio"] == pytest.approx(1.0)
    assert report["settings"]["num_images_per_mask"] == 2
    for name in ("segmentation.png", "mask_to_image.png"):
        assert os.path.getsize(tmp_path / name) > 1000


def test_a_real_student(pipe, split):
    # the student works at 32 px (SegFormer's smallest); its logits are upsampled to the 16 px masks
    student = create_student("tiny", id2label={0: "sea", 1: "oil"}, image_size=32).eval()
    report = measure_generator_quality(pipe, split, student, create_image_processor(32), **OPTIONS)
    fidelity = report["mask_fidelity"]
    for part in ("generated", "real"):
        assert 0.0 <= fidelity[part]["mean_iou"] <= 1.0
    assert fidelity["mean_iou_ratio"] == pytest.approx(fidelity["generated"]["mean_iou"] / fidelity["real"]["mean_iou"])


def test_report_beside_the_generator_and_in_its_card(pipe, split, tmp_path):
    report = measure_generator_quality(pipe, split, ConstantStudent(), create_image_processor(SIZE), **OPTIONS)
    pipe.save_pretrained(tmp_path)
    card = tmp_path / "README.md"
    card.write_text("# A generator\n\nTrained somehow.\n", encoding="utf-8")
    path = save_generator_quality(report, tmp_path, split="simulated test scenes")
    assert path == os.path.join(tmp_path, QUALITY_NAME)
    saved = json.loads(open(path, encoding="utf-8").read())
    assert saved["split"] == "simulated test scenes" and saved["alignment"]["mean_iou"] == pytest.approx(
        report["alignment"]["mean_iou"])
    text = card.read_text(encoding="utf-8")
    assert "# A generator\n\nTrained somehow." in text and "## Measured on real data" in text
    metadata = read_card_metadata(tmp_path)[QUALITY_KEY]  # what the cards of its generated datasets copy
    assert metadata["alignment_mean_iou"] == pytest.approx(report["alignment"]["mean_iou"])
    assert metadata["mask_fidelity_ratio"] == pytest.approx(1.0)
    assert f"{100 * report['alignment']['mean_iou']:.2f}" in text and "mask fidelity ratio" in text
    save_generator_quality({**report, "mask_fidelity": None}, tmp_path)  # a new measure replaces the section
    text = card.read_text(encoding="utf-8")
    assert text.count("## Measured on real data") == 1 and "Mask fidelity was not measured" in text
    assert not [name for name in os.listdir(tmp_path) if name.endswith(".tmp")]
    bare = tmp_path / "no-card"
    bare.mkdir()
    save_generator_quality(report, bare)
    assert sorted(os.listdir(bare)) == [QUALITY_NAME]


def test_bad_input(pipe, split, tmp_path):
    with pytest.raises(ValueError, match="'image' and 'mask' columns.*missing \\['mask'\\]"):
        measure_generator_quality(pipe, split.remove_columns("mask"), **OPTIONS)
    with pytest.raises(ValueError, match="empty"):
        measure_generator_quality(pipe, split.select([]), **OPTIONS)
    with pytest.raises(ValueError, match="`student` and `image_processor` together"):
        measure_generator_quality(pipe, split, ConstantStudent(), **OPTIONS)
    with pytest.raises(ValueError, match="batch_size"):
        measure_generator_quality(pipe, split, batch_size=0)
    with pytest.raises(ValueError, match="not a directory"):
        save_generator_quality({}, tmp_path / "missing")


def test_script_loads_the_student_as_a_labeller_and_refuses_a_pipeline(pipe, tmp_path, capsys):
    from repo_scripts import load_script

    student = create_student("tiny", id2label={0: "sea", 1: "oil"}, image_size=32)
    student.save_pretrained(tmp_path / "student")
    create_image_processor(32).save_pretrained(tmp_path / "student")
    pipe.save_pretrained(tmp_path / "joint")
    script = load_script("benchmarks/generator_quality.py")
    common = ["--pipeline", str(tmp_path / "joint"), "--dataset", "simulated", "--simulated_num_classes", "2",
              "--split", "test", "--max_samples", "3", "--num_inference_steps", "2", "--batch_size", "2"]
    output = tmp_path / "quality.json"
    report = script.main([*common, "--student", str(tmp_path / "student"), "--output_json", str(output)])
    assert json.loads(output.read_text())["mask_fidelity"] == json.loads(json.dumps(report["mask_fidelity"]))
    assert report["num_images"] == 3 and 0.0 <= report["mask_fidelity"]["real"]["mean_iou"] <= 1.0
    assert "mask fidelity mIoU" in capsys.readouterr().out
    with pytest.raises(SystemExit):  # the generator passed as the student: named before any work
        script.main([*common, "--student", str(tmp_path / "joint")])
    assert "is a DAKTer pipeline, not a saved student" in capsys.readouterr().err
