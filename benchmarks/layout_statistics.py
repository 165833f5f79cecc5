#!/usr/bin/env python
"""Layouts of generated datasets beside the real masks: per mask, the share of a class (oil by default), its number
of 4-connected pieces, the share of its largest piece and the share of its pixels on an outline; quartiles of each
over the real split and over every generated dataset (the argmax of its soft labels), with the 1-Wasserstein distance
between each generated distribution and the real one. No student and no generator is run. `--reference_split` adds
another real split (e.g. `train_heldout`) as a row, so the distance between two real samples stands beside them.

    python benchmarks/layout_statistics.py --dataset sos --data_dir ../shared/data/sos --sensor palsar \\
        --num_train_samples 150 --resolution 64 --reference_split train_heldout \\
        --generated_dataset outputs/palsar/regime-150/generated-g0 outputs/palsar/regime-150/generated-g2 \\
        --output_json outputs/layouts.json --figure outputs/layouts.png

The real masks are loaded at `--resolution` (nearest-neighbour, as the generator's training data), which must be the
generated datasets' size.
"""

import argparse
import json
import os
import sys
import time

import numpy as np

from dakter_hf.data import add_data_args, check_data_args, dataset_from_args
from dakter_hf.data.errors import DataError
from dakter_hf.distill.data import load_generated_dataset
from dakter_hf.filesystem import write_text_atomic
from dakter_hf.labels import decode_soft_labels
from dakter_hf.metrics import LAYOUT_STATISTICS, compare_layouts, mask_layout_statistics
from dakter_hf.visualization import save_distribution_panels


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    add_data_args(parser)
    parser.add_argument("--split", default="train", help="real split whose masks are the reference (default train, "
                                                         "the --num_train_samples subset)")
    parser.add_argument("--resolution", type=int, required=True, help="size the real masks are loaded at (the "
                                                                       "generated datasets' size)")
    parser.add_argument("--generated_dataset", nargs="*", default=[], help="generated dataset directories")
    parser.add_argument("--reference_split", default=None,
                        help="another real split compared like a generated dataset (e.g. train_heldout, the "
                             "training pairs outside the subset): how far two real samples lie apart")
    parser.add_argument("--class_index", type=int, default=1, help="class described (default 1, oil)")
    parser.add_argument("--batch_size", type=int, default=128)
    parser.add_argument("--output_json", default=None)
    parser.add_argument("--figure", default=None,
                        help="PNG of each statistic's cumulative distribution, one line per set (real first)")
    args = parser.parse_args(argv)
    check_data_args(parser, args, args.split)
    if args.reference_split is not None:
        check_data_args(parser, args, args.reference_split)
    elif not args.generated_dataset:
        parser.error("nothing to compare with the real masks: pass --generated_dataset and/or --reference_split.")
    if args.resolution < 1:
        parser.error(f"--resolution must be a positive integer, got {args.resolution}.")
    return args


def generated_masks(dataset, batch_size: int) -> np.ndarray:
    """The argmax of every soft label of a generated dataset: `(N, H, W)` class indices."""
    rows = dataset.select_columns(["soft_label"]).with_format("numpy")
    masks = []
    for start in range(0, len(rows), batch_size):
        probs = decode_soft_labels(np.asarray(rows[start:start + batch_size]["soft_label"]), dtype=dataset.features)
        masks.append(np.asarray(probs).argmax(axis=1))
    return np.concatenate(masks)


def format_table(real_stats, comparisons_by_dataset) -> str:
    """One markdown table: a row per statistic and set (real first), quartiles, mean and distance to real."""
    lines = ["| statistic | set | 25% / 50% / 75% | mean | W1 to real |", "|---|---|---|---|---|"]
    for index, name in enumerate(LAYOUT_STATISTICS):
        first = next(iter(comparisons_by_dataset.values()))[index]
        lines.append(f"| {name} | real ({len(real_stats[name])} masks) | "
                     f"{' / '.join(f'{q:.4g}' for q in first.real_quartiles)} | {first.real_mean:.4g} | - |")
        for path, comparisons in comparisons_by_dataset.items():
            c = comparisons[index]
            lines.append(f"| {name} | {path} | {' / '.join(f'{q:.4g}' for q in c.generated_quartiles)} | "
                         f"{c.generated_mean:.4g} | {c.wasserstein:.4g} |")
    return "\n".join(lines)


def main(argv=None):
    args = parse_args(argv)
    start = time.perf_counter()
    real = np.stack([np.asarray(mask) for mask in dataset_from_args(args, split=args.split)["mask"]])
    real_stats = mask_layout_statistics(real, class_index=args.class_index)
    if not np.any(real_stats["class_fraction"] > 0):
        sys.exit(f"error: no real mask of split {args.split!r} holds class {args.class_index}.")
    stats_by_set = {f"real {args.split} ({real.shape[0]})": real_stats}
    comparisons_by_dataset = {}
    if args.reference_split is not None:
        reference = np.stack([np.asarray(mask) for mask in dataset_from_args(args, split=args.reference_split)["mask"]])
        name = f"real {args.reference_split}"
        stats_by_set[name] = mask_layout_statistics(reference, class_index=args.class_index)
        comparisons_by_dataset[name] = compare_layouts(real_stats, stats_by_set[name])
    for path in args.generated_dataset:
        try:
            masks = generated_masks(load_generated_dataset(path), args.batch_size)
        except DataError as error:
            sys.exit(f"error: {error}")
        if masks.shape[1:] != real.shape[1:]:
            sys.exit(f"error: --generated_dataset {path!r} holds {masks.shape[1]}x{masks.shape[2]} labels but the real "
                     f"masks were loaded at {real.shape[1]}x{real.shape[2]}: pass --resolution {masks.shape[1]}.")
        stats_by_set[path] = mask_layout_statistics(masks, class_index=args.class_index)
        try:
            comparisons_by_dataset[path] = compare_layouts(real_stats, stats_by_set[path])
        except ValueError as error:  # no generated mask holds the class
            sys.exit(f"error: --generated_dataset {path!r}: {error}")
    print(format_table(real_stats, comparisons_by_dataset))
    if args.figure:
        short = [os.path.basename(label.rstrip("/")) for label in stats_by_set]  # legend: directory names, if unique
        labels = short if len(set(short)) == len(short) else list(stats_by_set)
        save_distribution_panels({name: {label: stats[name] for label, stats in zip(labels, stats_by_set.values())}
                                  for name in LAYOUT_STATISTICS}, args.figure,
                                 title=f"Layouts of class {args.class_index}: real masks and generated labels")
    report = {"split": args.split, "class_index": args.class_index, "num_real_masks": int(real.shape[0]),
              "datasets": {path: [c.to_dict() for c in comparisons] for path, comparisons in
                           comparisons_by_dataset.items()},
              "seconds": time.perf_counter() - start,
              "command": " ".join([os.path.basename(sys.argv[0]), *(argv if argv is not None else sys.argv[1:])])}
    if args.output_json:
        write_text_atomic(args.output_json, json.dumps(report, indent=2) + "\n")
    return report


if __name__ == "__main__":
    main()
