"""Sampling wall time: DPM-Solver++ at 20 steps against DDPM at 1000 steps, same model, same pipeline.

Both schedulers are built from the same training schedule (1000 steps, linear betas); the model is called once per
step by both, so the expected speed-up is about 1000 / 20 = 50x (less any per-step scheduler cost). The default
resolution is 32x32 (the 64x64 model of the other benchmarks makes 1000 DDPM steps take many minutes on 2 cores);
the ratio depends little on it.

    python benchmarks/bench_sampling.py --output benchmarks/results/sampling.json
"""

import argparse

import torch
from diffusers import DDPMScheduler, DPMSolverMultistepScheduler

from dakter_hf import DAKTerPipeline, JointUNet2DModel

from timing_utils import (
    SMALL_UNET,
    add_common_args,
    apply_common_args,
    machine_info,
    summarize,
    time_side_by_side,
    write_result,
)


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architecture", choices=("dual", "concat"), default="dual")
    parser.add_argument("--ddpm_steps", type=int, default=1000)
    parser.add_argument("--dpm_steps", type=int, default=20)
    parser.add_argument("--sample_size", type=int, default=32)
    parser.add_argument("--batch_size", type=int, default=1)
    parser.add_argument("--num_classes", type=int, default=2)
    add_common_args(parser)
    # A 1000-step DDPM run warms everything up by itself; the samplers are warmed by a short call instead.
    parser.set_defaults(repeats=3, warmup=0)
    args = parser.parse_args()
    apply_common_args(args)

    unet = JointUNet2DModel(sample_size=args.sample_size, num_classes=args.num_classes,
                            architecture=args.architecture, label_scale=0.53, **SMALL_UNET).eval()
    ddpm = DDPMScheduler(num_train_timesteps=1000)
    pipes = {
        "ddpm": (DAKTerPipeline(unet=unet, scheduler=ddpm), args.ddpm_steps),
        "dpmsolver++": (DAKTerPipeline(unet=unet, scheduler=DPMSolverMultistepScheduler.from_config(
            ddpm.config, algorithm_type="dpmsolver++")), args.dpm_steps),
    }

    def sampler(name, steps=None):
        pipe, default_steps = pipes[name]
        pipe.set_progress_bar_config(disable=True)
        return lambda: pipe(batch_size=args.batch_size, generator=torch.Generator().manual_seed(args.seed),
                            num_inference_steps=steps or default_steps, output_type="pt")

    for name in pipes:
        sampler(name, steps=2)()

    wall, cpu = time_side_by_side({name: sampler(name) for name in pipes}, args.repeats, args.warmup)
    summary = {"wall": summarize(wall, baseline="dpmsolver++"), "cpu": summarize(cpu, baseline="dpmsolver++")}
    speedup = summary["wall"]["ddpm"]["ratio_to_dpmsolver++"]
    write_result({
        "benchmark": "sampling",
        "config": {key: getattr(args, key) for key in ("architecture", "ddpm_steps", "dpm_steps", "sample_size",
                                                       "batch_size", "num_classes", "repeats")} | SMALL_UNET,
        "results": summary,
        "speedup_dpmsolver_over_ddpm": speedup,
        "cpu_time_speedup": summary["cpu"]["ddpm"]["ratio_to_dpmsolver++"],
        "expected_speedup": args.ddpm_steps / args.dpm_steps,
        "per_step_ms": {name: 1000 * summary["wall"][name]["median_s"] / steps for name, (_, steps) in pipes.items()},
        "machine": machine_info(),
    }, args.output)


if __name__ == "__main__":
    main()
