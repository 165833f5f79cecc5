#!/usr/bin/env python
"""Where a step's time goes, by operator family, under each precision setting; and the speed-up that bounds.

`bench_precision.py` says how much faster a setting is; this says why, and how far it could go. Each workload of
`benchmarks/workloads.py` (the SOS benchmark's generator training step by default) runs `--steps` times under
`torch.profiler` per setting; the operators' self CPU times are summed into families (convolution, matmul and
attention, normalisation, activation, element-wise and casts, optimizer, other). For every family the result gives
its time per step, its share, and its speed-up over the first setting. Then the Amdahl bound: the speed-up the whole
step would reach if only the convolutions and matmuls ran at their measured speed-up and everything else at 1.0x,
and the share the compute families would need for a target speed-up (`--target`).

    python benchmarks/bench_step_profile.py --threads 1 --settings fp32 bf16 --output benchmarks/results/profile.json

Profiler times are CPU self times; under load they stretch with the machine, so compare settings within one run.
"""

import argparse
import sys

from torch.profiler import ProfilerActivity, profile

from timing_utils import add_common_args, apply_common_args, machine_info, write_result
from workloads import generator_step, parse_setting, student_step


WORKLOADS = {"train": generator_step, "student": student_step}
# Operator families, matched in order against the aten op name (first hit wins).
FAMILIES = [
    ("convolution", ("convolution", "conv2d", "conv_transpose")),
    ("matmul_attention", ("attention", "::mm", "::bmm", "addmm", "matmul", "linear")),
    ("normalization", ("group_norm", "layer_norm", "batch_norm")),
    ("activation", ("silu", "gelu", "relu", "sigmoid", "softmax")),
    ("optimizer", ("Optimizer.step", "_foreach", "adamw", "lerp", "sqrt", "addcdiv", "addcmul")),
    ("elementwise_and_casts", ("copy_", "_to_copy", "add", "mul", "div", "sub", "cat", "fill_", "clone", "where")),
]
COMPUTE = ("convolution", "matmul_attention")


def family(op_name: str) -> str:
    for name, keys in FAMILIES:
        if any(key in op_name for key in keys):
            return name
    return "other"


def profile_setting(workload: str, setting, steps: int, warmup: int, seed: int) -> dict:
    """Seconds of self CPU time per step, by family, of `steps` profiled steps after `warmup` untimed ones."""
    call, _ = WORKLOADS[workload](setting, seed=seed)
    for _ in range(warmup):
        call()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            call()
    per_family: dict[str, float] = {}
    for event in prof.key_averages():
        if event.key.startswith("aten::") or event.key.startswith("Optimizer."):
            name = family(event.key)
            per_family[name] = per_family.get(name, 0.0) + event.self_cpu_time_total / 1e6 / steps
    return {"total_s": sum(per_family.values()), "families_s": dict(sorted(per_family.items()))}


def amdahl(baseline: dict, candidate: dict, target: float) -> dict:
    """The step speed-up if only the compute families ran at their measured speed-up, and the compute share of the
    baseline step that `target` would need at that compute speed-up."""
    compute_base = sum(baseline["families_s"].get(name, 0.0) for name in COMPUTE)
    compute_cand = sum(candidate["families_s"].get(name, 0.0) for name in COMPUTE)
    share = compute_base / baseline["total_s"]
    compute_speedup = compute_base / compute_cand if compute_cand else float("inf")
    bound = 1.0 / ((1.0 - share) + share / compute_speedup)
    needed = (1.0 - 1.0 / target) / (1.0 - 1.0 / compute_speedup) if compute_speedup > 1 else None
    return {"compute_share_of_baseline": share, "compute_speedup": compute_speedup,
            "step_speedup_if_only_compute_speeds_up": bound, "measured_step_speedup":
            baseline["total_s"] / candidate["total_s"], f"compute_share_needed_for_{target:g}x": needed}


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--workload", choices=list(WORKLOADS), default="train")
    parser.add_argument("--settings", nargs="+", type=parse_setting, default=None,
                        help="settings (bench_precision.py's syntax); the first is the baseline (default: fp32 bf16)")
    parser.add_argument("--steps", type=int, default=3, help="profiled steps per setting")
    parser.add_argument("--target", type=float, default=1.8, help="step speed-up the bound is compared with")
    add_common_args(parser)
    parser.set_defaults(warmup=2)
    args = parser.parse_args(argv)
    apply_common_args(args)
    settings = args.settings or [parse_setting("fp32"), parse_setting("bf16")]
    if args.steps < 1:
        parser.error(f"--steps must be a positive integer, got {args.steps}")
    profiles = {s.name: profile_setting(args.workload, s, args.steps, args.warmup, args.seed) for s in settings}
    baseline = settings[0].name
    for name, entry in profiles.items():
        entry["family_speedup_over_" + baseline] = {
            fam: profiles[baseline]["families_s"].get(fam, 0.0) / seconds
            for fam, seconds in entry["families_s"].items() if seconds > 0}
        if name != baseline:
            entry["amdahl"] = amdahl(profiles[baseline], entry, args.target)
    result = {"benchmark": "step profile by operator family",
              "command": " ".join(["python", "benchmarks/bench_step_profile.py",
                                   *(sys.argv[1:] if argv is None else argv)]),
              "machine": machine_info(), "workload": args.workload, "steps": args.steps, "baseline": baseline,
              "profiles": profiles}
    for name, entry in profiles.items():
        shares = ", ".join(f"{fam} {seconds:.3f} s ({100 * seconds / entry['total_s']:.0f}%)"
                           for fam, seconds in entry["families_s"].items())
        print(f"{name}: {entry['total_s']:.3f} s per step: {shares}")
        if "amdahl" in entry:
            a = entry["amdahl"]
            print(f"  measured {a['measured_step_speedup']:.2f}x; compute {a['compute_speedup']:.2f}x on "
                  f"{100 * a['compute_share_of_baseline']:.0f}% of the baseline step bounds the step at "
                  f"{a['step_speedup_if_only_compute_speeds_up']:.2f}x")
    write_result(result, args.output)
    return result


if __name__ == "__main__":
    main()
