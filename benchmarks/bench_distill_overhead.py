#!/usr/bin/env python
"""Step-time overhead of DAKTer's KD on soft labels (`soft`) over the real-only baseline (`real`).

    python benchmarks/bench_distill_overhead.py --output benchmarks/results/distill_overhead.json

One training step = `dakter_hf.distill.distillation_training_step` (forward, loss, backward, gradient
clipping, AdamW step) of a SegFormer-b0 student at 64x64 with a batch of 16, on batches built by the library's own
stream (`build_distillation_dataloader`) and fetched beforehand (data loading is timed separately). Candidates:

* `real`: all-real batches (16 real), CE only -- the baseline;
* `hard`: mixed batches (8 real + 8 generated), CE on argmax(q);
* `soft`: mixed batches (8 real + 8 generated), CE + KD on q (tau = 1);
* `soft_tau2`: as `soft` with tau = 2;
* `soft_r0.8`: 3 real + 13 generated (the `auto` ratio with 4x generated data).

Every candidate has its own student and optimizer. Repetitions are interleaved (each repetition runs every candidate
once, alternating the order) and the reported ratio is the median of the per-repetition ratios to `real`, which
cancels the slow speed drifts of a shared machine. The same ratios are computed from this process's CPU time as a
cross-check that competing processes do not affect. Target: `soft` / `real` <= 1.10 (wall time).
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time

import datasets
import numpy as np
import torch
from accelerate import Accelerator

from dakter_hf.data import load_dataset_by_name
from dakter_hf.distill import build_distillation_dataloader, create_student, distillation_training_step
from dakter_hf.generation import encode_soft_labels, generated_features

from timing_utils import (
    add_common_args,
    apply_common_args,
    machine_info,
    summarize,
    time_side_by_side,
    write_result,
)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--student", default="b0")
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--num_classes", type=int, default=5)
    parser.add_argument("--target", type=float, default=1.10)
    add_common_args(parser)  # --repeats, --warmup, --threads, --seed, --output
    parser.set_defaults(repeats=15, warmup=2)
    return parser.parse_args(argv)


def fake_generated_dataset(path, num_rows, num_classes, size, seed=0):
    """Generated pairs in the `dakter_hf.generation` format (uint8 soft labels); their content does not affect
    timing."""
    rng = np.random.default_rng(seed)
    probs = torch.from_numpy(2 * rng.normal(size=(num_rows, num_classes, size, size)).astype(np.float32)).softmax(1)
    datasets.Dataset.from_dict(
        {"image": [rng.integers(0, 256, (size, size), dtype=np.uint8) for _ in range(num_rows)],
         "soft_label": list(encode_soft_labels(probs)),
         "label": [p.argmax(0).numpy().astype(np.uint8) for p in probs],
         "seed": list(range(num_rows))},
        features=generated_features(num_classes, size, size),
    ).save_to_disk(path)
    return datasets.load_from_disk(path)


def main(argv=None):
    args = parse_args(argv)
    apply_common_args(args)
    accelerator = Accelerator(cpu=True)
    real = load_dataset_by_name("simulated", split="train", resolution=args.resolution, num_samples=64,
                                num_classes=args.num_classes)
    tmp = tempfile.mkdtemp(prefix="bench-distill-")
    generated = fake_generated_dataset(os.path.join(tmp, "generated"), 64, args.num_classes, args.resolution)

    num_batches = 4
    candidates_spec = {  # name: (mode, generated_ratio, kd_temperature)
        "real": ("real", 0.0, 1.0),
        "hard": ("hard", 0.5, 1.0),
        "soft": ("soft", 0.5, 1.0),
        "soft_tau2": ("soft", 0.5, 2.0),
        "soft_r0.8": ("soft", 0.8, 1.0),
    }
    loading = {}
    candidates = {}
    for name, (mode, ratio, tau) in candidates_spec.items():
        loader = build_distillation_dataloader(real, generated if ratio > 0 else None, resolution=args.resolution,
                                               train_batch_size=args.batch_size, generated_ratio=ratio,
                                               max_train_steps=num_batches, seed=0)
        start = time.perf_counter()
        batches = list(loader)
        loading[name] = (time.perf_counter() - start) / num_batches
        torch.manual_seed(args.seed)
        model = create_student(args.student, num_labels=args.num_classes, image_size=args.resolution)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)
        model, optimizer, scheduler = accelerator.prepare(model, optimizer, scheduler)
        model.train()
        state = {"i": 0}

        def step(model=model, optimizer=optimizer, scheduler=scheduler, batches=batches, mode=mode, tau=tau,
                 state=state):
            batch = batches[state["i"] % len(batches)]
            state["i"] += 1
            return distillation_training_step(accelerator, model, optimizer, scheduler, batch, mode=mode,
                                              kd_temperature=tau)

        candidates[name] = step

    load_before = os.getloadavg()
    wall, cpu = time_side_by_side(candidates, repeats=args.repeats, warmup=args.warmup)
    load_after = os.getloadavg()
    summary = summarize(wall, baseline="real")
    cpu_summary = summarize(cpu, baseline="real")
    ratio = summary["soft"]["ratio_to_real"]
    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True, text=True,
                                cwd=os.path.dirname(os.path.abspath(__file__))).stdout.strip()
    except OSError:
        commit = None
    result = {
        "benchmark": "distill_overhead",
        "command": "python benchmarks/bench_distill_overhead.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "commit": commit,
        "machine": {**machine_info(), "loadavg_1_5_15_before": load_before, "loadavg_1_5_15_after": load_after},
        "config": {"student": args.student, "resolution": args.resolution, "batch_size": args.batch_size,
                   "num_classes": args.num_classes, "repeats": args.repeats, "warmup": args.warmup,
                   "candidates": {k: {"mode": m, "generated_ratio": r, "kd_temperature": t}
                                  for k, (m, r, t) in candidates_spec.items()}},
        "step_time": summary,
        "step_cpu_time": cpu_summary,
        "soft_over_real_cpu_time": cpu_summary["soft"]["ratio_to_real"],
        "data_loading_s_per_batch": loading,
        "soft_over_real": ratio,
        "target": args.target,
        "target_met": ratio <= args.target,
    }
    write_result(result, args.output)
    return result


if __name__ == "__main__":
    main()
