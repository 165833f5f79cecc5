"""`dakter-calibrate`: fit a generator's soft-label temperature on real labelled pairs (by NLL) and, with `--save`,
store it as the pipeline's default.

    dakter-calibrate --pipeline outputs/joint --dataset sos --data_dir ../shared/data/sos --sensor sentinel \\
        --num_train_samples 150 --save --output_json outputs/joint-calibration.json

The generator segments every image of `--split` once (`DAKTerSegmentationPipeline`, image i with seed --seed + i, at
temperature 1); T minimises the NLL of `softmax(log p / T)` against the masks. The default split is `train_heldout`
with `--num_train_samples` (the training pairs outside the generator's subset), else `validation`: a labelled split
other than the test split. `--save` writes T into `<pipeline>/model_index.json` (replaced in one rename) and the card;
`DAKTerPipeline`, `dakter-generate` and the conditional pipelines then use it whenever no temperature is given.
"""

import argparse
import json
import logging
import os
import sys

from ..data import HELDOUT_SPLIT, add_data_args, check_data_args, dataset_from_args
from ..errors import DAKTerError
from ..filesystem import write_text_atomic
from ..generation import fit_soft_label_temperature, save_soft_label_temperature
from ..pipelines import SCHEDULERS, set_scheduler
from .errors import DEBUG_HELP, command_line_errors
from .generate import load_pipeline
from .options import positive_int


logger = logging.getLogger("dakter_hf.calibrate")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `dakter-calibrate`."""
    parser = argparse.ArgumentParser(
        prog="dakter-calibrate",
        description="Fit the soft-label temperature of a DAKTer generator on real labelled pairs by NLL (the "
                    "generator used as a segmenter) and optionally save it as the pipeline's default.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    parser.add_argument("--pipeline", required=True,
                        help="Pipeline directory (or Hub repository id without --save).")
    add_data_args(parser)
    parser.add_argument("--split", default=None,
                        help=f"Labelled split to fit on; default: '{HELDOUT_SPLIT}' with --num_train_samples (the "
                             "training pairs outside the seeded subset), else 'validation'. Never fit on the split "
                             "a benchmark scores.")
    parser.add_argument("--num_inference_steps", type=positive_int, default=20,
                        help="Scheduler steps of every segmentation.")
    parser.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None,
                        help="Sampler; default: the pipeline's own scheduler.")
    parser.add_argument("--conditioning", choices=("auto", "replacement", "exact"), default="auto",
                        help="exact: models trained with per-modality timesteps; replacement: any model; auto: exact "
                             "when the model allows it.")
    parser.add_argument("--batch_size", type=positive_int, default=8, help="Images per pipeline call.")
    parser.add_argument("--seed", type=int, default=0, help="Image i is segmented with seed + i.")
    parser.add_argument("--save", action="store_true",
                        help="Write the fitted temperature into <pipeline>/model_index.json (atomically) and its "
                             "card: the pipeline's default from then on.")
    parser.add_argument("--output_json", default=None, help="Write the fit (T, NLL and ECE before / after) there.")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    if args.split is None:
        args.split = HELDOUT_SPLIT if args.num_train_samples is not None else "validation"
    check_data_args(parser, args, split=args.split)
    if args.save and not os.path.isfile(os.path.join(args.pipeline, "model_index.json")):
        parser.error(f"--save writes into a local pipeline directory, but --pipeline {args.pipeline!r} is not one "
                     "(no model_index.json there).")
    if args.output_json is not None and os.path.isdir(args.output_json):
        parser.error(f"--output_json {args.output_json!r} is a directory; expected the path of a JSON file to write.")
    return args


def split_name(args: argparse.Namespace) -> str:
    """How the card and the output name the split: 'sos sentinel train_heldout (150-pair subset, seed 0)'."""
    subset = (f" (outside the {args.num_train_samples}-pair subset, seed {args.data_seed})"
              if args.split == HELDOUT_SPLIT else "")
    return f"{' '.join(p for p in (args.dataset, args.sensor, args.split) if p)}{subset}"


@command_line_errors
def main(argv: list[str] | None = None) -> int:
    """Run `dakter-calibrate`; returns 0 (a bad input ends it with one line on stderr and exit code 2)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(levelname)s %(name)s: %(message)s", level=logging.INFO)
    if args.split == "test":
        logger.warning("Fitting on the test split: a benchmark scored on it would no longer be a held-out measure.")
    pipe = load_pipeline(args.pipeline)
    if args.scheduler is not None:
        set_scheduler(pipe, args.scheduler)
    size = pipe.unet.config.sample_size
    dataset = dataset_from_args(args, split=args.split, resolution=size if isinstance(size, int) else tuple(size))
    if len(dataset) == 0:
        raise DAKTerError(f"--split {args.split} of --dataset {args.dataset} is empty: nothing to fit on.")
    try:
        fit = fit_soft_label_temperature(pipe, dataset, num_inference_steps=args.num_inference_steps,
                                         batch_size=args.batch_size, seed=args.seed, conditioning=args.conditioning)
    except ValueError as error:
        raise DAKTerError(f"{error}") from error
    split = split_name(args)
    print(f"Soft-label temperature fitted on {split} ({fit.num_images} images, {fit.num_pixels} pixels): "
          f"T = {fit.temperature:.4f}{' (at the end of the search interval)' if fit.at_bound else ''}\n"
          f"| soft labels | NLL | ECE (%) |\n|---|---|---|\n"
          f"| T = 1 | {fit.nll_before:.4f} | {100 * fit.ece_before:.2f} |\n"
          f"| T = {fit.temperature:.4g} | {fit.nll_after:.4f} | {100 * fit.ece_after:.2f} |\n"
          f"argmax ECE (one-hot): {100 * fit.argmax_ece:.2f}%")
    report = {**fit.to_dict(), "pipeline": args.pipeline, "split": split, "saved": bool(args.save)}
    if args.save:
        try:
            path = save_soft_label_temperature(args.pipeline, fit.temperature, fit, split=split)
        except ValueError as error:
            raise DAKTerError(f"--pipeline {args.pipeline}: {error}") from error
        print(f"Saved T = {fit.temperature:.4f} as the default soft-label temperature in {path}")
    if args.output_json is not None:
        write_text_atomic(args.output_json, json.dumps(report, indent=2) + "\n")
        print(f"Wrote {args.output_json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
