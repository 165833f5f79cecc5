#!/usr/bin/env python
"""Cost table: FLOPs, step time and achieved FLOP/s of the generator and student training steps by resolution and batch.

FLOPs of one training step (forward + backward; the optimizer's few FLOPs per parameter are left out) are counted with
`torch.utils.flop_counter.FlopCounterMode` on meta tensors (shapes only, no compute), for every resolution and batch
size. Step times are measured for the grid up to `--max_timed_resolution` (`benchmarks/workloads.py`: the SOS
benchmark's generator, trained on whole scenes of the given size, and its SegFormer-b0 student, each in float32 and
bf16 autocast), and the CPU's matmul peak is measured the same way with a large float32 and bfloat16 matmul. Achieved
FLOP/s = step FLOPs / step time, and its share of the peak of the step's precision.

Both wall and CPU time (this process) are reported; on a shared machine the wall time is stretched by other
processes while the CPU time mostly is not, so the share of the peak is given for both (CPU-time based, the peak is
measured under the same load).

Last, a *projection* (not a measurement) of a 256-pixel generator training run on one GPU from the counted FLOPs,
with its assumptions (peak, utilisation, steps) stated in the result.

    python benchmarks/bench_cost_table.py --threads 1 --output benchmarks/results/cost_table.json
"""

import argparse
import os
import statistics
import sys
import time

import torch
from torch.utils.flop_counter import FlopCounterMode

from timing_utils import add_common_args, apply_common_args, machine_info, write_result
from workloads import Setting, generator_step, student_step


# Dense tensor-core peaks from the vendors' data sheets (no sparsity), FLOP/s.
GPU_PEAKS = {"NVIDIA H100 SXM bf16": 989e12, "NVIDIA A100 bf16": 312e12, "NVIDIA L4 bf16": 121e12}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolutions", type=int, nargs="+", default=[32, 64, 128, 256])
    parser.add_argument("--batch_sizes", type=int, nargs="+", default=[8, 16])
    parser.add_argument("--precisions", nargs="+", choices=["fp32", "bf16"], default=["fp32", "bf16"])
    parser.add_argument("--max_timed_resolution", type=int, default=128,
                        help="time steps up to this resolution (larger ones: FLOPs only)")
    parser.add_argument("--model_sizes", nargs="+", default=["small", "base"],
                        help="generator presets whose FLOPs are counted (the first is also timed)")
    parser.add_argument("--matmul_size", type=int, default=2048)
    parser.add_argument("--projection_steps", type=int, default=50_000,
                        help="training steps of the projected 256-pixel GPU run")
    parser.add_argument("--projection_batch_size", type=int, default=32)
    parser.add_argument("--projection_utilisation", type=float, default=0.35,
                        help="assumed share of the GPU's peak a bf16 UNet training step reaches")
    add_common_args(parser)
    parser.set_defaults(repeats=2, warmup=1)
    return parser.parse_args(argv)


def count_generator_flops(model_size: str, resolution: int, batch_size: int, num_classes: int = 2) -> int:
    """FLOPs of one forward + backward of the generator, counted on meta tensors."""
    from dakter_hf import JointUNet2DModel
    from dakter_hf.training import joint_unet_config

    with torch.device("meta"):
        model = JointUNet2DModel(**joint_unet_config(model_size, resolution=resolution, num_classes=num_classes,
                                                     label_scale=0.5))
        image = torch.randn(batch_size, 1, resolution, resolution)
        label = torch.randn(batch_size, num_classes, resolution, resolution)
        timesteps = torch.zeros(batch_size, dtype=torch.long)
    with FlopCounterMode(display=False) as counter:
        out = model(image, label, timesteps)
        (out.image.sum() + out.label_logits.sum()).backward()
    return counter.get_total_flops()


def count_student_flops(resolution: int, batch_size: int, student: str = "b0", num_classes: int = 2) -> int:
    """FLOPs of one forward + backward of the SegFormer student, counted on meta tensors."""
    from dakter_hf.distill import create_student

    with torch.device("meta"):
        model = create_student(student, num_labels=num_classes, image_size=resolution)
        pixels = torch.randn(batch_size, 1, resolution, resolution)
    with FlopCounterMode(display=False) as counter:
        model(pixel_values=pixels).logits.sum().backward()
    return counter.get_total_flops()


def matmul_peak(size: int, dtype: torch.dtype, repeats: int) -> dict:
    """FLOP/s of a `size` x `size` matmul in `dtype`, best of `repeats` (wall and CPU time)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    a @ b  # warm up
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        a @ b
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    flops = 2 * size**3
    return {"flop_per_s_wall": flops / min(wall), "flop_per_s_cpu": flops / min(cpu), "flops": flops}


def time_step(call, repeats: int, warmup: int) -> dict:
    for _ in range(warmup):
        call()
    wall, cpu = [], []
    for _ in range(repeats):
        start_wall, start_cpu = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - start_wall)
        cpu.append(time.process_time() - start_cpu)
    return {"median_s_wall": statistics.median(wall), "median_s_cpu": statistics.median(cpu)}


def main(argv=None) -> dict:
    args = parse_args(argv)
    apply_common_args(args)
    load = [os.getloadavg()]
    dtypes = {"fp32": torch.float32, "bf16": torch.bfloat16}
    peaks = {p: matmul_peak(args.matmul_size, dtypes[p], repeats=5) for p in args.precisions}

    rows = []
    for resolution in args.resolutions:
        for batch_size in args.batch_sizes:
            flops = {f"generator_{size}": count_generator_flops(size, resolution, batch_size)
                     for size in args.model_sizes}
            flops["student_b0"] = count_student_flops(resolution, batch_size)
            row = {"resolution": resolution, "batch_size": batch_size,
                   "gflop_per_step": {k: v / 1e9 for k, v in flops.items()}, "timed": {}}
            if resolution <= args.max_timed_resolution:
                for precision in args.precisions:
                    setting = Setting(precision)
                    for name, build in (("generator_" + args.model_sizes[0], lambda: generator_step(
                            setting, model_size=args.model_sizes[0], resolution=resolution, crop_size=None,
                            batch_size=batch_size, seed=args.seed)[0]),
                                        ("student_b0", lambda: student_step(setting, resolution=resolution,
                                                                            batch_size=batch_size, seed=args.seed)[0])):
                        timing = time_step(build(), args.repeats, args.warmup)
                        peak = peaks[precision]
                        achieved_wall = flops[name] / timing["median_s_wall"]
                        achieved_cpu = flops[name] / timing["median_s_cpu"]
                        row["timed"][f"{name} {precision}"] = {
                            **timing, "achieved_gflop_per_s_wall": achieved_wall / 1e9,
                            "achieved_gflop_per_s_cpu": achieved_cpu / 1e9,
                            "share_of_matmul_peak_wall": achieved_wall / peak["flop_per_s_wall"],
                            "share_of_matmul_peak_cpu": achieved_cpu / peak["flop_per_s_cpu"]}
                        print(resolution, batch_size, name, precision, row["timed"][f"{name} {precision}"],
                              file=sys.stderr)
            rows.append(row)
            load.append(os.getloadavg())
            write_result({"rows_so_far": rows, "matmul_peak_gflop_per_s": {
                p: {k: v / 1e9 for k, v in peak.items() if k.startswith("flop_per_s")} for p, peak in peaks.items()}},
                args.output and args.output + ".partial")  # what a long run has measured if it is stopped

    projection = {}
    for size in args.model_sizes:
        flops = count_generator_flops(size, 256, args.projection_batch_size)
        total = flops * args.projection_steps
        projection[f"generator_{size}"] = {
            "gflop_per_step": flops / 1e9,
            "hours_on": {gpu: total / (peak * args.projection_utilisation) / 3600 for gpu, peak in GPU_PEAKS.items()},
        }
    result = {
        "benchmark": "cost table: FLOPs per training step, step time and achieved FLOP/s by resolution and batch",
        "command": " ".join(["python", "benchmarks/bench_cost_table.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {**machine_info(), "load_average_per_row": load},
        "matmul_peak": {p: {k: v / 1e9 if k.startswith("flop_per_s") else v for k, v in peak.items()}
                        for p, peak in peaks.items()},
        "matmul_peak_units": "GFLOP/s",
        "rows": rows,
        "projection": {
            "label": "PROJECTION, not a measurement: counted FLOPs x steps / (GPU peak x assumed utilisation)",
            "assumptions": {"resolution": 256, "batch_size": args.projection_batch_size,
                            "steps": args.projection_steps, "utilisation_of_peak": args.projection_utilisation,
                            "precision": "bf16 autocast", "gpu_peaks_flop_per_s": GPU_PEAKS,
                            "left_out": "data loading, EMA, validation, checkpointing, the optimizer's FLOPs"},
            "results": projection,
        },
    }
    write_result(result, args.output)
    return result


if __name__ == "__main__":
    main()
