#!/usr/bin/env python
"""The whole DAKTer loop on built-in simulated SAR scenes, in a few minutes on a CPU (`make demo`).

1. Train a small joint image + soft-label diffusion on a scarce set of simulated scenes.
2. Generate k x as many synthetic pairs with their soft labels.
3. Distil three students on the same budget: `real` (real pairs only), `hard` (+ generated pairs, argmax labels)
   and `soft` (+ generated pairs, KD on the soft labels: DAKTer).
4. Score them on held-out simulated scenes; print a table; write figures and JSON under `--output_dir`.

The simulated scenes are a stand-in for real SAR data (see `dakter_hf.data.simulate_sar_scenes`); the demo shows the
mechanics end to end, and its numbers say nothing about real oil-spill data (see BENCHMARKS.md for SOS). Rerunning
the command resumes: finished stages are skipped, interrupted ones continue from their checkpoints.
"""

import argparse
import functools
import sys
import time
from pathlib import Path

from dakter_hf.experiments import (
    LABELS,
    METRICS,
    MODES,
    StageError,
    StageRunner,
    distill_student,
    format_summary,
    generate_pairs,
    seed_count_note,
    summarize,
    train_generator,
    write_json,
)
from dakter_hf.visualization import save_bar_chart, save_learning_curves


def parse_args(argv=None):
    """The demo's options (all have defaults: `make demo` passes none)."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--output_dir", type=Path, default=Path("outputs/demo"))
    parser.add_argument("--resolution", type=int, default=32)
    parser.add_argument("--num_train_scenes", type=int, default=64, help="the scarce real training set")
    parser.add_argument("--generated_multiple", type=int, default=4, help="k: generated pairs = k x real pairs")
    parser.add_argument("--model_size", default="small", help="generator preset (dakter_hf.JOINT_UNET_PRESETS)")
    parser.add_argument("--generator_steps", type=int, default=250)
    parser.add_argument("--generator_batch_size", type=int, default=16)
    parser.add_argument("--student", default="b0")
    parser.add_argument("--student_steps", type=int, default=300)
    parser.add_argument("--student_batch_size", type=int, default=16)
    parser.add_argument("--num_inference_steps", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--num_threads", type=int, default=None, help="torch threads per stage (default: torch's)")
    parser.add_argument("--jobs", type=int, default=1,
                        help="the three students run side by side and generation as N processes, each with "
                             "max(1, num_threads // N) threads")
    return parser.parse_args(argv)


def main(argv=None):
    """Run the whole loop on simulated scenes and write results, figures and artefacts under `--output_dir`."""
    args = parse_args(argv)
    out = args.output_dir
    out.mkdir(parents=True, exist_ok=True)
    runner = StageRunner(out, num_threads=args.num_threads, jobs=args.jobs)
    start = time.perf_counter()
    data_args = ["--dataset", "simulated", "--simulated_num_classes", "2", "--num_train_samples",
                 args.num_train_scenes, "--data_seed", args.seed]

    generator = train_generator(
        runner, out / "generator", data_args, resolution=args.resolution, model_size=args.model_size,
        label_scale="auto",
        train_batch_size=args.generator_batch_size, max_train_steps=args.generator_steps, learning_rate="1e-3",
        lr_warmup_steps=50, use_ema=True, checkpointing_steps=100, checkpoints_total_limit=1,
        validation_steps=args.generator_steps, num_validation_samples=8, seed=args.seed)
    generated = generate_pairs(
        runner, generator, out / "generated", args.generated_multiple * args.num_train_scenes,
        scheduler="dpmsolver", num_inference_steps=args.num_inference_steps, batch_size=32, seed=args.seed + 1000)

    students = [functools.partial(
        distill_student, runner, out / "students" / mode, data_args, mode, generated, student=args.student,
        resolution=args.resolution, train_batch_size=args.student_batch_size,
        max_train_steps=args.student_steps, eval_steps=max(args.student_steps // 5, 1),
        checkpointing_steps=args.student_steps, checkpoints_total_limit=1, seed=args.seed) for mode in MODES]
    reports = {mode: [report] for mode, report in zip(MODES, runner.run_concurrently(students))}

    summary = summarize(reports, METRICS)
    table = format_summary(summary, METRICS, LABELS)
    report = {"arguments": {k: str(v) for k, v in vars(args).items()}, "summary": summary,
              "stage_seconds": runner.durations, "total_seconds": time.perf_counter() - start}
    write_json(out / "results.json", report)
    caption = f"Students scored on held-out simulated scenes (final step, fixed budget, {seed_count_note(summary)})"
    (out / "results.md").write_text(f"{caption}:\n\n{table}\n")
    write_figures(out, summary, reports)
    print(f"\n{caption}:\n\n{table}")
    print(f"\nEverything is in {out}/: results.json, results.md, results.png, learning_curves.png, "
          f"generated/preview.png, generator/validation/ ({report['total_seconds']:.0f} s this run)")


def write_figures(out: Path, summary, reports):
    """Write the bar chart of the students' scores and their validation-mIoU learning curves under `out`."""
    values = {f"{mode} {LABELS[m]}": 100 * summary[mode][m]["mean"]
              for mode in MODES for m in ("mean_iou", "iou_oil_spill") if m in summary[mode]}
    save_bar_chart(values, out / "results.png", ylabel="% on held-out scenes",
                   title="Students: real only vs + generated (hard) vs + generated (soft, DAKTer)")
    history = {f"val mIoU/{mode}": [(e["step"], e["mean_iou"]) for e in reports[mode][0]["evaluations"]]
               for mode in MODES}
    save_learning_curves(history, out / "learning_curves.png", title="Validation mIoU during distillation")


if __name__ == "__main__":
    try:
        main()
    except StageError as err:
        sys.exit(f"error: {err}")
