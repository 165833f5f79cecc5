"""The tiny `JointUNet2DModel` configuration that the model and pipeline tests build (3 classes, 16x16, one
attention level), so that both test files exercise the same model."""

TINY_UNET = dict(
    sample_size=16,
    num_classes=3,
    label_scale=0.5,
    block_out_channels=(8, 16),
    down_block_types=("DownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "UpBlock2D"),
    norm_num_groups=4,
    layers_per_block=1,
)

#: How closely outputs stored in `tests/fixtures` are matched: one thread on the CPU that made them reproduces them bit
#: for bit; another CPU's kernels round differently (on the 2026-12-05 machine up to 2.5e-6 after five sampling steps
#: of `tests/fixtures/pre_per_modality`).
CROSS_CPU_TOLERANCE = dict(rtol=1e-5, atol=1e-5)


def tiny_pipeline(seed: int = 0, num_classes: int = 3, id2label: dict | None = None):
    """A randomly initialised 2-level `DAKTerPipeline` (`num_classes` classes, 16x16, DDPM with 50 steps), seeded."""
    import torch
    from diffusers import DDPMScheduler

    from dakter_hf import DAKTerPipeline, JointUNet2DModel

    torch.manual_seed(seed)
    unet = JointUNet2DModel(sample_size=16, num_classes=num_classes, block_out_channels=(8, 16),
                            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                            norm_num_groups=4, layers_per_block=1, label_scale=0.5)
    return DAKTerPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=50), id2label=id2label)


def make_unet_output_nan(pipe):
    """Make `pipe`'s UNet return NaN everywhere (a diverged model), in place; returns `pipe`."""
    import torch

    original = pipe.unet.forward

    def nan_forward(*args, **kwargs):
        out = original(*args, **kwargs)
        for tensor in out if isinstance(out, tuple) else out.values():
            if torch.is_tensor(tensor):
                tensor.fill_(float("nan"))
        return out

    pipe.unet.forward = nan_forward
    return pipe
