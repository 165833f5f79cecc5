#!/usr/bin/env python
"""Precision, memory layout and `torch.compile`: step time of the generator, the student and generation, side by side.

Each workload (`benchmarks/workloads.py`: the SOS benchmark's generator training step, its student step, its
generation call and its drawing of images for masks, 64 pixels, batches of 32, DPM-Solver++ 20 steps) runs under
every `--settings` entry, e.g. `fp32` (today's default), `bf16` (autocast, as `--mixed_precision bf16`),
`+channels_last`, `+compile`. Each setting has its own model. Every setting's first call is timed alone (for
`+compile` it includes the compilation, reported as `compile_s` = first call - steady-state median, and
`compile_cpu_s` by CPU time: with `TORCHINDUCTOR_COMPILE_THREADS=1` inductor compiles in this process and its Python
work is counted, but not the C++ compiler it runs as subprocesses); then repetitions are interleaved with
`benchmarks/timing_utils.py` and ratios are medians of per-repetition ratios to the workload's baseline (its first
setting). The result also records how far each setting's first-step loss (training) or samples (generation) are
from the baseline's.

    python benchmarks/bench_precision.py --threads 1 --output benchmarks/results/precision.json
    python benchmarks/bench_precision.py --workloads generate --generate_settings fp32+channels_last bf16+channels_last
    python benchmarks/bench_precision.py --workloads draw      # images drawn for masks (`--pairs mask`)
"""

import argparse
import os
import sys

import torch

from timing_utils import (
    add_common_args,
    apply_common_args,
    machine_info,
    summarize,
    time_side_by_side,
    write_result,
)
from workloads import generation_call, generator_step, mask_drawing_call, parse_setting, student_step


WORKLOADS = {"train": generator_step, "student": student_step, "generate": generation_call, "draw": mask_drawing_call}
DEFAULT_SETTINGS = {
    # Today's defaults first: the trainer and the students run float32 contiguous; the SOS benchmark samples
    # channels-last.
    "train": ["fp32", "bf16", "fp32+channels_last", "bf16+channels_last", "fp32+compile", "bf16+compile"],
    "student": ["fp32", "bf16", "bf16+channels_last", "fp32+compile", "bf16+compile"],
    "generate": ["fp32+channels_last", "fp32", "bf16", "bf16+channels_last", "bf16+channels_last+compile"],
    "draw": ["fp32+channels_last", "bf16+channels_last"],
}


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workloads", nargs="+", choices=list(WORKLOADS), default=list(WORKLOADS))
    for name, settings in DEFAULT_SETTINGS.items():
        parser.add_argument(f"--{name}_settings", nargs="+", type=parse_setting, default=None,
                            help=f"settings of the {name} workload, the first is the baseline (default: {settings})")
    parser.add_argument("--num_inference_steps", type=int, default=20, help="generation: DPM-Solver++ steps")
    parser.add_argument("--generation_batch_size", type=int, default=32)
    add_common_args(parser)
    parser.set_defaults(repeats=4, warmup=1)
    args = parser.parse_args(argv)
    for name, settings in DEFAULT_SETTINGS.items():
        if getattr(args, f"{name}_settings") is None:
            setattr(args, f"{name}_settings", [parse_setting(s) for s in settings])
    return args


def first_output(workload: str, output) -> dict:
    """What is compared to the baseline: the losses of a training step, the samples of a generation call."""
    if workload == "generate":
        return {"images": output.images.float(), "soft_labels": output.soft_labels.float()}
    if workload == "draw":
        return {"images": output.images.float()}
    return {"loss": torch.tensor(output["loss"])}


def run_workload(workload: str, args) -> dict:
    import time

    settings = getattr(args, f"{workload}_settings")
    kwargs = {}
    if workload in ("generate", "draw"):
        kwargs = dict(num_inference_steps=args.num_inference_steps, batch_size=args.generation_batch_size)
    candidates, first_call_s, first_call_cpu_s, outputs = {}, {}, {}, {}
    for setting in settings:
        call, _ = WORKLOADS[workload](setting, seed=args.seed, **kwargs)
        start, start_cpu = time.perf_counter(), time.process_time()
        outputs[setting.name] = first_output(workload, call())
        first_call_s[setting.name] = time.perf_counter() - start
        first_call_cpu_s[setting.name] = time.process_time() - start_cpu
        candidates[setting.name] = call
        print(f"{workload} {setting.name}: first call {first_call_s[setting.name]:.1f} s "
              f"({first_call_cpu_s[setting.name]:.1f} s CPU)", file=sys.stderr)
    load_before = os.getloadavg()
    wall, cpu = time_side_by_side(candidates, repeats=args.repeats, warmup=args.warmup)
    baseline = settings[0].name
    summary, cpu_summary = summarize(wall, baseline), summarize(cpu, baseline)
    for setting in settings:
        entry = summary[setting.name]
        entry["speedup_over_" + baseline] = 1.0 / entry["ratio_to_" + baseline]
        entry["cpu_time_speedup_over_" + baseline] = 1.0 / cpu_summary[setting.name]["ratio_to_" + baseline]
        entry["first_call_s"] = first_call_s[setting.name]
        entry["first_call_cpu_s"] = first_call_cpu_s[setting.name]
        if setting.compile:
            entry["compile_s"] = first_call_s[setting.name] - entry["median_s"]
            entry["compile_cpu_s"] = first_call_cpu_s[setting.name] - cpu_summary[setting.name]["median_s"]
        entry["max_abs_difference_to_" + baseline] = {
            key: float((value - outputs[baseline][key]).abs().max()) for key, value in outputs[setting.name].items()}
    return {"baseline": baseline, "load_average_during": [load_before, os.getloadavg()], "settings": summary}


def main(argv=None) -> dict:
    args = parse_args(argv)
    apply_common_args(args)
    result = {
        "benchmark": "precision, channels-last and torch.compile: step time side by side",
        "command": " ".join(["python", "benchmarks/bench_precision.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": machine_info(),
        "workload_settings": {"train": "small preset, dual, 32-pixel crops of 64-pixel scenes, batch 16, AdamW",
                              "student": "SegFormer-b0, 64 pixels, batch 16 (8 real + 8 generated), soft KD",
                              "generate": f"small preset, 64 pixels, batch {args.generation_batch_size}, "
                                          f"DPM-Solver++ {args.num_inference_steps} steps",
                              "draw": f"small preset with per-modality timesteps, 64 pixels, images drawn for "
                                      f"{args.generation_batch_size} masks, exact conditioning, DPM-Solver++ "
                                      f"{args.num_inference_steps} steps"},
        "repeats": args.repeats,
        "warmup": args.warmup,
        "results": {},
    }
    for workload in args.workloads:
        result["results"][workload] = run_workload(workload, args)
        write_result(result, args.output)  # partial results survive an interrupted run
    return result


if __name__ == "__main__":
    main()
