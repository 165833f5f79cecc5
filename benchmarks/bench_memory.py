#!/usr/bin/env python
"""Peak memory and step time of a 256-pixel generator training step, with and without gradient checkpointing.

Every configuration runs in a fresh subprocess, so its peak is its own: the script re-runs itself with `--child`,
which builds the generator (`benchmarks/workloads.py`, `--model_size`, trained on whole `--resolution`-pixel
scenes, batches of `--batch_size`), resets the peak resident set size (Linux `clear_refs`), runs `--steps` training
steps and reports the peak RSS, the RSS before the steps (model, optimizer, libraries) and their difference (what the
step itself holds: activations, gradients, optimizer state); on a GPU it reports `torch.cuda.max_memory_allocated`
instead. Subprocesses alternate (A B B A ...) so that the step-time ratio is taken between neighbouring runs.

    python benchmarks/bench_memory.py --threads 1 --output benchmarks/results/memory.json
    python benchmarks/bench_memory.py --model_size base --settings fp32 fp32+checkpointing bf16+checkpointing
"""

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

from timing_utils import machine_info, write_result
from workloads import parse_setting


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--settings", nargs="+", default=["fp32", "fp32+checkpointing"],
                        help="the first is the baseline (see benchmarks/workloads.py for the syntax)")
    parser.add_argument("--model_size", default="small")
    parser.add_argument("--resolution", type=int, default=256)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--steps", type=int, default=1, help="training steps per subprocess (all timed)")
    parser.add_argument("--repeats", type=int, default=2, help="rounds of subprocesses (alternating order)")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--malloc_mmap_threshold", type=int, default=None,
                        help="bytes; sets glibc's MALLOC_MMAP_THRESHOLD_ in the subprocesses, so that freed tensors "
                             "above it go back to the system at once and the peak RSS follows the live memory "
                             "(by default glibc keeps freed blocks for reuse, which inflates the peak)")
    parser.add_argument("--output", default=None)
    parser.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    for setting in args.settings:
        parse_setting(setting)  # fails early on a bad setting
    return args


def _status_kb(field: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise RuntimeError(f"/proc/self/status has no {field}")


def run_child(args) -> dict:
    """One configuration in this (fresh) process: memory and time of `args.steps` training steps."""
    import torch

    from workloads import generator_step

    torch.set_num_threads(args.threads)
    step, model = generator_step(parse_setting(args.child), model_size=args.model_size, resolution=args.resolution,
                                 crop_size=None, batch_size=args.batch_size, seed=args.seed)
    cuda = torch.cuda.is_available()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before = torch.cuda.memory_allocated()
    else:
        with open("/proc/self/clear_refs", "w") as f:
            f.write("5")  # reset the peak RSS (VmHWM) to the current RSS
        before = _status_kb("VmRSS") * 1024
    times, cpu_times = [], []
    for _ in range(args.steps):
        start, start_cpu = time.perf_counter(), time.process_time()
        step()
        if cuda:
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
        cpu_times.append(time.process_time() - start_cpu)
    peak = torch.cuda.max_memory_allocated() if cuda else _status_kb("VmHWM") * 1024
    return {"setting": args.child, "memory": "cuda max_memory_allocated" if cuda else "peak RSS (VmHWM)",
            "peak_mb": peak / 2**20, "before_steps_mb": before / 2**20,
            "step_peak_increase_mb": (peak - before) / 2**20,
            "num_parameters": sum(p.numel() for p in model.parameters()), "step_times_s": times,
            "step_cpu_times_s": cpu_times}


def summarize_runs(runs: dict, args, argv, load) -> dict:
    """Peaks, their ratios and the paired step-time ratios (wall and CPU time) of the runs so far."""
    baseline = args.settings[0]
    results = {}
    for setting, values in runs.items():
        if not values or len(runs[baseline]) < len(values):
            continue
        step_time = [statistics.mean(v["step_times_s"]) for v in values]
        base_time = [statistics.mean(v["step_times_s"]) for v in runs[baseline]]
        time_ratios = [t / b for t, b in zip(step_time, base_time)]
        cpu_ratios = [statistics.mean(v["step_cpu_times_s"]) / statistics.mean(b["step_cpu_times_s"])
                      for v, b in zip(values, runs[baseline])]
        results[setting] = {
            "peak_mb": max(v["peak_mb"] for v in values),
            "before_steps_mb": statistics.median(v["before_steps_mb"] for v in values),
            "step_peak_increase_mb": max(v["step_peak_increase_mb"] for v in values),
            "peak_ratio_to_" + baseline: max(v["peak_mb"] for v in values) / max(v["peak_mb"] for v in runs[baseline]),
            "step_peak_increase_ratio_to_" + baseline: (max(v["step_peak_increase_mb"] for v in values)
                                                        / max(v["step_peak_increase_mb"] for v in runs[baseline])),
            "median_step_s": statistics.median(step_time),
            "step_time_ratio_to_" + baseline: statistics.median(time_ratios),
            "step_time_ratio_range": [min(time_ratios), max(time_ratios)],
            "step_cpu_time_ratio_to_" + baseline: statistics.median(cpu_ratios),
            "runs": values,
        }
    result = {
        "benchmark": "peak memory of a generator training step, with and without gradient checkpointing",
        "command": " ".join(["python", "benchmarks/bench_memory.py", *(sys.argv[1:] if argv is None else argv)]),
        "machine": {**machine_info(), "load_average_per_round": load},
        "malloc_mmap_threshold": args.malloc_mmap_threshold,
        "workload": f"{args.model_size} preset, dual, {args.resolution}x{args.resolution}, batch {args.batch_size}, "
                    f"AdamW, {args.steps} step(s) per fresh subprocess, {args.threads} thread(s)",
        "baseline": baseline,
        "results": results,
    }
    return result


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.child:
        print(json.dumps(run_child(args)))
        return {}
    base_command = [sys.executable, os.path.abspath(__file__), "--model_size", args.model_size, "--resolution",
                    str(args.resolution), "--batch_size", str(args.batch_size), "--steps", str(args.steps),
                    "--threads", str(args.threads), "--seed", str(args.seed)]
    env = dict(os.environ)
    if args.malloc_mmap_threshold is not None:
        env["MALLOC_MMAP_THRESHOLD_"] = str(args.malloc_mmap_threshold)
    runs = {setting: [] for setting in args.settings}
    load = [os.getloadavg()]
    for rep in range(args.repeats):
        for setting in args.settings if rep % 2 == 0 else reversed(args.settings):
            out = subprocess.run(base_command + ["--child", setting], capture_output=True, text=True, check=True,
                                 env=env)
            runs[setting].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"{setting}: {runs[setting][-1]}", file=sys.stderr)
        load.append(os.getloadavg())
        write_result(summarize_runs(runs, args, argv, load), args.output)  # partial results survive
    return summarize_runs(runs, args, argv, load)


if __name__ == "__main__":
    main()
