"""The generator's soft label targets (`train_joint_diffusion.py --soft_label_targets`): masks area-averaged to the
training size keep their boundary uncertainty as class fractions, which stay aligned with the images through crops
and symmetries and are learnt with a soft-target cross-entropy."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from diffusers import DDPMScheduler
from PIL import Image
from test_joint_diffusion_loss import TINY, Recorder, batch
from test_training import read_log, run, script  # noqa: F401  (the `script` fixture)

from dakter_hf import JointUNet2DModel, joint_diffusion_loss
from dakter_hf.data import build_transform, load_dataset_by_name, mask_to_class_fractions
from dakter_hf.training import augment_batch, build_train_dataloader

from sos_layout import write_sos_release


def symmetries(tensor):
    """The 8 symmetries of the square of a `(..., H, W)` tensor, as `transforms.random_dihedral` draws them."""
    for k in range(4):
        rotated = torch.rot90(tensor, k, dims=(-2, -1))
        yield rotated
        yield torch.flip(rotated, dims=(-1,))


def test_mask_to_class_fractions_is_the_area_average():
    mask = Image.fromarray(np.array([[0, 0, 1, 1], [0, 1, 1, 1], [0, 0, 0, 0], [2, 0, 0, 0]], dtype=np.uint8))
    fractions = mask_to_class_fractions(mask, 3, 2)
    assert fractions.shape == (3, 2, 2) and fractions.dtype == torch.float32
    torch.testing.assert_close(fractions[1], torch.tensor([[0.25, 1.0], [0.0, 0.0]]))
    torch.testing.assert_close(fractions[2], torch.tensor([[0.0, 0.0], [0.25, 0.0]]))
    torch.testing.assert_close(fractions.sum(dim=0), torch.ones(2, 2))
    native = mask_to_class_fractions(mask, 3)  # no resize: the one-hot mask
    assert torch.equal(native.argmax(dim=0), torch.from_numpy(np.array(mask)).long())
    with pytest.raises(ValueError, match=r"class indices 0\.\.1"):
        mask_to_class_fractions(mask, 2, 2)


def test_transform_keeps_fractions_aligned_with_the_augmented_image():
    rng = np.random.default_rng(0)
    rows = {"image": [Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)) for _ in range(6)],
            "mask": [Image.fromarray((rng.random((8, 8)) > 0.5).astype(np.uint8)) for _ in range(6)]}
    plain = build_transform(4, num_classes=2)(rows)
    assert "label_fractions" not in build_transform(4)(rows)
    augmented = build_transform(4, augment=True, seed=0, num_classes=2)(rows)
    q = plain["label_fractions"]
    assert q.shape == (6, 2, 4, 4) and ((q > 0) & (q < 1)).any()  # boundary pixels keep fractional values
    for i in range(6):
        # The image's symmetry is the fractions' and the mask's symmetry.
        matches = [j for j, x in enumerate(symmetries(plain["pixel_values"][i]))
                   if torch.equal(x, augmented["pixel_values"][i])]
        assert matches, i
        j = matches[0]
        assert torch.equal(list(symmetries(q[i]))[j], augmented["label_fractions"][i])
        assert torch.equal(list(symmetries(plain["labels"][i]))[j], augmented["labels"][i])


def test_augment_batch_crops_and_turns_fractions_like_masks():
    images, masks = batch()
    onehot = F.one_hot(masks, 2).permute(0, 3, 1, 2).float()
    a_images, a_masks = augment_batch(images, masks, torch.Generator().manual_seed(3), crop_size=8, dihedral=True)
    b_images, b_fractions = augment_batch(images, onehot, torch.Generator().manual_seed(3), crop_size=8,
                                          dihedral=True)
    assert torch.equal(a_images, b_images) and b_fractions.shape == (4, 2, 8, 8)
    assert torch.equal(b_fractions.argmax(dim=1), a_masks)


def test_loss_with_class_fractions():
    torch.manual_seed(0)
    model = Recorder(**TINY)  # label_scale b = 0.5
    scheduler = DDPMScheduler(num_train_timesteps=100)
    images, masks = batch()
    onehot = F.one_hot(masks, 2).permute(0, 3, 1, 2).float()
    # One-hot fractions are the thresholded masks: the same loss, draw for draw.
    hard = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(1))
    same = joint_diffusion_loss(model, scheduler, images, onehot, generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(hard.loss, same.loss)

    fractions = torch.rand(4, 1, 16, 16, generator=torch.Generator().manual_seed(2))
    fractions = torch.cat([1 - fractions, fractions], dim=1)
    out = joint_diffusion_loss(model, scheduler, images, fractions, generator=torch.Generator().manual_seed(1))
    generator = torch.Generator().manual_seed(1)
    timesteps = torch.randint(0, 100, (4,), generator=generator)
    torch.randn(images.shape, generator=generator)
    label_noise = torch.randn((4, 2, 16, 16), generator=generator)
    _, noisy_label, _ = model.seen
    # The clean label is b * (2q - 1), what the pipeline steps towards for a predicted distribution q.
    torch.testing.assert_close(noisy_label, scheduler.add_noise(0.5 * (2 * fractions - 1), label_noise, timesteps))
    with torch.no_grad():
        logits = model(*model.seen).label_logits
    soft_ce = -(fractions * torch.log_softmax(logits, dim=1)).sum(dim=1).mean()
    torch.testing.assert_close(out.label_loss, soft_ce)
    with pytest.raises(ValueError, match="K=2"):
        joint_diffusion_loss(model, scheduler, images, torch.cat([fractions, fractions], dim=1))


def test_train_loader_fractions_from_native_masks(tmp_path):
    data_dir = write_sos_release(tmp_path / "sos", num_train=3, size=32)
    native = load_dataset_by_name("sos", data_dir=str(data_dir), sensor="palsar", split="train")
    loader = build_train_dataloader(native, resolution=16, batch_size=3, label_fractions_classes=2)
    loaded = next(iter(loader))
    q = loaded["label_fractions"]
    assert q.shape == (3, 2, 16, 16) and loaded["labels"].shape == (3, 16, 16)
    assert ((q > 0) & (q < 1)).any(), "the slick's edge rows fall inside 2x2 output pixels"
    torch.testing.assert_close(q.sum(dim=1), torch.ones(3, 16, 16))
    assert "label_fractions" not in next(iter(build_train_dataloader(native, 16, 3)))


def test_command_trains_with_soft_targets_and_augmentation(script, tmp_path):  # noqa: F811
    data_dir = write_sos_release(tmp_path / "sos", num_train=4, size=32)
    out = tmp_path / "generator"
    # run() adds the tiny simulated defaults; the SOS flags given here replace them.
    run(script, out, "--dataset", "sos", "--data_dir", data_dir, "--sensor", "palsar", "--num_train_samples", 4,
        "--soft_label_targets", "--augment", "--crop_size", 8, "--max_train_steps", 2, "--checkpointing_steps", 2,
        "--validation_steps", 100)
    losses = [r["label_loss"] for r in read_log(out)]
    assert len(losses) == 2 and all(math.isfinite(x) for x in losses)
    assert (out / "model_index.json").is_file()


def test_per_modality_timesteps_take_class_fractions_too():
    from dakter_hf.training import ModalityTimestepSampling

    torch.manual_seed(0)
    model = JointUNet2DModel(**{**TINY, "per_modality_timesteps": True})
    scheduler = DDPMScheduler(num_train_timesteps=100)
    images, masks = batch()
    onehot = F.one_hot(masks, 2).permute(0, 3, 1, 2).float()
    sampling = ModalityTimestepSampling(clean_image=0.5, clean_label=0.25)
    hard = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(4),
                                timestep_sampling=sampling)
    same = joint_diffusion_loss(model, scheduler, images, onehot, generator=torch.Generator().manual_seed(4),
                                timestep_sampling=sampling)
    torch.testing.assert_close(hard.loss, same.loss)
    half = torch.full_like(onehot, 0.5)  # the most uncertain target: its CE is log 2 above the predictions' entropy
    soft = joint_diffusion_loss(model, scheduler, images, half, generator=torch.Generator().manual_seed(4),
                                timestep_sampling=sampling)
    assert torch.isfinite(soft.label_loss) and soft.label_loss >= torch.log(torch.tensor(2.0)) - 1e-6
