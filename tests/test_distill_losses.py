"""Tests for dakter_hf.distill.losses: CE on real pairs, KD on generated soft labels, the three modes."""

import math

import pytest
import torch
import torch.nn.functional as F

from dakter_hf.distill.losses import (
    DISTILLATION_MODES,
    distillation_loss,
    knowledge_distillation_loss,
    upsample_logits,
)


def _random_q(batch, classes, height, width, generator=None, with_zeros=True):
    q = torch.rand(batch, classes, height, width, generator=generator)
    if with_zeros:
        q[:, 0] = 0.0  # exact zeros: 0 * log 0 must be 0
    return q / q.sum(dim=1, keepdim=True)


def test_kd_is_zero_when_student_matches_soft_labels():
    torch.manual_seed(0)
    tau = 2.0
    q = _random_q(2, 3, 8, 8, with_zeros=False)
    logits = tau * torch.log(q)  # softmax(z / tau) == q
    assert knowledge_distillation_loss(logits, q, kd_temperature=tau).abs() < 1e-6
    out = distillation_loss(logits, {"soft_labels": q}, mode="soft", kd_temperature=tau)
    assert out.loss.abs() < 1e-6 and out.num_generated == 2 and out.num_real == 0


def test_kd_matches_hand_computed_kl_times_tau_squared():
    tau = 2.0
    # one pixel, two classes: q = (1/4, 3/4); z = (0, ln 4), so softmax(z / 2) = softmax(0, ln 2) = (1/3, 2/3)
    q = torch.tensor([0.25, 0.75]).view(1, 2, 1, 1)
    z = torch.tensor([0.0, math.log(4.0)]).view(1, 2, 1, 1)
    expected = tau**2 * (0.25 * math.log(0.25 / (1 / 3)) + 0.75 * math.log(0.75 / (2 / 3)))
    assert knowledge_distillation_loss(z, q, tau).item() == pytest.approx(expected, rel=1e-5)
    # and a one-hot q with an exact zero: KL = -log p(true class)
    q_hot = torch.tensor([0.0, 1.0]).view(1, 2, 1, 1)
    assert knowledge_distillation_loss(z, q_hot, 1.0).item() == pytest.approx(-math.log(0.8), rel=1e-5)


def test_kd_is_invariant_to_spatial_size():
    # the same per-pixel content tiled over a larger map must give the same loss (not "batchmean" scaling)
    torch.manual_seed(1)
    q = _random_q(2, 4, 4, 4)
    z = torch.randn(2, 4, 4, 4)
    small = distillation_loss(z, {"soft_labels": q}, kd_temperature=1.5).loss
    large = distillation_loss(z.repeat(1, 1, 8, 8), {"soft_labels": q.repeat(1, 1, 8, 8)}, kd_temperature=1.5).loss
    assert large.item() == pytest.approx(small.item(), rel=1e-5)
    assert torch.isfinite(small)


def test_logits_are_upsampled_bilinearly_to_label_size():
    torch.manual_seed(2)
    q = _random_q(1, 3, 16, 16)
    z = torch.randn(1, 3, 4, 4, requires_grad=True)
    up = F.interpolate(z, size=(16, 16), mode="bilinear", align_corners=False)
    assert torch.equal(upsample_logits(z, (16, 16)), up)
    expected = F.kl_div(F.log_softmax(up, 1), q, reduction="none").sum(1).mean()
    assert knowledge_distillation_loss(z, q).item() == pytest.approx(expected.item(), rel=1e-5)


def test_gradient_flows_and_is_finite_with_zero_probabilities():
    q = _random_q(2, 3, 8, 8)
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    out = distillation_loss(z, {"soft_labels": q}, mode="soft", kd_temperature=3.0)
    out.loss.backward()
    assert z.grad is not None and torch.isfinite(z.grad).all() and z.grad.abs().sum() > 0


def test_hard_mode_equals_cross_entropy_on_argmax():
    torch.manual_seed(3)
    q = _random_q(3, 4, 8, 8)
    z = torch.randn(3, 4, 2, 2)
    out = distillation_loss(z, {"soft_labels": q}, mode="hard", kd_temperature=5.0)  # tau unused in hard mode
    expected = F.cross_entropy(upsample_logits(z, (8, 8)), q.argmax(1))
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss_generated.item() == pytest.approx(expected.item(), rel=1e-5)


def test_real_only_batch_is_cross_entropy_with_ignore_index():
    torch.manual_seed(4)
    labels = torch.randint(0, 3, (2, 8, 8))
    labels[:, :2] = 255
    z = torch.randn(2, 3, 2, 2, requires_grad=True)
    out = distillation_loss(z, {"labels": labels}, mode="soft")
    expected = F.cross_entropy(upsample_logits(z, (8, 8)), labels, ignore_index=255)
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    assert out.loss_generated.item() == 0.0 and out.loss_generated.requires_grad  # zero, still in the graph
    out.loss.backward()


def test_mixed_batch_masks_each_sample_to_its_own_loss():
    torch.manual_seed(5)
    b, k, h, w = 4, 3, 8, 8
    is_generated = torch.tensor([False, True, False, True])
    labels = torch.randint(0, k, (b, h, w))
    labels[is_generated] = 255  # generated rows of `labels` are never read
    soft = _random_q(b, k, h, w)
    soft[~is_generated] = float("nan")  # real rows of `soft_labels` are never read
    z = torch.randn(b, k, 2, 2, requires_grad=True)
    batch = {"labels": labels, "soft_labels": soft, "is_generated": is_generated}

    out = distillation_loss(z, batch, mode="soft", kd_temperature=2.0, real_weight=0.5, generated_weight=2.0)
    real = distillation_loss(z[~is_generated], {"labels": labels[~is_generated]})
    generated = distillation_loss(z[is_generated], {"soft_labels": soft[is_generated]}, kd_temperature=2.0)
    assert out.num_real == 2 and out.num_generated == 2
    assert out.loss_real.item() == pytest.approx(real.loss.item(), rel=1e-5)
    assert out.loss_generated.item() == pytest.approx(generated.loss.item(), rel=1e-5)
    # same number of pixels on each side: total = (0.5 * real + 2 * generated) / 2
    expected = (0.5 * real.loss + 2.0 * generated.loss) / 2
    assert out.loss.item() == pytest.approx(expected.item(), rel=1e-5)
    out.loss.backward()
    assert torch.isfinite(z.grad).all()

    # "real" mode: the baseline ignores the generated samples entirely
    baseline = distillation_loss(z, batch, mode="real")
    assert baseline.loss.item() == pytest.approx(real.loss.item(), rel=1e-5)
    assert baseline.loss_generated.item() == 0.0


@pytest.mark.parametrize("mode", DISTILLATION_MODES)
def test_modes_share_one_code_path_on_real_only_batches(mode):
    labels = torch.randint(0, 2, (2, 4, 4))
    z = torch.randn(2, 2, 4, 4)
    reference = F.cross_entropy(z, labels)
    assert distillation_loss(z, {"labels": labels}, mode=mode).loss.item() == pytest.approx(reference.item(), rel=1e-5)


@pytest.mark.parametrize(
    "kwargs, batch, match",
    [
        ({"mode": "teacher"}, {"labels": torch.zeros(1, 4, 4, dtype=torch.long)}, "mode"),
        ({"kd_temperature": 0.0}, {"labels": torch.zeros(1, 4, 4, dtype=torch.long)}, "kd_temperature"),
        ({"real_weight": -1.0}, {"labels": torch.zeros(1, 4, 4, dtype=torch.long)}, "real_weight"),
        ({}, {"labels": torch.zeros(2, 4, 4, dtype=torch.long)}, "labels"),
        ({}, {"soft_labels": torch.full((1, 3, 4, 4), 1 / 3)}, "soft_labels"),
        ({}, {"soft_labels": torch.randn(1, 2, 4, 4)}, "probabilities"),
        ({}, {"labels": torch.zeros(1, 4, 4, dtype=torch.long), "soft_labels": torch.full((1, 2, 4, 4), 0.5)},
         "is_generated"),
        ({}, {"labels": torch.zeros(1, 4, 4, dtype=torch.long), "is_generated": torch.tensor([1])}, "is_generated"),
        ({}, {"is_generated": torch.tensor([True])}, "soft_labels"),
    ],
)
def test_errors_name_the_bad_argument(kwargs, batch, match):
    with pytest.raises(ValueError, match=match):
        distillation_loss(torch.zeros(1, 2, 4, 4), batch, **kwargs)
