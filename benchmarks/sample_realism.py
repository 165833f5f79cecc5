#!/usr/bin/env python
"""How real generated images look, per generated dataset: the Fréchet distance between its images and a real split's
in the encoder features of a student trained on real pairs (an FID that needs no download and knows SAR), beside the
distance between two halves of the real split (`dakter_hf.generation.measure_sample_realism`).

    python benchmarks/sample_realism.py --student outputs/student-real/final \\
        --generated_dataset outputs/generated-g0 outputs/generated-g1 \\
        --dataset sos --data_dir ../shared/data/sos --sensor palsar --num_train_samples 150 --split train_heldout \\
        --output_json outputs/realism.json

With several datasets, each one's distance minus the first's is also given split by split (the same real halves):
far less noisy than either distance. Use a split that neither the generator nor the student trained on
(`train_heldout` above: the training pairs outside the 150-pair subset), at the generated images' size
(`--resolution`, default 64). Distances from one `--student` compare; across students they do not.
"""

import argparse
import json
import os
import statistics
import sys
import time

import torch
from datasets import load_from_disk

from dakter_hf.data import add_data_args, check_data_args, dataset_from_args
from dakter_hf.distill import load_labeller
from dakter_hf.distill.labellers import require_student
from dakter_hf.errors import UsageError
from dakter_hf.filesystem import write_text_atomic
from dakter_hf.generation import measure_sample_realism


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--student", required=True,
                        help="a real-data student directory (save_pretrained + preprocessor_config.json)")
    parser.add_argument("--generated_dataset", nargs="+", required=True, help="generated datasets (save_to_disk)")
    add_data_args(parser)
    parser.add_argument("--split", default="test", help="the real split compared with (default test)")
    parser.add_argument("--resolution", type=int, default=64, help="size the real images are loaded at")
    parser.add_argument("--num_splits", type=int, default=5, help="random halvings of the real split averaged")
    parser.add_argument("--seed", type=int, default=0, help="split s draws its halves and subset from seed + s")
    parser.add_argument("--batch_size", type=int, default=64)
    parser.add_argument("--output_json", default=None)
    args = parser.parse_args(argv)
    if args.num_splits < 1:
        parser.error(f"--num_splits must be a positive integer, got {args.num_splits}.")
    check_data_args(parser, args, args.split)
    for path in args.generated_dataset:
        if not os.path.isdir(path):
            parser.error(f"--generated_dataset {path!r} is not a directory.")
    try:
        require_student(args.student)
    except UsageError as err:
        parser.error(f"--student: {err}")
    return args


def paired_differences(rows):
    """{dataset: (mean, std)} of each dataset's distance minus the first dataset's, split by split: both were measured
    against the same real halves, so this difference is far less noisy than either distance."""
    paths = list(rows)
    differences = {}
    for path in paths[1:]:
        values = [b["frechet_distance"] - a["frechet_distance"]
                  for a, b in zip(rows[paths[0]]["per_split"], rows[path]["per_split"])]
        differences[path] = (statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0)
    return differences


def main(argv=None):
    args = parse_args(argv)
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    start = time.perf_counter()
    student = load_labeller(args.student)  # a saved student: its model and image processor
    real = list(dataset_from_args(args, split=args.split)["image"])
    split_name = " ".join(str(part) for part in (args.dataset, args.sensor, args.split) if part)
    rows = {}
    for path in args.generated_dataset:
        generated = load_from_disk(path)
        if "image" not in generated.column_names:
            sys.exit(f"error: --generated_dataset {path!r} has no 'image' column (columns: {generated.column_names}).")
        try:
            rows[path] = measure_sample_realism(student.model, student.image_processor, real, list(generated["image"]),
                                                num_splits=args.num_splits, seed=args.seed, batch_size=args.batch_size)
        except ValueError as err:  # too few images for the split: a message, not a traceback
            sys.exit(f"error: --generated_dataset {path!r} against {split_name}: {err}")
        r = rows[path]
        print(f"{path}: Fréchet distance {r['frechet_distance']:.2f} ± {r['frechet_distance_std']:.2f} vs real-to-real "
              f"{r['real_to_real']:.2f} ± {r['real_to_real_std']:.2f} (ratio {r['ratio']:.2f}; {r['num_images']} "
              f"images a set, {r['num_splits']} splits, {split_name})", flush=True)
    paired = paired_differences(rows)
    for path, (mean, std) in paired.items():
        print(f"{path} - {args.generated_dataset[0]}: {mean:+.2f} ± {std:.2f} (same real halves, split by split)")
    report = {"split": split_name, "num_real_images": len(real), "student": args.student, "datasets": rows,
              "paired_differences_to_first": {path: {"mean": m, "std": s} for path, (m, s) in paired.items()},
              "seconds": time.perf_counter() - start,
              "command": " ".join([os.path.basename(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])])}
    if args.output_json:
        write_text_atomic(args.output_json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
