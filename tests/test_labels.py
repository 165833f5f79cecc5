import datasets
import numpy as np
import pytest
import torch
from diffusers import DDPMScheduler

from dakter_hf import (
    estimate_balancing_factor,
    logits_to_clean_label,
    logits_to_soft_labels,
    masks_to_scaled_onehot,
)
from dakter_hf.labels import decode_soft_labels, encode_soft_labels, quantize_soft_labels


def test_masks_to_scaled_onehot_values_and_shape():
    masks = torch.tensor([[[0, 1], [2, 1]]])
    label = masks_to_scaled_onehot(masks, num_classes=3, label_scale=0.5)
    assert label.shape == (1, 3, 2, 2)
    assert set(label.unique().tolist()) == {-0.5, 0.5}
    assert torch.equal(label.argmax(dim=1), masks)
    # Exactly one +b per pixel.
    assert torch.equal((label > 0).sum(dim=1), torch.ones(1, 2, 2, dtype=torch.long))


@pytest.mark.parametrize(
    "masks, message",
    [
        (torch.zeros(2, 2, dtype=torch.long), "shape"),
        (torch.zeros(1, 2, 2), "integer"),
        (torch.full((1, 2, 2), 3), r"\[0, 3\)"),
        (torch.full((1, 2, 2), -1), r"\[0, 3\)"),
    ],
)
def test_masks_to_scaled_onehot_rejects_bad_masks(masks, message):
    with pytest.raises(ValueError, match=message):
        masks_to_scaled_onehot(masks, num_classes=3, label_scale=1.0)


def test_soft_labels_are_probabilities_and_temperature_flattens():
    logits = torch.randn(2, 4, 5, 5) * 3
    soft = logits_to_soft_labels(logits)
    torch.testing.assert_close(soft.sum(dim=1), torch.ones(2, 5, 5))
    warm = logits_to_soft_labels(logits, temperature=4.0)
    assert warm.max() < soft.max()
    assert torch.equal(warm.argmax(dim=1), soft.argmax(dim=1))
    with pytest.raises(ValueError, match="temperature"):
        logits_to_soft_labels(logits, temperature=0.0)


def test_clean_label_of_confident_logits_is_the_scaled_onehot():
    masks = torch.randint(0, 3, (2, 6, 6))
    confident = masks_to_scaled_onehot(masks, 3, 1.0) * 50.0  # logits: +50 at the class, -50 elsewhere
    clean = logits_to_clean_label(confident, label_scale=0.3)
    torch.testing.assert_close(clean, masks_to_scaled_onehot(masks, 3, 0.3))


def test_estimate_balancing_factor_is_rms_for_tensor_and_batches():
    images = torch.rand(10, 1, 8, 8) * 2 - 1
    expected = images.pow(2).mean().sqrt().item()
    assert estimate_balancing_factor(images) == pytest.approx(expected, rel=1e-6)
    batches = [images[:3], images[3:7], {"pixel_values": images[7:]}]
    assert estimate_balancing_factor(batches) == pytest.approx(expected, rel=1e-6)


def test_estimate_balancing_factor_rejects_bad_input():
    with pytest.raises(ValueError, match=r"\[-1, 1\]"):
        estimate_balancing_factor(torch.rand(2, 1, 4, 4) * 255)
    with pytest.raises(ValueError, match="no images"):
        estimate_balancing_factor([])
    with pytest.raises(ValueError, match="pixel_values"):
        estimate_balancing_factor([{"labels": torch.zeros(1)}])


def test_snr_curves_of_image_and_balanced_label_coincide():
    """With b = RMS of the images, image and label SNR agree at every timestep of the schedule."""
    generator = torch.Generator().manual_seed(0)
    # Speckle-like images concentrated near the dark end, far from unit power.
    images = (torch.rand(32, 1, 16, 16, generator=generator) ** 3) * 1.2 - 0.9
    masks = (torch.rand(32, 16, 16, generator=generator) > 0.8).long()
    b = estimate_balancing_factor(images)
    labels = masks_to_scaled_onehot(masks, num_classes=2, label_scale=b)
    alphas_cumprod = DDPMScheduler(num_train_timesteps=1000).alphas_cumprod.double()
    snr = alphas_cumprod / (1 - alphas_cumprod)
    image_snr = snr * images.double().pow(2).mean()
    label_snr = snr * labels.double().pow(2).mean()
    torch.testing.assert_close(image_snr, label_snr, rtol=1e-6, atol=0)
    # Without balancing (b = 1) the label keeps its signal far longer: the curves differ at every timestep.
    unbalanced = snr * masks_to_scaled_onehot(masks, 2, 1.0).double().pow(2).mean()
    assert torch.all(unbalanced > 1.5 * image_snr)


# ---------------------------------------------------------------------------------------------------------------
# Soft-label codec
# ---------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("num_classes", [2, 3, 5, 16])
def test_quantization_sums_to_255_and_is_within_one_level(num_classes):
    rng = np.random.default_rng(num_classes)
    logits = torch.from_numpy(rng.normal(scale=3.0, size=(4, num_classes, 9, 7)))
    probs = torch.softmax(logits, dim=1).float().numpy()
    quantized = quantize_soft_labels(probs)
    assert quantized.dtype == np.uint8 and quantized.shape == probs.shape
    assert (quantized.astype(np.int64).sum(axis=1) == 255).all()
    decoded = decode_soft_labels(quantized)
    assert decoded.dtype == np.float32
    np.testing.assert_allclose(decoded.sum(axis=1), 1.0, atol=1e-6)
    assert np.abs(decoded - probs).max() <= 1 / 255


def test_quantization_edge_cases():
    uniform = np.full((3, 2, 2), 1 / 3, dtype=np.float32)
    q = quantize_soft_labels(uniform)
    assert (q.astype(int).sum(axis=0) == 255).all() and set(np.unique(q)) == {85}
    onehot = np.zeros((2, 1, 1), dtype=np.float32)
    onehot[1] = 1
    assert quantize_soft_labels(onehot)[:, 0, 0].tolist() == [0, 255]
    with pytest.raises(ValueError, match="sum to 0"):
        quantize_soft_labels(np.zeros((2, 1, 1)))
    with pytest.raises(ValueError, match="non-negative"):
        quantize_soft_labels(np.array([[[-0.5]], [[1.5]]]))


@pytest.mark.parametrize("dtype", ["uint8", "float16", "float32"])
def test_decode_every_datasets_format(tmp_path, dtype):
    probs = torch.softmax(torch.randn(3, 3, 4, 5, generator=torch.Generator().manual_seed(0)), dim=1).numpy()
    features = datasets.Features({"soft_label": datasets.Array3D((3, 4, 5), dtype)})
    datasets.Dataset.from_dict({"soft_label": list(encode_soft_labels(probs, dtype))},
                               features=features).save_to_disk(str(tmp_path))
    ds = datasets.load_from_disk(str(tmp_path))
    tolerance = {"uint8": 1 / 255, "float16": 1e-3, "float32": 1e-6}[dtype]
    for fmt in (None, "numpy", "torch"):
        view = ds.with_format(fmt)
        for hint in (None, dtype, ds.features, ds.features["soft_label"]):
            row = decode_soft_labels(view[1]["soft_label"], dtype=hint)
            batch = decode_soft_labels(view[:3]["soft_label"], dtype=hint)
            assert isinstance(row, torch.Tensor) == (fmt == "torch")
            row, batch = np.asarray(row), np.asarray(batch)
            assert row.dtype == batch.dtype == np.float32
            assert row.shape == (3, 4, 5) and batch.shape == (3, 3, 4, 5)
            np.testing.assert_allclose(batch.sum(axis=1), 1.0, atol=1e-6)
            assert np.abs(batch - probs).max() <= tolerance + 1e-7
            np.testing.assert_array_equal(row, batch[1])


def test_decode_rejects_bad_values():
    with pytest.raises(ValueError, match=r"\(K, H, W\) or \(B, K, H, W\)"):
        decode_soft_labels(np.zeros((3, 4)))
    with pytest.raises(ValueError, match="soft_label_dtype"):
        decode_soft_labels(np.zeros((2, 1, 1)), dtype="int8")
    with pytest.raises(ValueError, match="sums to 0"):
        decode_soft_labels(np.zeros((2, 1, 1), dtype=np.int64))
