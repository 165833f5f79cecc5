"""The workloads of the performance benchmarks, each under a precision / memory-layout / compile setting.

* `generator_step`: one training step of the joint generator with the library's step
  (`joint_diffusion_training_step`: crop, loss, backward, clipping, AdamW) on a fixed batch of simulated scenes;
* `student_step`: one distillation step of a SegFormer student (`distillation_training_step`, `soft` mode, a mixed
  batch of real and generated pairs);
* `generation_call`: one `DAKTerPipeline` call (DPM-Solver++);
* `mask_drawing_call`: one `DAKTerMaskToImagePipeline` call (images drawn for masks, exact conditioning).

Mixed precision is applied the way Accelerate's `mixed_precision` applies it: the model's `forward` runs under
`torch.autocast` and its outputs are cast back to float32, so the losses, the optimizer and the weights stay float32.
(A process holds one Accelerate state, so the benchmarks wrap the forward themselves to compare settings side by
side.) For sampling, the whole pipeline call runs under `torch.autocast`: the denoiser computes in bfloat16 while the
sampler's state stays float32.
"""

import os
import tempfile
from dataclasses import dataclass

import numpy as np
import torch
from accelerate.utils import convert_outputs_to_fp32


PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Setting:
    """How a workload runs: `precision` (autocast dtype name), channels-last kernels, `torch.compile`, and (training)
    gradient checkpointing."""

    precision: str = "fp32"
    channels_last: bool = False
    compile: bool = False
    gradient_checkpointing: bool = False

    @property
    def name(self) -> str:
        parts = [self.precision] + [flag for flag, on in (("channels_last", self.channels_last),
                                                          ("compile", self.compile),
                                                          ("checkpointing", self.gradient_checkpointing)) if on]
        return "+".join(parts)


def parse_setting(text: str) -> Setting:
    """`"bf16+channels_last+compile"` -> `Setting("bf16", channels_last=True, compile=True)`."""
    precision, *flags = text.split("+")
    known = {"channels_last", "compile", "checkpointing"}
    if precision not in PRECISIONS or not set(flags) <= known:
        raise ValueError(f"a setting is <{'|'.join(PRECISIONS)}>[+{'][+'.join(sorted(known))}], got {text!r}")
    return Setting(precision, "channels_last" in flags, "compile" in flags, "checkpointing" in flags)


def device_type() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def apply_setting(model: torch.nn.Module, setting: Setting) -> torch.nn.Module:
    """Apply `setting` to `model` in place: kernel layout, autocast of the forward, checkpointing, then compile."""
    if setting.channels_last:
        model.to(memory_format=torch.channels_last)
    dtype = PRECISIONS[setting.precision]
    if dtype is not None:
        model.forward = convert_outputs_to_fp32(torch.autocast(device_type(), dtype=dtype)(model.forward))
    if setting.gradient_checkpointing:
        model.enable_gradient_checkpointing()
    if setting.compile:
        model.compile()
    return model


def generator_step(setting: Setting, model_size: str = "small", resolution: int = 64, crop_size: int | None = 32,
                   batch_size: int = 16, num_classes: int = 2, seed: int = 0):
    """A closure running one generator training step (the SOS benchmark's generator by default: the `small`
    preset trained on 32-pixel crops of 64-pixel scenes, batches of 16), and the model."""
    from accelerate import Accelerator

    from dakter_hf import JointUNet2DModel
    from dakter_hf.data import dataset_to_tensors, simulate_sar_scenes
    from dakter_hf.seeding import step_generator
    from dakter_hf.training import build_noise_scheduler, joint_diffusion_training_step, joint_unet_config

    accelerator = Accelerator(mixed_precision="no")
    scenes = simulate_sar_scenes(batch_size, size=resolution, seed=seed, num_classes=num_classes)
    images, masks = dataset_to_tensors(scenes, resolution)
    batch = {"pixel_values": images.to(accelerator.device), "labels": masks.to(accelerator.device)}
    torch.manual_seed(seed)
    model = JointUNet2DModel(**joint_unet_config(model_size, resolution=crop_size or resolution,
                                                 num_classes=num_classes, label_scale=0.5))
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    apply_setting(model, setting)
    model.train()
    noise_scheduler = build_noise_scheduler(1000, "sample")
    state = {"step": 0}

    def step():
        losses = joint_diffusion_training_step(accelerator, model, noise_scheduler, optimizer, lr_scheduler, batch,
                                               generator=step_generator(seed, state["step"]), crop_size=crop_size)
        state["step"] += 1
        return losses

    return step, model


def student_step(setting: Setting, student: str = "b0", resolution: int = 64, batch_size: int = 16,
                 num_classes: int = 2, seed: int = 0):
    """A closure running one `soft` distillation step of a SegFormer student on a half-generated batch (the SOS
    benchmark's student: b0, 64 pixels, batches of 16), and the model."""
    from accelerate import Accelerator

    from dakter_hf.data import load_dataset_by_name
    from dakter_hf.distill import create_student
    from dakter_hf.distill.training import build_distillation_dataloader, distillation_training_step

    from bench_distill_overhead import fake_generated_dataset

    accelerator = Accelerator(mixed_precision="no")
    real = load_dataset_by_name("simulated", split="train", resolution=resolution, num_samples=2 * batch_size,
                                num_classes=num_classes)
    generated = fake_generated_dataset(os.path.join(tempfile.mkdtemp(prefix="bench-student-"), "generated"),
                                       2 * batch_size, num_classes, resolution)
    loader = build_distillation_dataloader(real, generated, resolution=resolution, train_batch_size=batch_size,
                                           generated_ratio=0.5, max_train_steps=1, seed=seed)
    batch = next(iter(loader))
    torch.manual_seed(seed)
    model = create_student(student, num_labels=num_classes, image_size=resolution)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr_scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    apply_setting(model, setting)
    model.train()

    def step():
        return distillation_training_step(accelerator, model, optimizer, lr_scheduler, batch, mode="soft")

    return step, model


def _sampling_pipeline(setting: Setting, model_size: str, resolution: int, num_classes: int, seed: int,
                       per_modality_timesteps: bool = False):
    """An untrained `DAKTerPipeline` of `model_size` with DPM-Solver++ (a trained one runs at the same speed), its
    UNet laid out and compiled as `setting` says."""
    from diffusers import DPMSolverMultistepScheduler

    from dakter_hf import DAKTerPipeline, JointUNet2DModel
    from dakter_hf.training import joint_unet_config

    torch.manual_seed(seed)
    unet = JointUNet2DModel(**joint_unet_config(model_size, resolution=resolution, num_classes=num_classes,
                                                label_scale=0.5, per_modality_timesteps=per_modality_timesteps)).eval()
    pipe = DAKTerPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler(num_train_timesteps=1000,
                                                                           algorithm_type="dpmsolver++"))
    pipe.set_progress_bar_config(disable=True)
    if setting.channels_last:
        unet.to(memory_format=torch.channels_last)
    if setting.compile:
        unet.compile()
    return pipe


def _autocast(setting: Setting):
    dtype = PRECISIONS[setting.precision]
    return torch.autocast(device_type(), dtype=dtype or torch.float32, enabled=dtype is not None)


def generation_call(setting: Setting, model_size: str = "small", resolution: int = 64, batch_size: int = 32,
                    num_inference_steps: int = 20, num_classes: int = 2, seed: int = 0):
    """A closure generating one batch of pairs with DPM-Solver++ (the SOS benchmark's generation: 64 pixels, batches
    of 32, 20 steps) from an untrained generator of `model_size` (a trained one runs at the same speed)."""
    pipe = _sampling_pipeline(setting, model_size, resolution, num_classes, seed)

    def call():
        generator = [torch.Generator().manual_seed(seed + i) for i in range(batch_size)]
        with _autocast(setting):
            return pipe(batch_size=batch_size, generator=generator, num_inference_steps=num_inference_steps,
                        output_type="pt")

    return call, pipe.unet


def mask_drawing_call(setting: Setting, model_size: str = "small", resolution: int = 64, batch_size: int = 32,
                      num_inference_steps: int = 20, num_classes: int = 2, seed: int = 0):
    """A closure drawing one batch of images for masks with DPM-Solver++ and exact conditioning (the SOS benchmark's
    `--pairs mask` stage: a per-modality-timestep generator, 64 pixels, batches of 32, 20 steps); the masks are
    simulated scenes' masks."""
    from dakter_hf.data import simulate_sar_scenes
    from dakter_hf.pipelines import DAKTerMaskToImagePipeline

    pipe = DAKTerMaskToImagePipeline.from_pipe(
        _sampling_pipeline(setting, model_size, resolution, num_classes, seed, per_modality_timesteps=True))
    pipe.set_progress_bar_config(disable=True)
    scenes = simulate_sar_scenes(batch_size, size=resolution, seed=seed, num_classes=num_classes)
    masks = torch.stack([torch.as_tensor(np.asarray(mask, dtype=np.int64)) for mask in scenes["mask"]])

    def call():
        generator = [torch.Generator().manual_seed(seed + i) for i in range(batch_size)]
        with _autocast(setting):
            return pipe(masks=masks, generator=generator, num_inference_steps=num_inference_steps,
                        conditioning="exact", output_type="pt")

    return call, pipe.unet
