"""Shared helpers of the benchmarks: side-by-side interleaved timing, medians and ratios, machine info, JSON output.

This machine's speed drifts (up to 2x over minutes), so candidates are never timed one after the other: every
repetition runs each candidate once, alternating the order, and ratios are taken within a repetition (then the
median over repetitions), which cancels slow drifts.
"""

import datetime
import json
import os
import platform
import statistics
import time
from collections.abc import Callable

import torch

from dakter_hf.filesystem import write_text_atomic
from dakter_hf.precision import cpu_description


# The realistic small generator of the benchmarks: 4 levels, attention at the two lowest resolutions.
SMALL_UNET = dict(
    block_out_channels=(32, 64, 128, 128),
    layers_per_block=2,
    down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"),
    up_block_types=("AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
    attention_head_dim=8,
    norm_num_groups=32,
)


def time_side_by_side(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                      ) -> tuple[dict[str, list[float]], dict[str, list[float]]]:
    """Times (seconds) of each candidate over `repeats` repetitions, run side by side in alternating order.

    Returns the wall times and the CPU times of this process (all threads). Wall time is what users see; CPU time
    is a cross-check that other processes competing for the cores (which stretch wall time) do not affect.
    """
    names = list(candidates)
    for _ in range(warmup):
        for name in names:
            candidates[name]()
    wall = {name: [] for name in names}
    cpu = {name: [] for name in names}
    for rep in range(repeats):
        for name in names if rep % 2 == 0 else reversed(names):
            start_wall, start_cpu = time.perf_counter(), time.process_time()
            candidates[name]()
            wall[name].append(time.perf_counter() - start_wall)
            cpu[name].append(time.process_time() - start_cpu)
    return wall, cpu


def time_interleaved(candidates: dict[str, Callable[[], object]], repeats: int, warmup: int = 1
                     ) -> dict[str, list[float]]:
    """Wall times (seconds) of each candidate, run side by side as in `time_side_by_side`."""
    return time_side_by_side(candidates, repeats, warmup)[0]


def summarize(times: dict[str, list[float]], baseline: str) -> dict:
    """Medians of each candidate, and its ratio to `baseline`: the median of the per-repetition ratios."""
    summary = {}
    for name, values in times.items():
        ratios = [value / base for value, base in zip(values, times[baseline])]
        summary[name] = {
            "median_s": statistics.median(values),
            "min_s": min(values),
            "times_s": [round(v, 6) for v in values],
            "ratio_to_" + baseline: statistics.median(ratios),
            "ratio_range": [min(ratios), max(ratios)],
        }
    return summary


def machine_info() -> dict:
    """Date, platform, CPU model, its vector instructions (whether bf16 autocast is native), CPU count, torch threads,
    load average and library versions, stored with every result: CPUs of one family differ tenfold in bf16 speed
    with their instructions (BENCHMARKS.md, "bf16 on a CPU without bf16 instructions")."""
    import diffusers

    return {
        "date": datetime.date.today().isoformat(),
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        **cpu_description(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "load_average_1_5_15min": list(os.getloadavg()),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": diffusers.__version__,
    }


def write_result(result: dict, output: str | None) -> None:
    """Print the result as JSON and write it to `output` if given."""
    text = json.dumps(result, indent=2)
    print(text)
    if output:  # through a temporary file: an interrupted write never leaves a truncated result
        write_text_atomic(output, text + "\n")


def add_common_args(parser) -> None:
    """Add the options every micro-benchmark shares: repeats, warmup, threads, seed and output file."""
    parser.add_argument("--repeats", type=int, default=5, help="interleaved repetitions (medians are reported)")
    parser.add_argument("--warmup", type=int, default=1, help="untimed runs of each candidate first")
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's default)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--output", default=None, help="also write the JSON result to this file")


def apply_common_args(args) -> None:
    """Apply `--threads` and `--seed` from `add_common_args`."""
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
