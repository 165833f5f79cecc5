"""Generation speed by batch size and memory layout: which `dakter-generate --batch_size` / `--channels_last` to use.

Times `dakter_hf.generation.generate_dataset` (sampling and soft-label encoding, what `dakter-generate` does minus the
shard writes) for the same pairs with each batch size, once with the UNet's convolution kernels in the default
(contiguous) layout and once channels-last, side by side in one run. Ratios are to `--baseline` (the
SOS benchmark's setting before this benchmark: batches of 32, contiguous). Also reports how far the channels-last
samples are from the contiguous ones (float rounding only).

The model is an *untrained* `JointUNet2DModel` of the trainer's `small` preset at 64x64 (the SOS benchmark's
generator): a trained model of the same size runs at the same speed.

    python benchmarks/bench_generation_layout.py --threads 2 --output benchmarks/results/generation_layout.json
"""

import argparse
import copy

import datasets
import numpy as np
import torch
from diffusers import DPMSolverMultistepScheduler

from dakter_hf import DAKTerPipeline, JointUNet2DModel
from dakter_hf.generation import decode_soft_labels, generate_dataset, unet_memory_format
from dakter_hf.training import joint_unet_config

from timing_utils import add_common_args, apply_common_args, machine_info, summarize, time_side_by_side, write_result


ID2LABEL = {0: "sea", 1: "oil_spill"}


def make_pipelines(args) -> dict[str, DAKTerPipeline]:
    """The same untrained pipeline twice: kernels contiguous, and a copy with kernels channels-last."""
    config = joint_unet_config(args.model_size, resolution=args.resolution, num_classes=2, label_scale=0.33)
    unet = JointUNet2DModel(**config).eval()
    scheduler = DPMSolverMultistepScheduler(num_train_timesteps=1000, algorithm_type="dpmsolver++")
    pipes = {
        "contiguous": DAKTerPipeline(unet=unet, scheduler=scheduler),
        "channels_last": DAKTerPipeline(unet=copy.deepcopy(unet).to(memory_format=torch.channels_last),
                                        scheduler=copy.deepcopy(scheduler)),
    }
    for layout, pipe in pipes.items():
        assert unet_memory_format(pipe.unet) == layout
        pipe.set_progress_bar_config(disable=True)
    return pipes


def main():
    """Time every (batch size, layout) pair side by side and write the medians, ratios and sample differences."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 16, 32])
    parser.add_argument("--baseline", default="32-contiguous", help="candidate the ratios are to: <batch>-<layout>")
    parser.add_argument("--num_pairs", type=int, default=32, help="pairs per candidate and repetition")
    parser.add_argument("--num_inference_steps", type=int, default=10,
                        help="DPM-Solver++ steps (the cost per step does not depend on it)")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--model_size", default="small")
    add_common_args(parser)
    parser.set_defaults(repeats=3)
    args = parser.parse_args()
    apply_common_args(args)
    datasets.disable_progress_bars()
    pipes = make_pipelines(args)

    def candidate(batch_size, layout):
        return lambda: generate_dataset(pipes[layout], args.num_pairs, seed=args.seed, batch_size=batch_size,
                                        num_inference_steps=args.num_inference_steps, id2label=ID2LABEL)

    candidates = {f"{b}-{layout}": candidate(b, layout) for b in args.batch_sizes for layout in pipes}
    if args.baseline not in candidates:
        parser.error(f"--baseline {args.baseline!r} is not among the candidates {sorted(candidates)}")
    wall, cpu = time_side_by_side(candidates, args.repeats, args.warmup)
    summary = summarize(wall, baseline=args.baseline)

    # The same rows in both layouts: how far apart the stored values are.
    batch = args.batch_sizes[0]
    rows = {layout: candidate(batch, layout)() for layout in pipes}
    soft = {layout: decode_soft_labels(rows[layout].with_format("numpy")["soft_label"], dtype=rows[layout].features)
            for layout in pipes}
    images = {layout: np.stack([np.asarray(image, dtype=np.int16) for image in rows[layout]["image"]])
              for layout in pipes}
    write_result({
        "benchmark": "generation_layout",
        "config": {key: getattr(args, key) for key in ("batch_sizes", "baseline", "num_pairs", "num_inference_steps",
                                                       "resolution", "model_size", "repeats", "warmup")},
        "num_parameters": sum(p.numel() for p in pipes["contiguous"].unet.parameters()),
        "seconds_per_pair": {name: s["median_s"] / args.num_pairs for name, s in summary.items()},
        "speedup_over_baseline": {name: 1 / s["ratio_to_" + args.baseline] for name, s in summary.items()},
        "wall": summary,
        "cpu": summarize(cpu, baseline=args.baseline),
        "channels_last_vs_contiguous": {
            "batch_size": batch,
            "soft_label_max_abs_diff": float(np.abs(soft["channels_last"] - soft["contiguous"]).max()),
            "image_max_abs_diff_levels": int(np.abs(images["channels_last"] - images["contiguous"]).max()),
            "image_pixels_differing": float((images["channels_last"] != images["contiguous"]).mean()),
        },
        "machine": machine_info(),
    }, args.output)


if __name__ == "__main__":
    main()
