"""Class balance (issue #24): weights that give generated pairs the real pairs' class frequencies
(`dakter_hf.distill.class_balance`) and `examples/distill.py --balance_generated_classes`."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from datasets import Dataset, load_from_disk
from test_distill import RESOLUTION, base_args

from dakter_hf.commands import distill as distill_command
from dakter_hf.data import SIMULATED_ID2LABEL_5, load_dataset_by_name
from dakter_hf.data.errors import DataError
from dakter_hf.distill.class_balance import (
    balance_generated_classes,
    class_balance_weights,
    generated_class_fractions,
    real_class_fractions,
)
from dakter_hf.generation import encode_soft_labels, generated_features


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def two_class(oil):
    oil = np.asarray(oil, dtype=np.float64)
    return np.stack([1 - oil, oil], axis=1)


def test_weights_reach_the_target_with_mean_one():
    fractions = two_class([0.0, 0.1, 0.2, 0.05, 0.4])
    weights = class_balance_weights(fractions, np.array([0.8, 0.2]))
    assert weights.mean() == pytest.approx(1.0)
    assert (weights @ fractions / weights.sum()) == pytest.approx([0.8, 0.2], abs=1e-8)
    # an exponential tilt toward oil: the weight grows with a pair's oil fraction
    order = np.argsort(fractions[:, 1])
    assert np.all(np.diff(weights[order]) > 0)


def test_target_already_met_leaves_the_weights_alone():
    fractions = two_class([0.1, 0.3])
    assert class_balance_weights(fractions, np.array([0.8, 0.2])) == pytest.approx([1.0, 1.0])
    base = np.array([3.0, 1.0])  # base-weighted mean oil: (0.3 + 0.3) / 4 = 0.15
    assert class_balance_weights(fractions, np.array([0.85, 0.15]), base_weights=base) == pytest.approx([1.5, 0.5])


def test_weights_stay_close_to_the_base_weights():
    fractions = two_class([0.1, 0.1, 0.3])
    base = np.array([2.0, 1.0, 1.0])
    weights = class_balance_weights(fractions, np.array([0.8, 0.2]), base_weights=base)
    # the two pairs of equal fractions keep the ratio of their base weights; a zero base weight stays zero
    assert weights[0] / weights[1] == pytest.approx(2.0)
    assert class_balance_weights(fractions, np.array([0.8, 0.2]), base_weights=np.array([1.0, 0.0, 1.0]))[1] == 0


def test_three_classes():
    rng = np.random.default_rng(0)
    fractions = rng.dirichlet([2.0, 1.0, 1.0], size=50)
    target = np.array([0.4, 0.35, 0.25])
    weights = class_balance_weights(fractions, target)
    assert weights @ fractions / weights.sum() == pytest.approx(target, abs=1e-8)


def test_unreachable_target_is_an_error_naming_the_span():
    with pytest.raises(DataError, match=r"class 1: 0\.0500 \.\. 0\.1000"):
        class_balance_weights(two_class([0.05, 0.1]), np.array([0.8, 0.2]))


def test_class_fractions_of_real_masks_and_generated_soft_labels(tmp_path):
    real = Dataset.from_dict({"mask": [np.array([[0, 1], [1, 255]], dtype=np.uint8),
                                       np.array([[0, 0], [0, 0]], dtype=np.uint8)]})
    assert real_class_fractions(real, 2) == pytest.approx([5 / 7, 2 / 7])  # the 255 pixel is not counted
    with pytest.raises(DataError, match="label 2"):
        real_class_fractions(Dataset.from_dict({"mask": [np.full((2, 2), 2, dtype=np.uint8)]}), 2)
    probs = torch.zeros(2, 2, 4, 4)
    probs[0, 0] = 1.0
    probs[1, 0, :2], probs[1, 1, 2:] = 1.0, 1.0
    generated = Dataset.from_dict({"image": [np.zeros((4, 4), dtype=np.uint8)] * 2,
                                   "soft_label": list(encode_soft_labels(probs)),
                                   "label": [p.argmax(0).numpy().astype(np.uint8) for p in probs], "seed": [0, 1]},
                                  features=generated_features(2, 4, 4))
    assert generated_class_fractions(generated) == pytest.approx(np.array([[1.0, 0.0], [0.5, 0.5]]), abs=1e-6)
    balance = balance_generated_classes(generated, real, {0: "background", 1: "oil"}, name="gen")
    report = balance.report
    assert report["real_class_fractions"]["oil"] == pytest.approx(2 / 7, abs=1e-6)
    assert report["generated_class_fractions"]["oil"] == pytest.approx(0.25)
    assert report["balanced_class_fractions"]["oil"] == pytest.approx(2 / 7, abs=1e-6)
    assert balance.weights[1] > 1 > balance.weights[0] and report["effective_num_pairs"] < 2


def generated_from_masks(path, masks, num_background_rows):
    """A generated set whose soft labels are the one-hot `masks` plus `num_background_rows` all-background rows."""
    num_classes = len(SIMULATED_ID2LABEL_5)
    labels = [np.asarray(m, dtype=np.int64) for m in masks] + [np.zeros((RESOLUTION, RESOLUTION), dtype=np.int64)
                                                                 for _ in range(num_background_rows)]
    probs = torch.stack([torch.nn.functional.one_hot(torch.from_numpy(m), num_classes).permute(2, 0, 1).float()
                         for m in labels])
    Dataset.from_dict({"image": [np.full((RESOLUTION, RESOLUTION), 128, dtype=np.uint8)] * len(labels),
                       "soft_label": list(encode_soft_labels(probs)),
                       "label": [m.astype(np.uint8) for m in labels], "seed": list(range(len(labels)))},
                      features=generated_features(num_classes, RESOLUTION, RESOLUTION,
                                                  id2label=SIMULATED_ID2LABEL_5)).save_to_disk(str(path))
    return str(path)


def test_distill_balances_the_generated_classes_and_reports_them(tmp_path):
    real = load_dataset_by_name("simulated", split="train", num_samples=8, resolution=RESOLUTION)
    target = real_class_fractions(real, len(SIMULATED_ID2LABEL_5))
    generated = generated_from_masks(tmp_path / "gen", real["mask"], num_background_rows=4)
    common = ["--mode", "soft", "--max_train_steps", "2", "--eval_steps", "2", "--generated_ratio", "0.5",
              "--generated_dataset", generated]
    report = distill_command.main(base_args(tmp_path / "student", *common, "--balance_generated_classes"))
    balance = report["class_balance"]
    names = [SIMULATED_ID2LABEL_5[k] for k in range(len(target))]
    assert [balance["balanced_class_fractions"][n] for n in names] == pytest.approx(target, abs=1e-4)
    assert balance["generated_class_fractions"][names[0]] > target[0]  # the background rows, before balancing
    assert balance["weight_min"] < 1 < balance["weight_max"]
    saved = json.loads((tmp_path / "student" / "metrics.json").read_text())
    assert saved["class_balance"] == balance and saved["args"]["balance_generated_classes"] is True
    assert json.loads((tmp_path / "student" / "metrics.json").read_text()).get("pair_quality") is None
    assert len(load_from_disk(generated)) == report["num_train_generated"] == 12  # no pair dropped


def test_distill_class_balance_errors(tmp_path, capsys):
    generated = generated_from_masks(tmp_path / "gen", [], num_background_rows=4)  # background only: unreachable
    with pytest.raises(SystemExit) as error:
        distill_command.main(base_args(tmp_path / "student", "--mode", "soft", "--max_train_steps", "1",
                                       "--generated_dataset", generated, "--balance_generated_classes"))
    assert error.value.code == 2
    err = capsys.readouterr().err
    assert f"--balance_generated_classes, --generated_dataset {generated}: No weighting" in err
    with pytest.raises(SystemExit):
        distill_command.parse_args(base_args(tmp_path / "x", "--mode", "real", "--balance_generated_classes"))
