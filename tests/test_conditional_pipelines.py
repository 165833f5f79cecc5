"""The conditional pipelines: `DAKTerMaskToImagePipeline` (masks -> images) and `DAKTerSegmentationPipeline`
(images -> soft labels), with replacement conditioning (+ RePaint resampling) and exact conditioning."""

import logging

import numpy as np
import PIL.Image
import pytest
import torch
from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    HeunDiscreteScheduler,
    UniPCMultistepScheduler,
)

from dakter_hf import (
    DAKTerMaskToImagePipeline,
    DAKTerMaskToImagePipelineOutput,
    DAKTerPipeline,
    DAKTerSegmentationPipeline,
    DAKTerSegmentationPipelineOutput,
    JointUNet2DModel,
)


TINY = dict(sample_size=16, num_classes=3, label_scale=0.5, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4, layers_per_block=1)
SCHEDULERS = [DDPMScheduler, DDIMScheduler, DPMSolverMultistepScheduler, EulerDiscreteScheduler,
              UniPCMultistepScheduler]


class RecordingModel(JointUNet2DModel):
    """Records the inputs of every call."""

    def forward(self, image, label, timestep, return_dict=True, *, label_timestep=None):
        self.calls = getattr(self, "calls", [])
        self.calls.append((image.clone(), label.clone(), torch.as_tensor(timestep).clone(),
                           None if label_timestep is None else torch.as_tensor(label_timestep).clone()))
        return super().forward(image, label, timestep, return_dict, label_timestep=label_timestep)


def tiny_unet(per_modality=False, cls=JointUNet2DModel):
    torch.manual_seed(0)
    unet = cls(**TINY, per_modality_timesteps=per_modality).eval()
    # Open the exchange paths and the second time embeddings, as training would: the branches must interact.
    with torch.no_grad():
        for name, param in unet.named_parameters():
            if "_to_" in name or "second_time_embedding.linear_2" in name:
                param.normal_(0, 0.1)
    return unet


def tiny(pipeline_cls, per_modality=False, scheduler_cls=DDPMScheduler, cls=JointUNet2DModel):
    pipe = pipeline_cls(unet=tiny_unet(per_modality, cls), scheduler=scheduler_cls(num_train_timesteps=100),
                        id2label={0: "sea", 1: "oil", 2: "ship"})
    pipe.set_progress_bar_config(disable=True)
    return pipe


def masks(batch=2, seed=0, size=16):
    return torch.randint(0, 3, (batch, size, size), generator=torch.Generator().manual_seed(seed))


def images(batch=2, seed=0, size=16):
    return torch.rand(batch, 1, size, size, generator=torch.Generator().manual_seed(seed))


def seeds(*values):
    return [torch.Generator().manual_seed(v) for v in values]


# ----------------------------------------------------------------------------------------------------------------------
# Mask -> image
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_mask_to_image_outputs(output_type):
    pipe = tiny(DAKTerMaskToImagePipeline)
    out = pipe(masks=masks(), num_images_per_mask=2, num_inference_steps=3, output_type=output_type)
    assert isinstance(out, DAKTerMaskToImagePipelineOutput)
    if output_type == "pil":
        assert len(out.images) == 4 and out.images[0].size == (16, 16) and out.soft_labels.shape == (4, 16, 16, 3)
        assert len(out.labels) == 4 and out.labels[0].mode == "L"
    elif output_type == "np":
        assert out.images.shape == (4, 16, 16, 1) and out.soft_labels.shape == (4, 16, 16, 3)
        assert out.labels.shape == (4, 16, 16)
    else:
        assert out.images.shape == (4, 1, 16, 16) and out.soft_labels.shape == (4, 3, 16, 16)
        assert 0 <= float(out.images.min()) and float(out.images.max()) <= 1
        torch.testing.assert_close(out.soft_labels.sum(dim=1), torch.ones(4, 16, 16))
    images_, soft, labels = pipe(masks=masks(), num_inference_steps=2, return_dict=False, output_type="np")
    assert images_.shape == (2, 16, 16, 1)


def test_mask_forms_agree():
    """Class indices as a tensor, a NumPy array, PIL masks, mask files, one-hot probabilities: the same draw."""
    pipe = tiny(DAKTerMaskToImagePipeline)
    indices = masks(batch=1)
    onehot = torch.nn.functional.one_hot(indices, 3).permute(0, 3, 1, 2).float()
    pil = PIL.Image.fromarray(indices[0].numpy().astype(np.uint8), mode="L")
    forms = [indices, indices.numpy(), pil, [pil], onehot, onehot.numpy(), indices[0]]
    results = [pipe(masks=form, generator=seeds(5), num_inference_steps=3, output_type="pt").images for form in forms]
    for result in results[1:]:
        assert torch.equal(result, results[0])


def test_mask_files(tmp_path):
    pipe = tiny(DAKTerMaskToImagePipeline)
    path = tmp_path / "mask.png"
    PIL.Image.fromarray(masks(batch=1)[0].numpy().astype(np.uint8), mode="L").save(path)
    from_file = pipe(masks=[str(path)], generator=seeds(5), num_inference_steps=3, output_type="pt").images
    direct = pipe(masks=masks(batch=1), generator=seeds(5), num_inference_steps=3, output_type="pt").images
    assert torch.equal(from_file, direct)


def test_masks_of_another_size_are_resized_to_the_sample_size():
    pipe = tiny(DAKTerMaskToImagePipeline)
    big = masks(batch=1, size=8).repeat_interleave(4, dim=1).repeat_interleave(4, dim=2)  # 32x32, blocks of 4
    out = pipe(masks=big, num_inference_steps=2, output_type="pt")
    assert out.images.shape == (1, 1, 16, 16)


def test_the_images_follow_the_masks():
    pipe = tiny(DAKTerMaskToImagePipeline)
    a = pipe(masks=masks(batch=1, seed=0), generator=seeds(1), num_inference_steps=3, output_type="pt").images
    b = pipe(masks=masks(batch=1, seed=1), generator=seeds(1), num_inference_steps=3, output_type="pt").images
    assert not torch.allclose(a, b)


# ----------------------------------------------------------------------------------------------------------------------
# Segmentation
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("output_type", ["pil", "np", "pt"])
def test_segmentation_outputs_at_the_input_size(output_type):
    pipe = tiny(DAKTerSegmentationPipeline)
    out = pipe(images=images(size=24), num_inference_steps=3, output_type=output_type)
    assert isinstance(out, DAKTerSegmentationPipelineOutput)
    if output_type == "pt":
        assert out.soft_labels.shape == (2, 3, 24, 24) and out.labels.shape == (2, 24, 24)
        torch.testing.assert_close(out.soft_labels.sum(dim=1), torch.ones(2, 24, 24))
        assert torch.equal(out.labels, out.soft_labels.argmax(dim=1))
    else:
        assert out.soft_labels.shape == (2, 24, 24, 3)
        labels = out.labels if output_type == "np" else np.stack([np.array(label) for label in out.labels])
        assert labels.shape == (2, 24, 24) and labels.max() < 3


def test_image_forms_agree(tmp_path):
    """A uint8 PIL image, its file, a (H, W) uint8 array, a (H, W, 1) float array and a (1, H, W) tensor."""
    pipe = tiny(DAKTerSegmentationPipeline)
    pixels = (images(batch=1, size=20)[0, 0] * 255).round().to(torch.uint8)
    pil = PIL.Image.fromarray(pixels.numpy(), mode="L")
    path = tmp_path / "scene_sat.jpg"
    pil.convert("RGB").save(tmp_path / "scene.png")  # a 3-channel file of the same grey image
    pil.save(path, quality=100)
    forms = [pil, str(tmp_path / "scene.png"), pixels.numpy(), (pixels.numpy() / 255.0)[:, :, None],
             pixels[None].float() / 255]
    results = [pipe(images=form, generator=seeds(3), num_inference_steps=3, output_type="pt").soft_labels
               for form in forms]
    for result in results[1:]:
        torch.testing.assert_close(result, results[0], atol=1e-5, rtol=0)
    assert pipe(images=[path], num_inference_steps=2, output_type="pt").soft_labels.shape == (1, 3, 20, 20)


def test_images_of_different_sizes_give_lists():
    pipe = tiny(DAKTerSegmentationPipeline)
    out = pipe(images=[np.zeros((20, 12), np.uint8), torch.rand(1, 16, 16)], num_inference_steps=2, output_type="np")
    assert [s.shape for s in out.soft_labels] == [(20, 12, 3), (16, 16, 3)]
    assert [label.shape for label in out.labels] == [(20, 12), (16, 16)]


def test_segmentation_depends_on_the_image():
    pipe = tiny(DAKTerSegmentationPipeline)
    a = pipe(images=images(batch=1, seed=0), generator=seeds(1), num_inference_steps=3, output_type="pt")
    b = pipe(images=images(batch=1, seed=1), generator=seeds(1), num_inference_steps=3, output_type="pt")
    assert not torch.allclose(a.soft_labels, b.soft_labels)


def test_num_samples_averages_independent_draws():
    pipe = tiny(DAKTerSegmentationPipeline)
    x = images(batch=1)
    averaged = pipe(images=x, num_samples=2, generator=seeds(4), num_inference_steps=3, output_type="pt").soft_labels
    generator = torch.Generator().manual_seed(4)
    first = pipe(images=x, generator=generator, num_inference_steps=3, output_type="pt").soft_labels
    second = pipe(images=x, generator=generator, num_inference_steps=3, output_type="pt").soft_labels
    assert not torch.allclose(first, second)
    torch.testing.assert_close(averaged, (first + second) / 2)


def test_soft_label_temperature_softens():
    pipe = tiny(DAKTerSegmentationPipeline)
    sharp = pipe(images=images(), generator=seeds(1, 2), num_inference_steps=3, output_type="pt").soft_labels
    soft = pipe(images=images(), generator=seeds(1, 2), num_inference_steps=3, output_type="pt",
                soft_label_temperature=4.0).soft_labels
    assert float(soft.max(dim=1).values.mean()) < float(sharp.max(dim=1).values.mean())


# ----------------------------------------------------------------------------------------------------------------------
# Determinism, schedulers, conditioning
# ----------------------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
@pytest.mark.parametrize("mode", ["replacement", "resampling", "exact"])
def test_a_generator_list_gives_per_sample_determinism(scheduler_cls, mode):
    options = dict(num_inference_steps=4, output_type="pt")
    if mode == "resampling":
        options.update(jump_length=2, jump_n_sample=2)
    per_modality = mode == "exact"
    m2i = tiny(DAKTerMaskToImagePipeline, per_modality, scheduler_cls)
    both = m2i(masks=masks(), generator=seeds(10, 11), **options).images
    alone = m2i(masks=masks()[1:], generator=seeds(11), **options).images
    # Equal up to float rounding (batched kernels): what sample i draws depends on generator i only.
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)
    seg = DAKTerSegmentationPipeline.from_pipe(m2i)
    both = seg(images=images(), generator=seeds(10, 11), **options).soft_labels
    alone = seg(images=images()[1:], generator=seeds(11), **options).soft_labels
    torch.testing.assert_close(both[1:], alone, atol=1e-5, rtol=0)
    again = seg(images=images(), generator=seeds(10, 11), **options).soft_labels
    assert torch.equal(both, again)
    other_seed = seg(images=images(), generator=seeds(10, 12), **options).soft_labels
    assert torch.equal(other_seed[0], both[0]) and not torch.allclose(other_seed[1], both[1], atol=1e-4)


@pytest.mark.parametrize("known_modality", ["image", "label"])
def test_exact_conditioning_feeds_the_known_modality_clean_at_timestep_zero(known_modality):
    pipeline_cls = DAKTerSegmentationPipeline if known_modality == "image" else DAKTerMaskToImagePipeline
    pipe = tiny(pipeline_cls, per_modality=True, cls=RecordingModel)
    if known_modality == "image":
        known = images() * 2 - 1
    else:
        known = 0.5 * (2 * torch.nn.functional.one_hot(masks(), 3).permute(0, 3, 1, 2).float() - 1)
    sample = pipe.sample_conditionally(known, known_modality, "exact", num_inference_steps=5,
                                       generator=torch.Generator().manual_seed(0))
    calls = pipe.unet.calls
    schedule = [int(t) for t in pipe.scheduler.timesteps]
    assert len(calls) == 5 and schedule[0] > 0
    for (image, label, timestep, label_timestep), t in zip(calls, schedule):
        if known_modality == "image":
            assert torch.equal(image, known) and int(timestep) == 0 and int(label_timestep) == t
        else:
            assert torch.equal(label, known) and int(label_timestep) == 0 and int(timestep) == t
    kept = sample.image if known_modality == "image" else sample.label
    assert torch.equal(kept, known)


@pytest.mark.parametrize("scheduler_cls", SCHEDULERS)
@pytest.mark.parametrize("known_modality", ["image", "label"])
def test_replacement_noises_the_known_modality_and_ends_exactly_on_it(scheduler_cls, known_modality):
    pipe = tiny(DAKTerMaskToImagePipeline, cls=RecordingModel, scheduler_cls=scheduler_cls)
    known = images() * 2 - 1 if known_modality == "image" else 0.5 * (
        2 * torch.nn.functional.one_hot(masks(), 3).permute(0, 3, 1, 2).float() - 1)
    sample = pipe.sample_conditionally(known, known_modality, "replacement", num_inference_steps=6,
                                       generator=torch.Generator().manual_seed(0))
    kept = sample.image if known_modality == "image" else sample.label
    assert torch.equal(kept, known)
    # The model sees the known modality noised: far from it at the first step, close to it at the last.
    seen = [(call[0] if known_modality == "image" else call[1]) for call in pipe.unet.calls]
    first, last = (float((s - known).abs().mean()) for s in (seen[0], seen[-1]))
    assert last < 0.2 < first
    assert all(call[3] is None for call in pipe.unet.calls)  # one shared timestep


def test_resampling_runs_every_stretch_jump_n_sample_times_but_the_last():
    pipe = tiny(DAKTerSegmentationPipeline, cls=RecordingModel)
    pipe(images=images(), num_inference_steps=6, jump_length=2, jump_n_sample=3, output_type="pt")
    # Stretches (0, 2), (2, 4) run three times each, the final stretch (4, 6) once.
    assert len(pipe.unet.calls) == 2 * 3 + 2 * 3 + 2
    timesteps = [int(call[2]) for call in pipe.unet.calls]
    schedule = [int(t) for t in pipe.scheduler.timesteps]
    assert timesteps == schedule[0:2] * 3 + schedule[2:4] * 3 + schedule[4:6]


def test_auto_conditioning_follows_the_model():
    replacement = tiny(DAKTerSegmentationPipeline, cls=RecordingModel)
    replacement(images=images(), num_inference_steps=2, output_type="pt")
    assert all(call[3] is None for call in replacement.unet.calls)
    exact = tiny(DAKTerSegmentationPipeline, per_modality=True, cls=RecordingModel)
    exact(images=images(), num_inference_steps=2, output_type="pt")
    assert all(int(call[2]) == 0 for call in exact.unet.calls)
    # A per-modality model can still be conditioned by replacement (for comparison).
    exact.unet.calls = []
    exact(images=images(), num_inference_steps=2, output_type="pt", conditioning="replacement")
    assert all(call[3] is None for call in exact.unet.calls)


# ----------------------------------------------------------------------------------------------------------------------
# Loading and sharing
# ----------------------------------------------------------------------------------------------------------------------


def test_from_pipe_shares_the_parameter_tensors():
    pipe = tiny(DAKTerPipeline)
    for pipeline_cls in (DAKTerSegmentationPipeline, DAKTerMaskToImagePipeline):
        other = pipeline_cls.from_pipe(pipe)
        assert type(other) is pipeline_cls and other.unet is pipe.unet and other.scheduler is pipe.scheduler
        assert other.id2label == pipe.id2label
        for (name, a), (_, b) in zip(pipe.unet.named_parameters(), other.unet.named_parameters()):
            assert a is b and a.data_ptr() == b.data_ptr(), name


class _Records(logging.Handler):
    def __init__(self):
        super().__init__()
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def test_casting_prints_no_spurious_fp32_warning():
    """diffusers' `ModelMixin.to(dtype)` warns about "modules that should be kept in float32: []" for any model cast
    to a dtype; the README's way to get the other tasks (`from_pipe`, which re-casts the shared model) and a user's
    own `pipe.to(dtype)` / `unet.to(dtype)` must print nothing of the kind, while a warning that names modules still
    reaches the user."""
    from diffusers import UNet2DModel

    pipe = tiny(DAKTerPipeline)
    records = _Records()
    model_logger = logging.getLogger("diffusers.models.modeling_utils")
    model_logger.addHandler(records)
    try:
        for pipeline_cls in (DAKTerSegmentationPipeline, DAKTerMaskToImagePipeline):
            pipeline_cls.from_pipe(pipe)
        pipe.to(torch.bfloat16)
        pipe.unet.to(torch.float32)
        assert pipe.unet.dtype == torch.float32 and not records.messages, records.messages
        plain = UNet2DModel(sample_size=8, block_out_channels=(8, 8), norm_num_groups=4, layers_per_block=1,
                            down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"))
        plain.to(torch.float32)  # diffusers alone: the warning it gives (the test fails once diffusers mends it)
        assert sum("kept in float32: []" in message for message in records.messages) == 1, records.messages
        records.messages.clear()
        pipe.unet._keep_in_fp32_modules = ["conv_in"]  # a model that does keep modules in fp32: warned as before
        DAKTerSegmentationPipeline.from_pipe(pipe)
        assert any("kept in float32: ['conv_in']" in message for message in records.messages), records.messages
    finally:
        model_logger.removeHandler(records)
        pipe.unet._keep_in_fp32_modules = None
    assert not [f for f in model_logger.filters if "FP32" in type(f).__name__]


def test_from_pretrained_loads_a_saved_joint_checkpoint(tmp_path):
    pipe = tiny(DAKTerPipeline)
    pipe.save_pretrained(tmp_path)
    for pipeline_cls in (DAKTerSegmentationPipeline, DAKTerMaskToImagePipeline):
        loaded = pipeline_cls.from_pretrained(tmp_path)
        assert type(loaded) is pipeline_cls and type(loaded.unet) is JointUNet2DModel
        assert loaded.id2label == {0: "sea", 1: "oil", 2: "ship"}
        for a, b in zip(pipe.unet.parameters(), loaded.unet.parameters()):
            assert torch.equal(a, b)
    loaded.set_progress_bar_config(disable=True)
    expected = tiny(DAKTerMaskToImagePipeline)(masks=masks(), generator=seeds(1, 2), num_inference_steps=2,
                                               output_type="pt").images
    assert torch.equal(loaded(masks=masks(), generator=seeds(1, 2), num_inference_steps=2, output_type="pt").images,
                       expected)


def test_from_pretrained_hub_id(hub_server, hub_repo_id, clean_hub_cache):
    pipe = tiny(DAKTerPipeline)
    pipe.push_to_hub(hub_repo_id)
    seg = DAKTerSegmentationPipeline.from_pretrained(hub_repo_id)
    assert type(seg) is DAKTerSegmentationPipeline and type(seg.unet) is JointUNet2DModel
    for a, b in zip(pipe.unet.parameters(), seg.unet.parameters()):
        assert torch.equal(a, b)


# ----------------------------------------------------------------------------------------------------------------------
# Bad input
# ----------------------------------------------------------------------------------------------------------------------


def _not_summing_to_one():
    probabilities = torch.full((1, 3, 16, 16), 1 / 3)
    probabilities[0, 0, 3, 3] = 0.9
    return probabilities


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(masks=torch.full((1, 16, 16), 3)), r"`masks`\[0\]: class ids must lie in \[0, 3\)"),
        (dict(masks=-torch.ones(1, 16, 16, dtype=torch.long)), r"class ids must lie in \[0, 3\)"),
        (dict(masks=_not_summing_to_one()), r"`masks`\[0\]: probabilities must sum to 1"),
        (dict(masks=-torch.ones(1, 3, 16, 16) / 3), r"probabilities must be finite and >= 0"),
        (dict(masks=torch.full((1, 2, 16, 16), 0.5)), r"need one channel per class \(3\), got 2 channels"),
        (dict(masks=torch.rand(2, 16, 16)), r"need one channel per class|integer dtype"),
        (dict(masks=PIL.Image.new("RGB", (16, 16))), r"a PIL mask must be a single-channel image"),
        (dict(masks=masks(), generator=seeds(1)), r"one generator per sample: got 1 generators for 2 samples"),
        (dict(masks=masks(), num_images_per_mask=2, generator=seeds(1, 2)), r"got 2 generators for 4 samples"),
        (dict(masks=[]), r"`masks` is empty"),
        (dict(masks=torch.zeros(0, 16, 16, dtype=torch.long)), r"`masks`\[0\] is empty"),
        (dict(masks=masks(), num_images_per_mask=0), r"`num_images_per_mask` must be a positive integer"),
        (dict(masks=masks(), conditioning="exact"), r"`conditioning='exact'` needs a model trained with"),
        (dict(masks=masks(), conditioning="inpaint"), r"`conditioning` must be one of"),
        (dict(masks=masks(), jump_n_sample=0), r"`jump_n_sample` must be a positive integer"),
        (dict(masks=masks(), jump_length=1.5), r"`jump_length` must be a positive integer"),
        (dict(masks=masks(), output_type="latent"), r"`output_type` must be one of"),
        (dict(masks=masks(), soft_label_temperature=0), r"`soft_label_temperature` must be > 0"),
        (dict(masks=["not-a-number"]), r"cannot read the image file 'not-a-number'"),
    ],
)
def test_mask_to_image_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(DAKTerMaskToImagePipeline)(num_inference_steps=2, **kwargs)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(images=torch.rand(2, 3, 16, 16)), r"`images`\[0\]: the model takes 1-channel images, got 3 channels"),
        (dict(images=np.zeros((16, 16, 2), np.uint8)), r"got 2 channels"),
        (dict(images=torch.rand(1, 1, 16, 16) * 2), r"float pixels must lie in \[0, 1\]"),
        (dict(images=images(), generator=seeds(1, 2, 3)), r"got 3 generators for 2 samples"),
        (dict(images=[]), r"`images` is empty"),
        (dict(images=np.zeros((0, 16, 16, 1), np.uint8)), r"`images`\[0\] is empty"),
        (dict(images=np.zeros((2, 2, 16, 16, 1), np.uint8)), r"NumPy images must be"),
        (dict(images="photo.jpg"), r"`images`\[0\]: cannot read the image file 'photo.jpg'"),
        (dict(images=[1, 2]), r"`images`\[0\]: expected a PIL image"),
        (dict(images=images(), num_samples=0), r"`num_samples` must be a positive integer"),
        (dict(images=images(), conditioning="exact"), r"`conditioning='exact'` needs"),
    ],
)
def test_segmentation_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny(DAKTerSegmentationPipeline)(num_inference_steps=2, **kwargs)


def test_an_image_file_that_does_not_decode(tmp_path):
    broken = tmp_path / "broken_sat.jpg"
    broken.write_bytes(b"\xff\xd8\xff\xe0 this is not a JPEG")
    with pytest.raises(ValueError, match=r"`images`\[1\]: cannot read the image file '.*broken_sat.jpg'"):
        tiny(DAKTerSegmentationPipeline)(images=[images(batch=1)[0], str(broken)], num_inference_steps=2)


def test_exact_conditioning_takes_no_resampling():
    with pytest.raises(ValueError, match=r"applies to `conditioning='replacement'` only"):
        tiny(DAKTerSegmentationPipeline, per_modality=True)(images=images(), jump_n_sample=2, num_inference_steps=2)


def test_resampling_needs_one_model_call_per_timestep():
    pipe = tiny(DAKTerSegmentationPipeline, scheduler_cls=HeunDiscreteScheduler)
    pipe(images=images(), num_inference_steps=2, output_type="pt")  # without resampling Heun works
    with pytest.raises(ValueError, match="HeunDiscreteScheduler repeats timesteps"):
        pipe(images=images(), num_inference_steps=4, jump_length=2, jump_n_sample=2)
