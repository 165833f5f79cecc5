"""Per-modality timesteps: the `JointUNet2DModel` option, its training draws and the training script's flags.

Checkpoints saved before the option existed must load and sample as before (`tests/fixtures/pre_per_modality`,
written by `tests/fixtures/make_pre_per_modality.py` with the code of that time): bit-exactly on the CPU that made
the references, to float rounding on another.
"""

import json
from pathlib import Path

import pytest
import torch
from diffusers import DDPMScheduler
from safetensors.torch import load_file

from dakter_hf import DAKTerPipeline, JointUNet2DModel, joint_diffusion_loss
from dakter_hf.commands import train as train_command
from dakter_hf.training import ModalityTimestepSampling, draw_modality_timesteps

from tiny_models import CROSS_CPU_TOLERANCE


FIXTURES = Path(__file__).resolve().parent / "fixtures" / "pre_per_modality"
TINY = dict(sample_size=16, num_classes=3, label_scale=0.5, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4, layers_per_block=1)


def tiny_model(**overrides):
    torch.manual_seed(0)
    return JointUNet2DModel(**{**TINY, **overrides}).eval()


def inputs(batch=2, seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, 16, 16, generator=generator), torch.randn(batch, 3, 16, 16, generator=generator)


# ----------------------------------------------------------------------------------------------------------------------
# Old checkpoints
# ----------------------------------------------------------------------------------------------------------------------


# The reference outputs were computed with one thread (see CROSS_CPU_TOLERANCE for another CPU).
@pytest.mark.usefixtures("one_torch_thread")
@pytest.mark.parametrize("architecture", ["dual", "concat"])
def test_checkpoint_without_the_option_loads_and_samples_as_before(architecture):
    directory = FIXTURES / architecture
    assert "per_modality_timesteps" not in json.loads((directory / "unet" / "config.json").read_text())
    reference = load_file(directory / "reference_outputs.safetensors")
    pipe = DAKTerPipeline.from_pretrained(directory)
    assert pipe.unet.config.per_modality_timesteps is False
    assert not any("second_time_embedding" in name for name, _ in pipe.unet.named_parameters())
    with torch.no_grad():
        out = pipe.unet(reference["image"], reference["label"], torch.tensor([3, 70]))
    torch.testing.assert_close(out.image, reference["pred_image"], **CROSS_CPU_TOLERANCE)
    torch.testing.assert_close(out.label_logits, reference["pred_label_logits"], **CROSS_CPU_TOLERANCE)
    pipe.set_progress_bar_config(disable=True)
    samples = pipe(batch_size=2, generator=torch.Generator().manual_seed(2), num_inference_steps=5, output_type="pt")
    torch.testing.assert_close(samples.images, reference["sample_images"], **CROSS_CPU_TOLERANCE)
    torch.testing.assert_close(samples.soft_labels, reference["sample_soft_labels"], **CROSS_CPU_TOLERANCE)


def test_label_timestep_needs_the_option():
    model = tiny_model()
    image, label = inputs()
    with pytest.raises(ValueError, match="`label_timestep` needs a model built with `per_modality_timesteps=True`"):
        model(image, label, 5, label_timestep=0)


# ----------------------------------------------------------------------------------------------------------------------
# The option
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("architecture", ["dual", "concat"])
def test_at_initialisation_equal_timesteps_give_the_single_timestep_model(architecture):
    per_modality = tiny_model(architecture=architecture, per_modality_timesteps=True)
    single = tiny_model(architecture=architecture)
    state = {k: v for k, v in per_modality.state_dict().items() if "second_time_embedding" not in k}
    single.load_state_dict(state)  # strict: the option adds only the second time embeddings
    image, label = inputs()
    t = torch.tensor([4, 600])
    with torch.no_grad():
        a, b = per_modality(image, label, t, label_timestep=t), single(image, label, t)
        default = per_modality(image, label, t)  # label_timestep defaults to timestep
    assert torch.equal(a.image, b.image) and torch.equal(a.label_logits, b.label_logits)
    assert torch.equal(default.label_logits, b.label_logits)


def test_each_branch_sees_its_own_timestep_and_learns_the_other():
    model = tiny_model(per_modality_timesteps=True)
    image, label = inputs()
    with torch.no_grad():
        joint = model(image, label, 500, label_timestep=500)
        clean_label = model(image, label, 500, label_timestep=0)
        # At initialisation the image branch ignores the label's timestep, the label branch follows its own.
        assert torch.equal(joint.image, clean_label.image)
        assert not torch.allclose(joint.label_logits, clean_label.label_logits)
        # Once the second embedding is trained (non-zero), the image branch knows the label's noise level too.
        torch.nn.init.normal_(model.image_branch.second_time_embedding.linear_2.weight, std=0.1)
        joint = model(image, label, 500, label_timestep=500)
        clean_label = model(image, label, 500, label_timestep=0)
        assert not torch.allclose(joint.image, clean_label.image)
        # Per-sample label timesteps.
        mixed = model(image, label, 500, label_timestep=torch.tensor([500, 0]))
        torch.testing.assert_close(mixed.image[0], joint.image[0])
        torch.testing.assert_close(mixed.image[1], clean_label.image[1])


def test_the_option_round_trips_through_save_pretrained(tmp_path):
    model = tiny_model(per_modality_timesteps=True)
    model.save_pretrained(tmp_path)
    loaded = JointUNet2DModel.from_pretrained(tmp_path)
    assert loaded.config.per_modality_timesteps is True
    image, label = inputs()
    with torch.no_grad():
        expected = model(image, label, 7, label_timestep=0).image
        assert torch.equal(loaded(image, label, 7, label_timestep=0).image, expected)


def test_timestep_shapes_are_checked():
    model = tiny_model(per_modality_timesteps=True)
    image, label = inputs()
    with pytest.raises(ValueError, match="`label_timestep` must be a number or hold one value per sample"):
        model(image, label, 5, label_timestep=torch.tensor([1, 2, 3]))


# ----------------------------------------------------------------------------------------------------------------------
# Training draws and loss
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "kwargs, message",
    [(dict(clean_image=-0.1), "`clean_image` must be a probability"),
     (dict(independent=1.5), "`independent` must be a probability"),
     (dict(clean_image=0.6, clean_label=0.6), "must not exceed 1")],
)
def test_sampling_probabilities_are_checked(kwargs, message):
    with pytest.raises(ValueError, match=message):
        ModalityTimestepSampling(**kwargs)


def test_draws_follow_the_case_probabilities():
    sampling = ModalityTimestepSampling(clean_image=0.2, clean_label=0.3, independent=0.1)
    assert sampling.joint == pytest.approx(0.4)
    timesteps = torch.randint(1, 1000, (20000,), generator=torch.Generator().manual_seed(0))
    drawn = draw_modality_timesteps(sampling, timesteps, 1000, torch.Generator().manual_seed(1))
    assert not (drawn.image_clean & drawn.label_clean).any()
    assert (drawn.image[drawn.image_clean] == 0).all() and (drawn.label[drawn.label_clean] == 0).all()
    assert float(drawn.image_clean.float().mean()) == pytest.approx(0.2, abs=0.015)
    assert float(drawn.label_clean.float().mean()) == pytest.approx(0.3, abs=0.015)
    noised = ~drawn.image_clean & ~drawn.label_clean
    assert torch.equal(drawn.image[noised], timesteps[noised])  # the image keeps the shared draw
    different = float((drawn.label[noised] != timesteps[noised]).float().mean())
    assert different == pytest.approx(0.1 / 0.5, abs=0.02)  # independent among the noised cases


class Recorder(JointUNet2DModel):
    def forward(self, image, label, timestep, return_dict=True, *, label_timestep=None):
        self.seen = (image, label, timestep, label_timestep)
        return super().forward(image, label, timestep, return_dict, label_timestep=label_timestep)


def batch(seed=0):
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(4, 1, 16, 16, generator=generator) * 2 - 1, torch.randint(0, 3, (4, 16, 16), generator=generator)


def test_clean_modalities_are_fed_unnoised_at_timestep_zero_and_left_out_of_the_loss():
    torch.manual_seed(0)
    model = Recorder(**TINY, per_modality_timesteps=True)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    images, masks = batch()
    clean_images = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(1),
                                        timestep_sampling=ModalityTimestepSampling(clean_image=1.0, clean_label=0.0))
    seen_image, _, image_t, label_t = model.seen
    assert torch.equal(seen_image, images) and (image_t == 0).all() and (label_t > 0).any()
    assert clean_images.image_loss.item() == 0.0 and clean_images.label_loss.item() > 0
    clean_labels = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(1),
                                        timestep_sampling=ModalityTimestepSampling(clean_image=0.0, clean_label=1.0))
    _, seen_label, image_t, label_t = model.seen
    assert torch.equal(seen_label, 0.5 * (2 * torch.nn.functional.one_hot(masks, 3).permute(0, 3, 1, 2) - 1))
    assert (label_t == 0).all() and clean_labels.label_loss.item() == 0.0 and clean_labels.image_loss.item() > 0
    clean_labels.loss.backward()  # a zero term stays differentiable


def test_all_joint_sampling_matches_joint_training_draws():
    """With every sample in the joint case the model sees what joint training feeds it (same noise, timesteps)."""
    torch.manual_seed(0)
    model = Recorder(**TINY, per_modality_timesteps=True)
    scheduler = DDPMScheduler(num_train_timesteps=100)
    images, masks = batch()
    joint = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(3))
    seen = model.seen
    per_modality = joint_diffusion_loss(model, scheduler, images, masks, generator=torch.Generator().manual_seed(3),
                                        timestep_sampling=ModalityTimestepSampling(clean_image=0.0, clean_label=0.0))
    assert torch.equal(model.seen[0], seen[0]) and torch.equal(model.seen[1], seen[1])
    assert torch.equal(model.seen[2], seen[2]) and torch.equal(model.seen[3], seen[2])
    torch.testing.assert_close(per_modality.loss, joint.loss)


def test_sampling_needs_the_option():
    model = tiny_model()
    images, masks = batch()
    with pytest.raises(ValueError, match="`label_timestep` needs a model built with `per_modality_timesteps=True`"):
        joint_diffusion_loss(model, DDPMScheduler(num_train_timesteps=100), images, masks,
                             timestep_sampling=ModalityTimestepSampling())


# ----------------------------------------------------------------------------------------------------------------------
# The training script
# ----------------------------------------------------------------------------------------------------------------------

TINY_ARGS = ["--dataset", "simulated", "--num_train_samples", "8", "--resolution", "16", "--model_size", "tiny",
             "--train_batch_size", "4", "--validation_inference_steps", "2", "--num_validation_samples", "2"]


@pytest.fixture(scope="module")
def script():
    return train_command


@pytest.mark.parametrize(
    "extra, message",
    [(["--clean_image_prob", "0.3"], "--clean_image_prob only apply with --per_modality_timesteps"),
     (["--per_modality_timesteps", "--clean_image_prob", "0.7", "--clean_label_prob", "0.7"], "must not exceed 1"),
     (["--per_modality_timesteps", "--independent_timesteps_prob", "2"], "`independent` must be a probability")],
)
def test_bad_flags(script, tmp_path, capsys, extra, message):
    with pytest.raises(SystemExit):
        script.parse_args([*TINY_ARGS, "--output_dir", str(tmp_path), *extra])
    assert message in capsys.readouterr().err


def test_flags_make_the_sampling(script, tmp_path):
    args = script.parse_args([*TINY_ARGS, "--output_dir", str(tmp_path), "--per_modality_timesteps",
                              "--clean_label_prob", "0.4"])
    assert args.timestep_sampling == ModalityTimestepSampling(clean_image=0.25, clean_label=0.4, independent=0.0)
    assert script.parse_args([*TINY_ARGS, "--output_dir", str(tmp_path)]).timestep_sampling is None


def test_training_with_per_modality_timesteps(script, tmp_path):
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        script.main([*TINY_ARGS, "--output_dir", str(tmp_path), "--per_modality_timesteps", "--max_train_steps", "3",
                     "--checkpointing_steps", "3"])
    finally:
        torch.set_num_threads(threads)
    config = json.loads((tmp_path / "unet" / "config.json").read_text())
    assert config["per_modality_timesteps"] is True
    assert "per-modality timesteps: clean image 0.25, clean label 0.25" in (tmp_path / "README.md").read_text()
    assert DAKTerPipeline.from_pretrained(tmp_path).unet.image_branch.second_time_embedding is not None
