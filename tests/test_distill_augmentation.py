"""`augment_distillation_batch` (`examples/distill.py --augment`): one random symmetry of the square per row,
applied alike to the image, the hard mask and -- for generated rows -- the soft labels."""

import torch

from dakter_hf.distill.data import augment_distillation_batch
from dakter_hf.seeding import step_generator


def pixelwise_batch(batch_size=16, size=8):
    """Rows whose mask and soft labels are functions of their own image pixel, so any misalignment shows."""
    pixel_values = torch.randn(batch_size, 1, size, size, generator=torch.Generator().manual_seed(0))
    oil = torch.sigmoid(3 * pixel_values[:, 0])
    is_generated = torch.arange(batch_size) % 2 == 1
    labels = (pixel_values[:, 0] > 0).long()
    labels[is_generated] = 255  # generated rows carry no hard mask
    return {"pixel_values": pixel_values, "labels": labels, "is_generated": is_generated,
            "soft_labels": torch.stack([1 - oil, oil], dim=1)}


def test_soft_labels_follow_the_image_of_generated_rows():
    batch = pixelwise_batch()
    out = augment_distillation_batch(batch, step_generator(0, 3, 0))
    x = out["pixel_values"][:, 0]
    generated = batch["is_generated"]
    assert torch.allclose(out["soft_labels"][:, 1], torch.sigmoid(3 * x), atol=1e-6)
    assert torch.allclose(out["soft_labels"].sum(dim=1), torch.ones_like(x))
    assert torch.equal(out["labels"][~generated], (x[~generated] > 0).long())
    assert bool((out["labels"][generated] == 255).all())
    # The rows were transformed (not all identities), each one by its own draw, and nothing else changed.
    changed = [not torch.equal(a, b) for a, b in zip(out["pixel_values"], batch["pixel_values"])]
    assert 0 < sum(changed) < len(changed)
    assert torch.equal(out["is_generated"], generated)
    # Same generator, same draws (exact resume); the input batch is left as it was.
    again = augment_distillation_batch(batch, step_generator(0, 3, 0))
    assert all(torch.equal(out[k], again[k]) for k in out)
    assert torch.equal(batch["soft_labels"], pixelwise_batch()["soft_labels"])


def test_real_only_batch_without_soft_labels():
    batch = pixelwise_batch()
    batch.pop("soft_labels")
    batch["labels"] = (batch["pixel_values"][:, 0] > 0).long()
    out = augment_distillation_batch(batch, step_generator(1, 0, 0))
    assert "soft_labels" not in out
    assert torch.equal(out["labels"], (out["pixel_values"][:, 0] > 0).long())
