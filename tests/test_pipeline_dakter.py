import json

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DiffusionPipeline,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)

import dakter_hf
from dakter_hf import DAKTerPipeline, DAKTerPipelineOutput, JointUNet2DModel, JointUNet2DOutput, logits_to_clean_label

from tiny_models import TINY_UNET as TINY


SCHEDULERS = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
              UniPCMultistepScheduler]


def tiny_pipeline(scheduler_cls=DDPMScheduler, **scheduler_kwargs):
    torch.manual_seed(0)
    unet = JointUNet2DModel(**TINY).eval()
    scheduler = scheduler_cls(num_train_timesteps=100, **scheduler_kwargs)
    pipe = DAKTerPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    return pipe


class ConstantPairModel(JointUNet2DModel):
    """Always predicts the same clean image (x0) and label logits, whatever the input."""

    def set_pair(self, image, logits):
        self.fixed_image, self.fixed_logits = image, logits

    def forward(self, image, label, timestep, return_dict=True):
        batch = image.shape[0]
        return self.output(self.fixed_image.expand(batch, -1, -1, -1), return_dict)

    def output(self, image, return_dict):
        logits = self.fixed_logits.expand(image.shape[0], -1, -1, -1)
        return JointUNet2DOutput(image=image, label_logits=logits) if return_dict else (image, logits)


def constant_pair():
    generator = torch.Generator().manual_seed(7)
    image = torch.rand(1, 1, 16, 16, generator=generator) * 1.6 - 0.8
    logits = torch.randn(1, 3, 16, 16, generator=generator) * 2
    return image, logits


@pytest.mark.parametrize("output_type", ["np", "pt", "pil"])
def test_output_types(output_type):
    out = tiny_pipeline()(batch_size=2, num_inference_steps=3, output_type=output_type,
                          generator=torch.Generator().manual_seed(0))
    assert isinstance(out, DAKTerPipelineOutput)
    if output_type == "pt":
        assert out.images.shape == (2, 1, 16, 16) and out.soft_labels.shape == (2, 3, 16, 16)
        assert out.labels.shape == (2, 16, 16) and not out.labels.dtype.is_floating_point
        torch.testing.assert_close(out.soft_labels.sum(dim=1), torch.ones(2, 16, 16))
        assert torch.equal(out.labels, out.soft_labels.argmax(dim=1))
        assert 0 <= out.images.min() and out.images.max() <= 1
        return
    assert out.soft_labels.shape == (2, 16, 16, 3)
    np.testing.assert_allclose(out.soft_labels.sum(axis=-1), 1.0, atol=1e-5)
    if output_type == "np":
        assert out.images.shape == (2, 16, 16, 1) and out.images.dtype == np.float32
        assert 0 <= out.images.min() and out.images.max() <= 1
        assert out.labels.shape == (2, 16, 16) and np.issubdtype(out.labels.dtype, np.integer)
        np.testing.assert_array_equal(out.labels, out.soft_labels.argmax(axis=-1))
    else:
        assert all(isinstance(im, PIL.Image.Image) and im.mode == "L" and im.size == (16, 16) for im in out.images)
        assert all(isinstance(m, PIL.Image.Image) for m in out.labels)
        np.testing.assert_array_equal(np.stack([np.array(m) for m in out.labels]), out.soft_labels.argmax(axis=-1))


def test_return_tuple():
    images, soft_labels, labels = tiny_pipeline()(num_inference_steps=2, output_type="np", return_dict=False)
    assert images.shape == (1, 16, 16, 1) and soft_labels.shape == (1, 16, 16, 3) and labels.shape == (1, 16, 16)


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS, ids=lambda c: c.__name__)
@pytest.mark.parametrize("prediction_type", ["sample", "epsilon", "v_prediction"])
def test_constant_clean_pair_is_reproduced_by_every_scheduler(scheduler_cls, prediction_type):
    """A model that always predicts the same clean pair must yield exactly that pair."""
    image, logits = constant_pair()
    unet = ConstantPairModel(**TINY)
    unet.set_pair(image, logits)
    pipe = DAKTerPipeline(unet=unet, scheduler=scheduler_cls(num_train_timesteps=1000,
                                                             prediction_type=prediction_type))
    pipe.set_progress_bar_config(disable=True)
    states = []  # the joint state after every scheduler step: the label half must converge too
    step = pipe.scheduler.step

    def recording_step(*args, **kwargs):
        output = step(*args, **kwargs)
        states.append(output.prev_sample)
        return output

    pipe.scheduler.step = recording_step
    out = pipe(batch_size=2, num_inference_steps=10, output_type="pt", generator=torch.Generator().manual_seed(0))
    expected_image = (image / 2 + 0.5).expand(2, -1, -1, -1)
    torch.testing.assert_close(out.images, expected_image, atol=2e-4, rtol=0)
    torch.testing.assert_close(out.soft_labels, torch.softmax(logits, dim=1).expand(2, -1, -1, -1))
    expected_label = logits_to_clean_label(logits, unet.config.label_scale).expand(2, -1, -1, -1)
    assert len(states) == 10
    torch.testing.assert_close(states[-1][:, 1:], expected_label, atol=2e-4, rtol=0)
    torch.testing.assert_close(states[-1][:, :1], image.expand(2, -1, -1, -1), atol=4e-4, rtol=0)


def test_epsilon_predicting_model_is_converted():
    """A model trained to predict noise is turned into the clean-sample prediction a scheduler needs."""
    image, logits = constant_pair()
    scheduler = DDPMScheduler(num_train_timesteps=1000, prediction_type="sample")

    class ConstantNoiseModel(ConstantPairModel):
        def forward(self, image_in, label, timestep, return_dict=True):
            alpha_bar = scheduler.alphas_cumprod[int(timestep)]
            noise = (image_in - alpha_bar.sqrt() * self.fixed_image) / (1 - alpha_bar).sqrt()
            return self.output(noise, return_dict)

    unet = ConstantNoiseModel(**{**TINY, "prediction_type": "epsilon"})
    unet.set_pair(image, logits)
    pipe = DAKTerPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)
    out = pipe(num_inference_steps=10, output_type="pt", generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(out.images, image / 2 + 0.5, atol=2e-4, rtol=0)


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS, ids=lambda c: c.__name__)
def test_scheduler_swap_with_from_config(scheduler_cls):
    pipe = tiny_pipeline(prediction_type="sample")
    pipe.scheduler = scheduler_cls.from_config(pipe.scheduler.config)
    out = pipe(batch_size=2, num_inference_steps=4, output_type="np", generator=torch.Generator().manual_seed(0))
    assert np.isfinite(out.images).all() and np.isfinite(out.soft_labels).all()


@pytest.mark.parametrize("scheduler_cls", [DDPMScheduler, DPMSolverMultistepScheduler], ids=lambda c: c.__name__)
def test_generator_list_gives_per_sample_reproducibility(scheduler_cls):
    pipe = tiny_pipeline(scheduler_cls)
    seeds = [11, 12, 13]
    batch = pipe(batch_size=3, num_inference_steps=4, output_type="np",
                 generator=[torch.Generator().manual_seed(s) for s in seeds])
    for i, seed in enumerate(seeds):
        alone = pipe(batch_size=1, num_inference_steps=4, output_type="np",
                     generator=torch.Generator().manual_seed(seed))
        np.testing.assert_allclose(batch.images[i], alone.images[0], atol=1e-5)
        np.testing.assert_allclose(batch.soft_labels[i], alone.soft_labels[0], atol=1e-5)


def test_same_seed_same_output_different_seed_different_output():
    pipe = tiny_pipeline()

    def run(seed):
        return pipe(num_inference_steps=3, output_type="np", generator=torch.Generator().manual_seed(seed))

    np.testing.assert_array_equal(run(0).images, run(0).images)
    assert not np.allclose(run(0).images, run(1).images)


def test_soft_label_temperature():
    pipe = tiny_pipeline()

    def run(temp):
        return pipe(num_inference_steps=2, soft_label_temperature=temp, output_type="np",
                    generator=torch.Generator().manual_seed(0))

    cold, warm = run(1.0), run(5.0)
    np.testing.assert_array_equal(cold.labels, warm.labels)
    assert warm.soft_labels.max() < cold.soft_labels.max()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(batch_size=0), "batch_size"),
        (dict(batch_size=2, generator=[torch.Generator()]), "one generator per sample"),
        (dict(num_inference_steps=0), "num_inference_steps"),
        (dict(soft_label_temperature=0.0), "soft_label_temperature"),
        (dict(output_type="latent"), "output_type"),
        (dict(eta="np"), "eta"),
        (dict(eta=1.5), "eta"),
    ],
)
def test_bad_arguments_raise_clear_errors(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline()(**kwargs)


def test_positional_arguments_follow_the_documented_order():
    """`pipe(batch_size, generator, num_inference_steps, soft_label_temperature, output_type, return_dict)`."""
    pipe = tiny_pipeline()
    images, soft_labels, labels = pipe(2, torch.Generator().manual_seed(0), 2, 1.0, "np", False)
    expected = pipe(batch_size=2, generator=torch.Generator().manual_seed(0), num_inference_steps=2, output_type="np")
    np.testing.assert_array_equal(images, expected.images)
    np.testing.assert_array_equal(soft_labels, expected.soft_labels)


def test_progress_bar_is_used(capsys):
    pipe = tiny_pipeline()
    pipe.set_progress_bar_config(disable=False)
    pipe(num_inference_steps=3, output_type="np")
    assert "3/3" in capsys.readouterr().err


def test_save_and_load_returns_installed_classes_and_generates_identically(tmp_path):
    pipe = tiny_pipeline(DDIMScheduler)
    pipe.save_pretrained(tmp_path)
    index = (tmp_path / "model_index.json").read_text()
    # The module path recorded for the model is part of the checkpoint format: it must never change.
    assert '"dakter_hf.models.joint_unet_2d"' in index and '"DAKTerPipeline"' in index
    assert list(tmp_path.glob("unet/*.safetensors")) and not list(tmp_path.glob("**/*.bin"))
    reference = pipe(batch_size=2, num_inference_steps=3, output_type="np",
                     generator=torch.Generator().manual_seed(3))
    for loader in (DAKTerPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path)
        assert type(loaded) is dakter_hf.DAKTerPipeline
        assert type(loaded.unet) is dakter_hf.JointUNet2DModel
        assert type(loaded.scheduler) is DDIMScheduler
        loaded.set_progress_bar_config(disable=True)
        out = loaded(batch_size=2, num_inference_steps=3, output_type="np",
                     generator=torch.Generator().manual_seed(3))
        np.testing.assert_array_equal(out.images, reference.images)
        np.testing.assert_array_equal(out.soft_labels, reference.soft_labels)


def test_id2label_is_part_of_the_pipeline_config(tmp_path):
    pipe = tiny_pipeline()
    assert pipe.config.id2label is None and pipe.id2label == {0: "class_0", 1: "class_1", 2: "class_2"}
    id2label = {0: "sea", 1: "oil_spill", 2: "look_alike"}
    named = DAKTerPipeline(unet=pipe.unet, scheduler=pipe.scheduler, id2label={str(k): v for k, v in id2label.items()})
    assert named.id2label == id2label  # JSON-style string keys are normalised to int
    named.save_pretrained(tmp_path)
    assert json.loads((tmp_path / "model_index.json").read_text())["id2label"] == {"0": "sea", "1": "oil_spill",
                                                                                 "2": "look_alike"}
    for loader in (DAKTerPipeline, DiffusionPipeline):
        loaded = loader.from_pretrained(tmp_path)
        assert loaded.id2label == id2label
        assert loaded.config.id2label == id2label
    with pytest.raises(ValueError, match="2 classes but the unet has num_classes=3"):
        DAKTerPipeline(unet=pipe.unet, scheduler=pipe.scheduler, id2label={0: "sea", 1: "oil_spill"})
    with pytest.raises(ValueError, match="keys must be 0..K-1"):
        DAKTerPipeline(unet=pipe.unet, scheduler=pipe.scheduler, id2label={0: "sea", 1: "oil_spill", 5: "x"})


def test_loading_a_missing_path_is_a_clear_error(tmp_path):
    with pytest.raises(OSError, match="does-not-exist"):
        DAKTerPipeline.from_pretrained(str(tmp_path / "does-not-exist"))
    with pytest.raises(OSError, match="org/absent"):
        DAKTerPipeline.from_pretrained("org/absent", local_files_only=True)
