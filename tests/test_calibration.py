"""Tests for dakter_hf.metrics.calibration: ECE (equal-width bins), argmax ECE and NLL, against hand-computed values."""

import math

import numpy as np
import pytest
import torch

from dakter_hf.metrics import CalibrationMetrics, expected_calibration_error, negative_log_likelihood


def two_class(oil_probabilities):
    """(1, 2, 1, W) probabilities from the oil probability of each pixel of a 1 x W image."""
    q1 = torch.tensor(oil_probabilities, dtype=torch.float64)
    return torch.stack([1 - q1, q1])[None, :, None, :]


# Four pixels, 4 bins ((0, .25], (.25, .5], (.5, .75], (.75, 1]):
#   q(oil) .9, label 1: confidence .9, right   -> bin 4
#   q(oil) .8, label 0: confidence .8, wrong   -> bin 4
#   q(oil) .3, label 0: confidence .7, right   -> bin 3
#   q(oil) .6, label 1: confidence .6, right   -> bin 3
# bin 4: accuracy .5, confidence .85; bin 3: accuracy 1, confidence .65
# ECE = 2/4 * |.5 - .85| + 2/4 * |1 - .65| = .35; argmax ECE = 1 - 3/4 = .25
# NLL = -(ln .9 + ln .2 + ln .7 + ln .6) / 4
PROBABILITIES = two_class([0.9, 0.8, 0.3, 0.6])
LABELS = torch.tensor([[[1, 0, 0, 1]]])
HAND_NLL = -(math.log(0.9) + math.log(0.2) + math.log(0.7) + math.log(0.6)) / 4


def test_hand_computed_values():
    metrics = CalibrationMetrics(2, num_bins=4)
    metrics.update(PROBABILITIES, LABELS)
    results = metrics.compute()
    assert results["ece"] == pytest.approx(0.35)
    assert results["argmax_ece"] == pytest.approx(0.25)
    assert results["pixel_accuracy"] == pytest.approx(0.75)
    assert results["nll"] == pytest.approx(HAND_NLL)
    assert results["num_pixels"] == 4
    assert results["bin_counts"] == [0, 0, 2, 2]
    assert results["bin_confidence"][2:] == pytest.approx([0.65, 0.85])
    assert results["bin_accuracy"][2:] == pytest.approx([1.0, 0.5])
    assert all(math.isnan(v) for v in results["bin_confidence"][:2] + results["bin_accuracy"][:2])
    assert expected_calibration_error(PROBABILITIES, LABELS, num_bins=4) == pytest.approx(0.35)
    assert negative_log_likelihood(PROBABILITIES, LABELS) == pytest.approx(HAND_NLL)


def test_bin_edges_are_right_closed():
    # confidence .5 belongs to (.25, .5], confidence 1 to the last bin; a 3-class pixel at 1/3 to the first of 2 bins
    metrics = CalibrationMetrics(2, num_bins=4)
    metrics.update(two_class([0.5, 1.0]), torch.tensor([[[0, 1]]]))
    assert metrics.compute()["bin_counts"] == [0, 1, 0, 1]
    uniform = torch.full((1, 3, 1, 1), 1 / 3, dtype=torch.float64)
    three = CalibrationMetrics(3, num_bins=2)
    three.update(uniform, torch.tensor([[[2]]]))
    result = three.compute()
    assert result["bin_counts"] == [1, 0]
    assert result["ece"] == pytest.approx(1 / 3)  # predicted class 0 (lowest index on ties), label 2: wrong


def test_one_hot_ece_equals_argmax_ece():
    one_hot = torch.nn.functional.one_hot(PROBABILITIES.argmax(dim=1), 2).movedim(-1, 1).double()
    ece = expected_calibration_error(one_hot, LABELS, num_bins=4)
    metrics = CalibrationMetrics(2, num_bins=4)
    metrics.update(PROBABILITIES, LABELS)
    assert ece == pytest.approx(metrics.compute()["argmax_ece"])
    assert ece == pytest.approx(0.25)


def test_perfectly_calibrated_and_zero_probability():
    # ten pixels at confidence .7 for oil, seven of them oil: ECE 0
    labels = torch.tensor([[[1] * 7 + [0] * 3]])
    assert expected_calibration_error(two_class([0.7] * 10), labels) == pytest.approx(0.0, abs=1e-12)
    # a zero probability on the true class costs -log(eps), not inf
    nll = negative_log_likelihood(two_class([1.0]), torch.tensor([[[0]]]), eps=1e-6)
    assert nll == pytest.approx(-math.log(1e-6))


def test_ignored_pixels_and_batches_add_up():
    probabilities = torch.cat([PROBABILITIES, two_class([0.5, 0.99, 0.01, 0.2])], dim=-1)  # (1, 2, 1, 8)
    labels = torch.tensor([[[1, 0, 0, 1, 255, 255, 255, 255]]])
    metrics = CalibrationMetrics(2, num_bins=4)
    metrics.update(probabilities, labels)
    assert metrics.compute()["ece"] == pytest.approx(0.35)
    assert metrics.compute()["num_pixels"] == 4

    rng = np.random.default_rng(0)
    logits = torch.from_numpy(rng.normal(size=(6, 3, 5, 7)))
    probabilities, labels = logits.softmax(dim=1), torch.from_numpy(rng.integers(0, 3, size=(6, 5, 7)))
    whole, parts = CalibrationMetrics(3), CalibrationMetrics(3)
    whole.update(probabilities, labels)
    for start in range(0, 6, 2):
        parts.update(probabilities[start:start + 2].numpy(), labels[start:start + 2].numpy())
    a, b = whole.compute(), parts.compute()
    assert a["ece"] == pytest.approx(b["ece"]) and a["nll"] == pytest.approx(b["nll"])
    # brute force: the NLL is the cross-entropy of the log-probabilities
    assert a["nll"] == pytest.approx(float(torch.nn.functional.nll_loss(probabilities.log(), labels)))
    parts.reset()
    assert math.isnan(parts.compute()["ece"]) and parts.compute()["num_pixels"] == 0


class _FakeAccelerator:
    """Stands in for a 2-process accelerator whose processes saw the same data."""

    num_processes = 2
    device = torch.device("cpu")

    def reduce(self, tensor, reduction="mean"):
        assert reduction == "sum"
        return tensor * self.num_processes


def test_reduce_across_processes():
    metrics = CalibrationMetrics(2, num_bins=4)
    metrics.update(PROBABILITIES, LABELS)
    local = metrics.compute()
    reduced = metrics.compute(_FakeAccelerator())
    assert reduced["num_pixels"] == 8
    assert reduced["ece"] == pytest.approx(local["ece"]) and reduced["nll"] == pytest.approx(local["nll"])
    assert metrics.compute()["num_pixels"] == 4  # local statistics untouched


@pytest.mark.parametrize(
    "probabilities, labels, match",
    [
        (two_class([0.9]) * 0.5, torch.tensor([[[1]]]), "sum to 1"),
        (torch.full((1, 3, 1, 1), 1 / 3), torch.tensor([[[1]]]), r"shape \(B, 2, H, W\)"),
        (two_class([0.9, 0.1]), torch.tensor([[[1]]]), "`labels` must have shape"),
        (two_class([0.9]), torch.tensor([[[2]]]), r"values must lie in \[0, 2\)"),
        (two_class([0.9]), torch.tensor([[[1.0]]]), "integer class indices"),
        (two_class([1.5]), torch.tensor([[[1]]]), r"in \[0, 1\]"),
        (torch.tensor([[[[1]], [[0]]]]), torch.tensor([[[1]]]), "must be floats"),
    ],
)
def test_bad_input(probabilities, labels, match):
    with pytest.raises(ValueError, match=match):
        CalibrationMetrics(2).update(probabilities, labels)


def test_bad_arguments():
    with pytest.raises(ValueError, match="num_classes"):
        CalibrationMetrics(1)
    with pytest.raises(ValueError, match="num_bins"):
        CalibrationMetrics(2, num_bins=0)
    with pytest.raises(ValueError, match="eps"):
        CalibrationMetrics(2, eps=0.0)
    with pytest.raises(ValueError, match=r"\(B, K, H, W\)"):
        expected_calibration_error(torch.ones(2, 2), torch.zeros(2, dtype=torch.long))
