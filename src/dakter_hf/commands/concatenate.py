"""Concatenate generated datasets into one, e.g. joint samples and images drawn for real masks, for one student:

    dakter concatenate --generated_dataset outputs/generated outputs/drawn --num_samples 300 300 \\
        --output_dir outputs/mixed

The first `--num_samples` rows of each (all by default) in order, every column kept (a column one part lacks is empty
in the other's rows), plus `generated_set` naming each row's part; distil from it with
`examples/distill.py --generated_dataset outputs/mixed`.
"""

import argparse
import logging

from ..generation import concatenate_generated_datasets
from .errors import DEBUG_HELP, command_line_errors


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the concatenation command."""
    parser = argparse.ArgumentParser(description="Concatenate generated datasets into one (a card names the parts).")
    parser.add_argument("--generated_dataset", nargs="+", required=True,
                        help="Two or more generated datasets (`save_to_disk` directories), in order.")
    parser.add_argument("--num_samples", type=int, nargs="+", default=None,
                        help="Per dataset, how many of its first rows to take (default: all of every one).")
    parser.add_argument("--output_dir", required=True, help="Where the concatenated dataset goes.")
    parser.add_argument("--overwrite", action="store_true", help="Replace an existing --output_dir written by "
                                                                 "dakter_hf.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if len(args.generated_dataset) < 2:
        parser.error(f"--generated_dataset needs two or more datasets, got {args.generated_dataset}.")
    if args.num_samples is not None:
        if len(args.num_samples) != len(args.generated_dataset):
            parser.error(f"--num_samples needs one value per --generated_dataset ({len(args.generated_dataset)}), "
                         f"got {args.num_samples}.")
        if min(args.num_samples) < 1:
            parser.error(f"--num_samples must be positive integers, got {args.num_samples}.")
    return args


@command_line_errors
def main(argv: list[str] | None = None) -> int:
    """Concatenate `--generated_dataset` into `--output_dir`; returns 0 (bad input ends it with one line, code 2)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    dataset = concatenate_generated_datasets(args.generated_dataset, args.output_dir, args.num_samples,
                                             overwrite=args.overwrite)
    print(f"Saved {len(dataset)} pairs to {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
