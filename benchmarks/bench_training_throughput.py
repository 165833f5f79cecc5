#!/usr/bin/env python
"""Training throughput (images/s) of the joint diffusion model, "dual" vs "concat" (and widths), measured side by side.

The models are built from the same preset (optionally at several `--widths`, each a `block_out_channels` list) and
trained with the library's training step
(`dakter_hf.training.joint_diffusion_training_step`: augmentation off, loss, backward, gradient clipping, AdamW step)
on a fixed batch of simulated scenes, so data loading is excluded. Repetitions are interleaved (dual, concat,
concat, dual, ...) with the shared `benchmarks/timing_utils.py`; medians over repetitions are reported.

    python benchmarks/bench_training_throughput.py --output benchmarks/results/training_throughput.json
    python benchmarks/bench_training_throughput.py --architectures dual --widths 32,64,64 48,96,96
"""

import argparse
import statistics
import sys

import torch
from accelerate import Accelerator
from diffusers.optimization import get_scheduler

from dakter_hf import JointUNet2DModel
from dakter_hf.data import dataset_to_tensors, simulate_sar_scenes
from dakter_hf.seeding import step_generator
from dakter_hf.training import (
    JOINT_UNET_PRESETS,
    build_noise_scheduler,
    joint_diffusion_training_step,
    joint_unet_config,
)

from timing_utils import add_common_args, apply_common_args, machine_info, time_interleaved, write_result


def parse_width(text: str) -> tuple[int, ...]:
    """`"32,64,64"` -> `(32, 64, 64)`: one `--widths` entry, positive integers separated by commas."""
    try:
        channels = tuple(int(value) for value in text.split(","))
    except ValueError:
        channels = ()
    if not channels or min(channels) < 1:
        raise argparse.ArgumentTypeError(
            f"expected positive integers separated by commas (e.g. 32,64,64), got {text!r}")
    return channels


def candidate_name(prefix: str, width: tuple[int, ...] | None) -> str:
    """`"dual"`, or `"dual 48-96-96"` when widths are compared (also names the per-width result keys)."""
    return prefix if width is None else f"{prefix} {'-'.join(map(str, width))}"


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--architectures", nargs="+", choices=["dual", "concat"], default=["dual", "concat"])
    parser.add_argument("--model_size", choices=list(JOINT_UNET_PRESETS), default="small")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_classes", type=int, choices=[2, 5], default=2)
    parser.add_argument("--steps", type=int, default=3, help="Training steps per timed repetition.")
    parser.add_argument("--widths", nargs="+", type=parse_width, default=None, metavar="C1,C2,...",
                        help="block_out_channels to compare, e.g. 32,64,64 48,96,96 (default: the preset's)")
    add_common_args(parser)
    args = parser.parse_args(argv)
    for name in ("resolution", "batch_size", "steps", "repeats"):
        if getattr(args, name) < 1:
            parser.error(f"--{name} must be a positive integer.")
    if args.widths and len(set(args.widths)) != len(args.widths):
        parser.error(f"--widths lists a width more than once: {[','.join(map(str, w)) for w in args.widths]}")
    return args


def make_trainer(architecture: str, width: tuple[int, ...] | None, args, accelerator, batch, noise_scheduler):
    """A closure running `args.steps` training steps of a fresh model of `architecture` and `width` (`None`: the
    preset's channels), and its parameter count."""
    torch.manual_seed(args.seed)
    model = JointUNet2DModel(**joint_unet_config(
        args.model_size, resolution=args.resolution, num_classes=args.num_classes, label_scale=0.5,
        architecture=architecture, block_out_channels=width))
    num_parameters = sum(p.numel() for p in model.parameters())
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    lr_scheduler = get_scheduler("constant", optimizer=optimizer)
    model, optimizer, lr_scheduler = accelerator.prepare(model, optimizer, lr_scheduler)
    model.train()

    def train():
        for step in range(args.steps):
            joint_diffusion_training_step(accelerator, model, noise_scheduler, optimizer, lr_scheduler, batch,
                                          generator=step_generator(args.seed, step))

    return train, num_parameters


def paired_ratio(numerators: list[float], denominators: list[float]) -> dict:
    """Median and range of the per-repetition ratios numerator / denominator."""
    ratios = [n / d for n, d in zip(numerators, denominators)]
    return {"median_of_paired_ratios": statistics.median(ratios), "range": [min(ratios), max(ratios)]}


def main(argv=None) -> dict:
    args = parse_args(argv)
    apply_common_args(args)
    accelerator = Accelerator(mixed_precision="no")
    scenes = simulate_sar_scenes(args.batch_size, size=args.resolution, seed=args.seed, num_classes=args.num_classes)
    images, masks = dataset_to_tensors(scenes, args.resolution)
    batch = {"pixel_values": images.to(accelerator.device), "labels": masks.to(accelerator.device)}
    noise_scheduler = build_noise_scheduler(1000, "sample")

    trainers, num_parameters = {}, {}
    for architecture in args.architectures:
        for width in args.widths or [None]:
            name = candidate_name(architecture, width)
            trainers[name], num_parameters[name] = make_trainer(architecture, width, args, accelerator, batch,
                                                                noise_scheduler)
    times = time_interleaved(trainers, repeats=args.repeats, warmup=args.warmup)
    images_per_s = {a: [args.steps * args.batch_size / t for t in values] for a, values in times.items()}
    result = {
        "benchmark": "joint diffusion training throughput (images/s), dual vs concat"
                     + (", by width" if args.widths else ""),
        "command": " ".join(["python", *sys.argv]),
        "machine": machine_info(),
        "settings": {k: v for k, v in vars(args).items() if k != "output"},
        "results": {
            a: {"num_parameters": num_parameters[a], "median_images_per_s": statistics.median(values),
                "images_per_s": [round(v, 3) for v in values]}
            for a, values in images_per_s.items()
        },
    }
    # Within-repetition ratios (the candidates run back to back), then their median: cancels drifts of machine load.
    if {"dual", "concat"} <= set(args.architectures):
        for width in args.widths or [None]:
            result[candidate_name("concat_over_dual_throughput", width)] = paired_ratio(
                images_per_s[candidate_name("concat", width)], images_per_s[candidate_name("dual", width)])
    if args.widths and len(args.widths) > 1:
        for architecture in args.architectures:
            base = candidate_name(architecture, args.widths[0])
            for width in args.widths[1:]:
                # Time per step relative to the first width: base throughput over this width's.
                name = candidate_name(architecture, width)
                result[f"step_time {name} over {base}"] = paired_ratio(images_per_s[base], images_per_s[name])
    write_result(result, args.output)
    return result


if __name__ == "__main__":
    main()
