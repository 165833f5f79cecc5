"""Overhead of DAKTerPipeline over a bare sampling loop on the same model and scheduler (target <= 1.05x).

The bare loop is the least code that samples the joint state correctly: noise, then per step `scale_model_input`,
the model, the clean-state prediction (image prediction + the label codec's clean label) and `scheduler.step`,
then the soft labels of the last logits. The scheduler predicts `"sample"`, like the model, so the bare loop needs
no conversion; the pipeline runs its generic conversion (any prediction type). Both return tensors (the pipeline
with `output_type="pt"`); the progress bar is disabled. The two are also checked to produce the same samples.

    python benchmarks/bench_pipeline_overhead.py --output benchmarks/results/pipeline_overhead.json
"""

import argparse

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from dakter_hf import DAKTerPipeline, JointUNet2DModel
from dakter_hf.labels import logits_to_clean_label, logits_to_soft_labels

from timing_utils import (
    SMALL_UNET,
    add_common_args,
    apply_common_args,
    machine_info,
    summarize,
    time_side_by_side,
    write_result,
)


TARGET = 1.05
SCHEDULERS = {"dpmsolver++": DPMSolverMultistepScheduler, "ddpm": DDPMScheduler}


@torch.no_grad()
def bare_loop(unet: JointUNet2DModel, scheduler, batch_size: int, steps: int, seed: int):
    """The sampling loop with nothing around it (no pipeline, checks or outputs).

    It is the baseline the pipeline is timed against.
    """
    config = unet.config
    channels, size = config.image_channels, config.sample_size
    generator = torch.Generator().manual_seed(seed)
    state = torch.randn((batch_size, channels + config.num_classes, size, size), generator=generator)
    state = state * scheduler.init_noise_sigma
    scheduler.set_timesteps(steps)
    step_kwargs = {"generator": generator} if isinstance(scheduler, DDPMScheduler) else {}
    for t in scheduler.timesteps:
        model_input = scheduler.scale_model_input(state, t)
        image, logits = unet(model_input[:, :channels], model_input[:, channels:], t, return_dict=False)
        clean = torch.cat([image, logits_to_clean_label(logits, config.label_scale)], dim=1)
        state = scheduler.step(clean, t, state, **step_kwargs).prev_sample
    return (state[:, :channels] / 2 + 0.5).clamp(0, 1), logits_to_soft_labels(logits)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=("dual", "concat"), default="dual")
    parser.add_argument("--scheduler", choices=tuple(SCHEDULERS), default="dpmsolver++")
    parser.add_argument("--num_inference_steps", type=int, default=20)
    parser.add_argument("--sample_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=4)
    parser.add_argument("--num_classes", type=int, default=2)
    add_common_args(parser)
    args = parser.parse_args()
    apply_common_args(args)

    unet = JointUNet2DModel(sample_size=args.sample_size, num_classes=args.num_classes,
                            architecture=args.architecture, label_scale=0.53, **SMALL_UNET).eval()
    scheduler = SCHEDULERS[args.scheduler](num_train_timesteps=1000, prediction_type="sample")
    pipe = DAKTerPipeline(unet=unet, scheduler=scheduler)
    pipe.set_progress_bar_config(disable=True)

    def run_pipeline():
        out = pipe(batch_size=args.batch_size, generator=torch.Generator().manual_seed(args.seed),
                   num_inference_steps=args.num_inference_steps, output_type="pt")
        return out.images, out.soft_labels

    def run_bare():
        return bare_loop(unet, scheduler, args.batch_size, args.num_inference_steps, args.seed)

    max_difference = max(float((a - b).abs().max()) for a, b in zip(run_pipeline(), run_bare()))
    wall, cpu = time_side_by_side({"bare_loop": run_bare, "pipeline": run_pipeline}, args.repeats, args.warmup)
    summary = {"wall": summarize(wall, baseline="bare_loop"), "cpu": summarize(cpu, baseline="bare_loop")}
    ratio = summary["wall"]["pipeline"]["ratio_to_bare_loop"]
    write_result({
        "benchmark": "pipeline_overhead",
        "config": {key: getattr(args, key) for key in ("architecture", "scheduler", "num_inference_steps",
                                                       "sample_size", "batch_size", "num_classes", "repeats")}
                  | SMALL_UNET,
        "max_abs_difference_pipeline_vs_bare": max_difference,
        "results": summary,
        "target": {"target_ratio": TARGET, "ratio": ratio, "met": ratio <= TARGET,
                   "cpu_time_ratio": summary["cpu"]["pipeline"]["ratio_to_bare_loop"]},
        "machine": machine_info(),
    }, args.output)


if __name__ == "__main__":
    main()
