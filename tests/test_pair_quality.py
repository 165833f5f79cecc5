"""Pair quality (issue #24, lever b): the agreement score (`dakter_hf.metrics.agreement`), dropping and weighting
scored pairs (`dakter_hf.distill.pair_quality`), the weighted loss, `examples/distill.py --drop_worst_pairs /
--pair_quality_weighting`, and a distillation run of an older version resumed in place."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import torch
from datasets import Dataset, Value, load_from_disk
from test_distill import RESOLUTION, base_args, make_generated_dataset

from dakter_hf.commands import distill as distill_command
from dakter_hf.distill import DistillationDataset, distillation_loss
from dakter_hf.distill.data import distillation_collate_fn
from dakter_hf.distill.pair_quality import select_pairs_by_quality
from dakter_hf.distill.training import adopt_unmarked_students
from dakter_hf.filesystem import OWNER_MARKER
from dakter_hf.metrics import argmax_mean_iou, soft_label_agreement


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def random_soft_labels(batch=3, classes=3, size=8, seed=0):
    return torch.from_numpy(np.random.default_rng(seed).normal(size=(batch, classes, size, size))).float().softmax(1)


# ----------------------------------------------------------------------------------------------------------------------
# The score
# ----------------------------------------------------------------------------------------------------------------------


def test_agreement_is_one_for_identical_labels_and_lower_otherwise():
    p, q = random_soft_labels(seed=0), random_soft_labels(seed=1)
    assert torch.allclose(soft_label_agreement(p, p), torch.ones(3))
    assert torch.equal(argmax_mean_iou(p, p), torch.ones(3))
    assert bool((soft_label_agreement(p, q) < 1).all()) and bool((argmax_mean_iou(p, q) < 1).all())
    # one-hot labels: the pixel agreement; disjoint supports: 0
    a = torch.zeros(1, 2, 2, 2)
    a[:, 0] = 1
    b = a.clone()
    b[0, :, 0, 0] = torch.tensor([0.0, 1.0])  # one pixel of four moved to class 1
    assert soft_label_agreement(a, b).item() == pytest.approx(0.75)
    # class 0: IoU 3/4; class 1: present in b only, IoU 0/1 -> mean 0.375
    assert argmax_mean_iou(a, b).item() == pytest.approx(0.375)
    assert soft_label_agreement(a, 1 - a).item() == pytest.approx(0.0)
    # half-way soft labels: TV 0.5 at every pixel
    half = torch.full((1, 2, 2, 2), 0.5)
    assert soft_label_agreement(a, half).item() == pytest.approx(0.5)
    with pytest.raises(ValueError, match="shape"):
        soft_label_agreement(p, p[:, :2])


def scored(scores, seeds=None):
    rows = {"pair_quality": scores, "seed": seeds or list(range(100, 100 + len(scores)))}
    return Dataset.from_dict(rows).cast_column("pair_quality", Value("float32"))


def test_dropping_keeps_order_and_records_what_went():
    dataset = scored([0.9, 0.2, 0.5, 0.2, 1.0])
    selection = select_pairs_by_quality(dataset, drop_worst_pairs=0.5, name="gen")
    # floor(0.5 * 5) = 2 dropped: the two 0.2 rows (equal scores: the earlier row first)
    assert selection.dataset["seed"] == [100, 102, 104] and selection.weights is None
    report = selection.report
    assert report["num_dropped"] == 2 and report["dropped_rows"] == [1, 3] and report["dropped_seeds"] == [101, 103]
    assert report["max_quality_dropped"] == pytest.approx(0.2) and report["generated_dataset"] == "gen"
    assert select_pairs_by_quality(dataset, drop_worst_pairs=0.1).report["num_dropped"] == 0  # floor(0.5) = 0


def test_weighting_has_mean_one_over_the_kept_pairs():
    selection = select_pairs_by_quality(scored([0.0, 0.5, 1.0, 0.5]), drop_worst_pairs=0.25, weighting=True)
    assert selection.dataset["seed"] == [101, 102, 103]  # the 0.0 pair dropped
    np.testing.assert_allclose(selection.weights, [0.75, 1.5, 0.75])
    assert selection.report["weight_min"] == pytest.approx(0.75)
    np.testing.assert_allclose(select_pairs_by_quality(scored([0.0, 1.0]), weighting=True).weights, [0.0, 2.0])


def test_missing_or_bad_scores_are_refused_naming_dataset_and_column():
    with pytest.raises(ValueError, match=r"--generated_dataset out/gen has no 'pair_quality' column.*--score_only"):
        select_pairs_by_quality(Dataset.from_dict({"seed": [0]}), weighting=True, name="out/gen")
    with pytest.raises(ValueError, match="--drop_worst_pairs must lie in"):
        select_pairs_by_quality(scored([0.5]), drop_worst_pairs=1.0)
    with pytest.raises(ValueError, match="finite scores in"):
        select_pairs_by_quality(scored([0.5, float("nan")]), weighting=True)
    with pytest.raises(ValueError, match="scores 0"):
        select_pairs_by_quality(scored([0.0, 0.0]), weighting=True)


# ----------------------------------------------------------------------------------------------------------------------
# The weighted loss and the data
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["soft", "hard"])
def test_a_pair_of_weight_zero_contributes_no_gradient(mode):
    torch.manual_seed(0)
    logits = torch.randn(3, 3, 4, 4, requires_grad=True)
    batch = {"labels": torch.randint(0, 3, (3, 8, 8)), "soft_labels": random_soft_labels(size=8),
             "is_generated": torch.tensor([False, True, True])}
    weighted = distillation_loss(logits, {**batch, "pair_weights": torch.tensor([1.0, 0.0, 2.0])}, mode=mode)
    weighted.loss.backward()
    assert logits.grad[0].abs().sum() > 0 and logits.grad[2].abs().sum() > 0
    assert torch.equal(logits.grad[1], torch.zeros_like(logits.grad[1]))
    # the weights multiply the generated pixel losses: 2 x pair 2 alone, same pixel count in the denominator
    plain = distillation_loss(logits, batch, mode=mode)
    only_last = distillation_loss(logits, {**batch, "pair_weights": torch.tensor([1.0, 0.0, 1.0])}, mode=mode)
    assert weighted.loss.item() == pytest.approx(2 * only_last.loss.item() - plain.loss_real.item() * 64 / 192)
    ones = distillation_loss(logits, {**batch, "pair_weights": torch.ones(3)}, mode=mode)
    assert ones.loss.item() == pytest.approx(plain.loss.item())
    with pytest.raises(ValueError, match="pair_weights"):
        distillation_loss(logits, {**batch, "pair_weights": torch.tensor([1.0, -1.0, 1.0])}, mode=mode)


def test_distillation_dataset_carries_pair_weights(tmp_path):
    from dakter_hf.data import load_dataset_by_name

    real = load_dataset_by_name("simulated", split="train", num_samples=2, resolution=RESOLUTION)
    generated = load_from_disk(make_generated_dataset(tmp_path / "gen", num_rows=3))
    dataset = DistillationDataset(real, generated, resolution=RESOLUTION, generated_weights=[0.5, 0.0, 2.5])
    batch = distillation_collate_fn(dataset.__getitems__([0, 2, 3, 4]))
    assert batch["pair_weights"].tolist() == [1.0, 0.5, 0.0, 2.5]
    unweighted = DistillationDataset(real, generated, resolution=RESOLUTION)
    assert "pair_weights" not in distillation_collate_fn(unweighted.__getitems__([0, 2]))
    with pytest.raises(ValueError, match="one weight per generated row"):
        DistillationDataset(real, generated, resolution=RESOLUTION, generated_weights=[1.0])


# ----------------------------------------------------------------------------------------------------------------------
# The distill command
# ----------------------------------------------------------------------------------------------------------------------


def test_distill_drops_and_weights_scored_pairs_and_reports_them(tmp_path):
    plain = make_generated_dataset(tmp_path / "gen", num_rows=8)
    scores = [0.1, 0.9, 0.3, 0.8, 0.7, 0.2, 0.6, 0.5]
    scored_dir = str(tmp_path / "gen-scored")
    load_from_disk(plain).add_column("pair_quality", scores).cast_column(
        "pair_quality", Value("float32")).save_to_disk(scored_dir)
    common = ["--mode", "soft", "--max_train_steps", "2", "--eval_steps", "2", "--generated_ratio", "0.5"]
    report = distill_command.main(base_args(tmp_path / "student", *common, "--generated_dataset", scored_dir,
                                            "--drop_worst_pairs", "0.25", "--pair_quality_weighting"))
    quality = report["pair_quality"]
    assert quality["num_dropped"] == 2 and quality["dropped_seeds"] == [0, 5] and quality["weighting"]
    assert report["num_train_generated"] == 6
    saved = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert saved["pair_quality"] == quality and saved["args"]["drop_worst_pairs"] == 0.25

    with pytest.raises(SystemExit) as error:  # an unscored dataset: one line naming the dataset and the column
        distill_command.main(base_args(tmp_path / "unscored", *common, "--generated_dataset", plain,
                                       "--pair_quality_weighting"))
    assert error.value.code == 2
    with pytest.raises(SystemExit):  # a fraction outside [0, 1), and the levers without generated pairs
        distill_command.parse_args(base_args(tmp_path / "x", *common, "--generated_dataset", plain,
                                             "--drop_worst_pairs", "1"))
    with pytest.raises(SystemExit):
        distill_command.parse_args(base_args(tmp_path / "x", "--mode", "real", "--pair_quality_weighting"))


def test_unscored_dataset_error_names_dataset_and_column(tmp_path, capsys):
    plain = make_generated_dataset(tmp_path / "gen", num_rows=4)
    with pytest.raises(SystemExit):
        distill_command.main(base_args(tmp_path / "out", "--mode", "soft", "--generated_dataset", plain,
                                       "--max_train_steps", "1", "--drop_worst_pairs", "0.5"))
    err = capsys.readouterr().err
    assert f"--generated_dataset {plain} has no 'pair_quality' column" in err and "dakter relabel --score_only" in err


# ----------------------------------------------------------------------------------------------------------------------
# Resuming a run of an older version (students saved without ownership markers)
# ----------------------------------------------------------------------------------------------------------------------


def strip_markers(output_dir):
    """What an output directory of a dakter_hf version before the ownership markers looks like."""
    for root, _, files in os.walk(output_dir):
        for name in files:
            if name == OWNER_MARKER or (name == "README.md" and os.path.basename(root) in ("best", "final")):
                os.remove(os.path.join(root, name))


def test_resume_adopts_the_students_an_older_version_saved(tmp_path):
    output_dir = tmp_path / "run"
    common = ["--mode", "real", "--eval_steps", "1", "--checkpointing_steps", "2", "--num_train_samples", "4"]
    distill_command.main(base_args(output_dir, *common, "--max_train_steps", "2"))
    strip_markers(output_dir)
    assert not (output_dir / "best" / OWNER_MARKER).exists()
    report = distill_command.main(base_args(output_dir, *common, "--max_train_steps", "4",
                                            "--resume_from_checkpoint", "latest"))
    assert report["global_step"] == 4
    for name in ("best", "final"):
        assert (output_dir / name / OWNER_MARKER).exists() and (output_dir / name / "README.md").exists()


def test_foreign_student_directories_are_still_protected(tmp_path, capsys):
    output_dir = tmp_path / "run"
    common = ["--mode", "real", "--eval_steps", "1", "--checkpointing_steps", "2", "--num_train_samples", "4"]
    distill_command.main(base_args(output_dir, *common, "--max_train_steps", "2"))
    strip_markers(output_dir)
    (output_dir / "best" / "notes.txt").write_text("my own notes")  # not only a saved student
    (output_dir / "final" / "config.json").write_text(json.dumps({"model_type": "bert"}))  # not a SegFormer
    assert adopt_unmarked_students(output_dir) == []
    with pytest.raises(SystemExit):
        distill_command.main(base_args(output_dir, *common, "--max_train_steps", "4",
                                       "--resume_from_checkpoint", "latest"))
    assert "exists but was not created by dakter_hf student" in capsys.readouterr().err
    assert (output_dir / "best" / "notes.txt").read_text() == "my own notes"
    # a student directory beside no checkpoint of this run (or a checkpoint holding other files) is not adopted
    (output_dir / "best" / "notes.txt").unlink()
    for checkpoint in output_dir.glob("checkpoint-*"):
        (checkpoint / "user.txt").write_text("x")
    assert adopt_unmarked_students(output_dir) == []
