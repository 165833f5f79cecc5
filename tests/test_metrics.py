"""Tests for dakter_hf.metrics: confusion matrix, split-level metrics, process reduction, evaluate module."""

import json
import math
import subprocess
import sys

import evaluate
import numpy as np
import pytest
import torch

from dakter_hf.metrics import (
    SEGMENTATION_METRIC_PATH,
    SegmentationMetrics,
    compute_segmentation_metrics,
    confusion_matrix,
    load_segmentation_metric,
    metric_key_names,
    reduce_confusion_matrix,
)


def brute_force_metrics(preds: np.ndarray, labels: np.ndarray, num_classes: int, ignore_index: int = 255):
    """Independent reference: per-class boolean masks, no confusion matrix."""
    keep = labels != ignore_index
    p, t = preds[keep], labels[keep]
    out = {}
    ious, f1s, precs, recs = [], [], [], []
    for c in range(num_classes):
        tp = np.sum((p == c) & (t == c))
        fp = np.sum((p == c) & (t != c))
        fn = np.sum((p != c) & (t == c))
        if tp + fp + fn == 0:
            iou = f1 = prec = rec = math.nan
        else:
            iou = tp / (tp + fp + fn)
            f1 = 2 * tp / (2 * tp + fp + fn)
            prec = tp / (tp + fp) if tp + fp else 0.0
            rec = tp / (tp + fn) if tp + fn else 0.0
            ious.append(iou), f1s.append(f1), precs.append(prec), recs.append(rec)
        out.update({f"iou_{c}": iou, f"f1_{c}": f1, f"precision_{c}": prec, f"recall_{c}": rec})
    out["mean_iou"], out["mean_f1"] = np.mean(ious), np.mean(f1s)
    out["mean_precision"], out["mean_recall"] = np.mean(precs), np.mean(recs)
    out["pixel_accuracy"] = np.mean(p == t)
    return out


def assert_metrics_close(actual: dict, expected: dict):
    assert set(actual) == set(expected)
    for key, value in expected.items():
        if math.isnan(value):
            assert math.isnan(actual[key]), key
        else:
            assert actual[key] == pytest.approx(value, abs=1e-12), key


def test_hand_computed_confusion_matrix_and_metrics():
    labels = torch.tensor([[0, 0, 1, 1], [1, 2, 2, 255]])
    preds = torch.tensor([[0, 1, 1, 1], [2, 2, 0, 1]])
    cm = confusion_matrix(preds, labels, num_classes=3)
    # rows: labels, columns: predictions; the ignored pixel (label 255) is not counted
    expected = torch.tensor([[1, 1, 0], [0, 2, 1], [1, 0, 1]])
    assert torch.equal(cm, expected)

    results = compute_segmentation_metrics(cm, id2label={0: "sea", 1: "oil spill", 2: "look-alike"})
    # class 0: tp 1, fp 1, fn 1 -> IoU 1/3, F1 1/2; class 1: tp 2, fp 1, fn 1 -> IoU 1/2, F1 2/3;
    # class 2: tp 1, fp 1, fn 1 -> IoU 1/3, F1 1/2
    assert results["iou_sea"] == pytest.approx(1 / 3)
    assert results["iou_oil_spill"] == pytest.approx(1 / 2)
    assert results["iou_look_alike"] == pytest.approx(1 / 3)
    assert results["mean_iou"] == pytest.approx((1 / 3 + 1 / 2 + 1 / 3) / 3)
    assert results["f1_oil_spill"] == pytest.approx(2 / 3)
    assert results["mean_f1"] == pytest.approx((1 / 2 + 2 / 3 + 1 / 2) / 3)
    assert results["precision_oil_spill"] == pytest.approx(2 / 3)
    assert results["recall_look_alike"] == pytest.approx(1 / 2)
    assert results["pixel_accuracy"] == pytest.approx(4 / 7)
    assert all(type(v) is float for v in results.values())
    assert json.loads(json.dumps(results)) == pytest.approx(results)


def test_absent_class_is_nan_and_excluded_from_means():
    cm = np.array([[5, 1, 0], [2, 3, 0], [0, 0, 0]])  # class 2 neither labelled nor predicted
    results = compute_segmentation_metrics(cm)
    for metric in ("iou", "f1", "precision", "recall"):
        assert math.isnan(results[f"{metric}_2"])
    assert results["mean_iou"] == pytest.approx((5 / 8 + 3 / 6) / 2)
    json.dumps(results)  # NaN is still serialisable by the standard library


def test_missed_and_hallucinated_classes_score_zero():
    # class 1 present in labels but never predicted; class 2 predicted but never labelled
    cm = np.array([[4, 0, 1], [2, 0, 0], [0, 0, 0]])
    results = compute_segmentation_metrics(cm)
    assert results["iou_1"] == 0.0 and results["precision_1"] == 0.0 and results["recall_1"] == 0.0
    assert results["iou_2"] == 0.0 and results["precision_2"] == 0.0 and results["recall_2"] == 0.0
    assert results["mean_iou"] == pytest.approx((4 / 7 + 0 + 0) / 3)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_random_data_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    num_classes = 5
    labels = rng.integers(0, num_classes, size=(3, 17, 13))
    labels[rng.random(labels.shape) < 0.1] = 255
    preds = np.where(rng.random(labels.shape) < 0.6, np.clip(labels, 0, num_classes - 1), 0)
    preds = np.where(rng.random(labels.shape) < 0.2, rng.integers(0, num_classes, labels.shape), preds)
    if seed == 2:  # make a class absent from both
        labels[labels == 4] = 255
        preds[preds == 4] = 3

    accumulator = SegmentationMetrics(num_classes)
    for i in range(labels.shape[0]):  # accumulate image by image
        accumulator.update(torch.from_numpy(preds[i : i + 1]), torch.from_numpy(labels[i : i + 1]))
    assert_metrics_close(accumulator.compute(), brute_force_metrics(preds, labels, num_classes))


def test_ignore_index_none_and_custom():
    labels = torch.tensor([[0, -1, 1]])
    preds = torch.tensor([[0, 0, 1]])
    assert confusion_matrix(preds, labels, 2, ignore_index=-1).sum() == 2
    with pytest.raises(ValueError, match="labels"):
        confusion_matrix(preds, labels, 2, ignore_index=None)


def test_update_accepts_low_resolution_logits():
    labels = torch.randint(0, 3, (2, 16, 16))
    logits = torch.nn.functional.one_hot(labels, 3).permute(0, 3, 1, 2).float() * 10
    low_res = logits[:, :, ::4, ::4]
    metrics = SegmentationMetrics(3)
    metrics.update(low_res, labels)
    upsampled = torch.nn.functional.interpolate(low_res, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(metrics.matrix, confusion_matrix(upsampled.argmax(1), labels, 3))
    metrics.reset()
    metrics.update(logits, labels)
    assert metrics.compute()["mean_iou"] == 1.0


@pytest.mark.parametrize(
    "preds, labels, match",
    [
        (torch.zeros(2, 3, dtype=torch.long), torch.zeros(2, 4, dtype=torch.long), "same shape"),
        (torch.zeros(2, 3), torch.zeros(2, 3, dtype=torch.long), "integer"),
        (torch.full((2, 3), 7), torch.zeros(2, 3, dtype=torch.long), "predictions"),
    ],
)
def test_confusion_matrix_errors(preds, labels, match):
    with pytest.raises(ValueError, match=match):
        confusion_matrix(preds, labels, 3)


def test_argument_errors():
    with pytest.raises(ValueError, match="confusion_matrix"):
        compute_segmentation_metrics(np.zeros((2, 3)))
    with pytest.raises(ValueError, match="id2label"):
        metric_key_names(3, {0: "a", 1: "b"})
    with pytest.raises(ValueError, match="num_classes"):
        SegmentationMetrics(0)
    with pytest.raises(ValueError, match=r"\(B, 2, h, w\)"):
        SegmentationMetrics(2).update(torch.zeros(1, 3, 4, 4), torch.zeros(1, 4, 4, dtype=torch.long))


def test_key_names_are_sanitised_and_unique():
    assert metric_key_names(3, {"0": "Sea", "1": "oil spill", "2": "oil-spill"}) == ["sea", "oil_spill", "oil_spill_2"]


class _FakeAccelerator:
    """Stands in for a 2-process accelerator: every process holds the same matrix, so the sum doubles it."""

    num_processes = 2
    device = torch.device("cpu")

    def __init__(self):
        self.calls = []

    def reduce(self, tensor, reduction="mean"):
        self.calls.append(reduction)
        return tensor * self.num_processes


def test_reduce_across_processes():
    metrics = SegmentationMetrics(2)
    metrics.update(torch.tensor([[0, 1, 1]]), torch.tensor([[0, 1, 0]]))
    local = metrics.matrix.clone()

    from accelerate import Accelerator

    assert torch.equal(metrics.reduce(Accelerator(cpu=True)), local)  # single process: no-op
    assert reduce_confusion_matrix(local, None) is local

    fake = _FakeAccelerator()
    assert torch.equal(metrics.reduce(fake), 2 * local)
    assert fake.calls == ["sum"]
    assert torch.equal(metrics.matrix, local)  # local accumulator untouched
    # ratios are unchanged when every process saw the same data
    assert metrics.compute(_FakeAccelerator()) == metrics.compute()


def test_evaluate_module_offline_matches_plain_function():
    rng = np.random.default_rng(3)
    labels = rng.integers(0, 3, size=(4, 9, 11))
    labels[:, 0, :] = 255
    preds = rng.integers(0, 3, size=(4, 9, 11))
    id2label = {0: "sea", 1: "oil", 2: "ship"}

    metric = evaluate.load(SEGMENTATION_METRIC_PATH)  # a local path: no network needed
    metric.add_batch(predictions=preds[:2], references=labels[:2])
    metric.add_batch(predictions=preds[2:], references=labels[2:])
    from_evaluate = metric.compute(num_classes=3, ignore_index=255, id2label=id2label)

    expected = compute_segmentation_metrics(confusion_matrix(preds, labels, 3), id2label=id2label)
    assert_metrics_close(from_evaluate, expected)

    one_shot = load_segmentation_metric().compute(predictions=preds, references=labels, num_classes=3)
    assert one_shot["mean_iou"] == pytest.approx(expected["mean_iou"])


_TWO_PROCESS_SCRIPT = """
import torch
from accelerate import Accelerator, debug_launcher
from dakter_hf.metrics import SegmentationMetrics


def run():
    accelerator = Accelerator(cpu=True)
    metrics = SegmentationMetrics(2)
    rank = accelerator.process_index  # rank 0 predicts [0, 1], rank 1 predicts [1, 1]; labels [0, 1]
    metrics.update(torch.tensor([[rank, 1]]), torch.tensor([[0, 1]]))
    assert accelerator.num_processes == 2
    assert metrics.reduce(accelerator).tolist() == [[1, 1], [0, 2]]
    assert metrics.compute(accelerator)["iou_0"] == 0.5
    assert metrics.matrix.sum() == 2  # local accumulator untouched


if __name__ == "__main__":
    debug_launcher(run, num_processes=2)
    print("OK")
"""


def test_reduce_with_two_real_processes(tmp_path):
    # A fresh interpreter: accelerate's process state is a per-process singleton.
    script = tmp_path / "two_process.py"
    script.write_text(_TWO_PROCESS_SCRIPT)
    result = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0 and "OK" in result.stdout, result.stderr[-2000:]
