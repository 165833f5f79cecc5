import pytest
import torch
from diffusers import DDPMScheduler

from dakter_hf import JointUNet2DModel, joint_diffusion_loss, masks_to_scaled_onehot


TINY = dict(sample_size=16, num_classes=2, label_scale=0.5, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
            norm_num_groups=4, layers_per_block=1)


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1, torch.randint(0, 2, (4, 16, 16), generator=generator)


class Recorder(JointUNet2DModel):
    """Records its inputs and returns fixed predictions, to check what the loss feeds and compares."""

    def forward(self, image, label, timestep, return_dict=True):
        self.seen = (image, label, timestep)
        return super().forward(image, label, timestep, return_dict)


@pytest.mark.parametrize("prediction_type", ["sample", "epsilon"])
def test_loss_is_image_mse_plus_weighted_label_ce(prediction_type):
    torch.manual_seed(0)
    model = Recorder(**{**TINY, "prediction_type": prediction_type})
    scheduler = DDPMScheduler(num_train_timesteps=100)
    images, masks = batch()
    out = joint_diffusion_loss(model, scheduler, images, masks, ce_weight=0.3,
                               generator=torch.Generator().manual_seed(1))
    torch.testing.assert_close(out.loss, out.image_loss + 0.3 * out.label_loss)

    # Recompute the same draw by hand: timesteps first, then image noise, then label noise.
    generator = torch.Generator().manual_seed(1)
    timesteps = torch.randint(0, 100, (4,), generator=generator)
    image_noise = torch.randn(images.shape, generator=generator)
    label_noise = torch.randn((4, 2, 16, 16), generator=generator)
    noisy_image, noisy_label, seen_t = model.seen
    assert torch.equal(seen_t, timesteps)
    torch.testing.assert_close(noisy_image, scheduler.add_noise(images, image_noise, timesteps))
    clean_label = masks_to_scaled_onehot(masks, 2, 0.5)
    torch.testing.assert_close(noisy_label, scheduler.add_noise(clean_label, label_noise, timesteps))
    with torch.no_grad():
        prediction = model(noisy_image, noisy_label, timesteps)
    target = images if prediction_type == "sample" else image_noise
    torch.testing.assert_close(out.image_loss, torch.nn.functional.mse_loss(prediction.image, target))
    torch.testing.assert_close(out.label_loss, torch.nn.functional.cross_entropy(prediction.label_logits, masks))


def test_loss_is_reproducible_and_trains():
    torch.manual_seed(0)
    model = JointUNet2DModel(**TINY)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    images, masks = batch()
    a = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(5)).loss
    b = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(5)).loss
    assert torch.equal(a, b)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    fixed_t = torch.full((4,), 10)
    losses = []
    for step in range(20):
        loss = joint_diffusion_loss(model, scheduler, images, masks, timesteps=fixed_t,
                                    generator=torch.Generator().manual_seed(step)).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.5 * sum(losses[:5]) / 5


def test_loss_rejects_mismatched_batches():
    model = JointUNet2DModel(**TINY)
    images, masks = batch()
    with pytest.raises(ValueError, match="must match"):
        joint_diffusion_loss(model, DDPMScheduler(num_train_timesteps=10), images, masks[:2])
