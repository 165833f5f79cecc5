"""Label a generated dataset's images again: replace their soft labels, or score each pair against a labeller.

    # posterior soft labels: the generator's own segmentation pipeline, 4 draws of p(label | image) averaged
    dakter relabel --generated_dataset outputs/generated --labeller outputs/joint --num_samples 4 \\
        --scheduler dpmsolver --num_inference_steps 20 --output_dir outputs/generated-posterior4

    # the control arm: the same images labelled by a student trained on the real pairs
    dakter relabel --generated_dataset outputs/generated --labeller outputs/student-real/final \\
        --output_dir outputs/generated-relabelled

    # pair quality: keep the pairs, add `pair_quality` (agreement of each pair's soft label with the labeller's)
    dakter relabel --generated_dataset outputs/generated --labeller outputs/joint --score_only \\
        --output_dir outputs/generated-scored

`--labeller` is a saved DAKTer pipeline directory (`model_index.json`: its `DAKTerSegmentationPipeline` labels, with
exact conditioning for per-modality checkpoints and replacement otherwise) or a saved student directory
(`config.json` + `preprocessor_config.json`); anything else is refused. `--student DIR` is the same as `--labeller
DIR` for a student. The copy keeps every row's image, seed and other columns; without `--score_only` it replaces
`soft_label` (in the stored type) and `label` (its argmax). Interrupted runs resume when rerun with the same
arguments (work in `<output_dir>.partial/`); the copy's card records the labeller and its settings. Distil from the
copy with `examples/distill.py --generated_dataset` (and, for a scored copy, `--drop_worst_pairs` /
`--pair_quality_weighting`).
"""

import argparse
import logging
import os

from ..distill.data import load_generated_dataset
from ..distill.labellers import labeller_kind, load_labeller
from ..distill.relabel import relabel_to_disk
from ..filesystem import OutputDirLock
from ..pipelines import SCHEDULERS
from .errors import DEBUG_HELP, command_line_errors


#: Options that only a generator labeller takes (`None`: not given).
GENERATOR_OPTIONS = ("num_samples", "num_inference_steps", "scheduler", "conditioning", "jump_length",
                     "jump_n_sample", "seed")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the relabelling command."""
    parser = argparse.ArgumentParser(description="Relabel generated pairs with a labeller's soft labels, or score "
                                                 "each pair against them (--score_only).",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--generated_dataset", required=True, help="A generated dataset (`save_to_disk` directory).")
    who = parser.add_mutually_exclusive_group(required=True)
    who.add_argument("--labeller", help="A saved DAKTer pipeline directory (its segmentation pipeline labels) or a "
                                        "saved student directory.")
    who.add_argument("--student", help="A saved student directory (same as --labeller for a student).")
    parser.add_argument("--output_dir", required=True, help="Where the copy goes (must not exist).")
    parser.add_argument("--score_only", action="store_true",
                        help="Keep the pairs; add `pair_quality` (1 - mean total-variation distance between the "
                             "pair's soft label and the labeller's) and `pair_quality_miou` (mIoU of their argmaxes).")
    parser.add_argument("--batch_size", type=int, default=32, help="Images per labeller call (and per shard).")
    parser.add_argument("--temperature", type=float, default=None,
                        help="Softmax temperature of the labeller's soft labels (default: 1 for a student, the "
                             "pipeline's own default for a generator).")
    gen = parser.add_argument_group("generator labeller (a DAKTer pipeline directory)")
    gen.add_argument("--num_samples", type=int, default=None,
                     help="Segmentation draws averaged per image: posterior soft labels (default 1).")
    gen.add_argument("--num_inference_steps", type=int, default=None, help="Scheduler steps per draw (default 20).")
    gen.add_argument("--scheduler", choices=sorted(SCHEDULERS), default=None,
                     help="Sampler of the draws (default: the pipeline's saved scheduler).")
    gen.add_argument("--conditioning", choices=["auto", "exact", "replacement"], default=None,
                     help="auto (default): exact for per-modality checkpoints, replacement otherwise.")
    gen.add_argument("--jump_length", type=int, default=None, help="RePaint resampling: steps between jumps (10).")
    gen.add_argument("--jump_n_sample", type=int, default=None, help="RePaint resampling: runs per stretch (1).")
    gen.add_argument("--seed", type=int, default=None, help="Row i is segmented with seed SEED + i (default 0).")
    parser.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)
    for name in ("batch_size", "num_samples", "num_inference_steps", "jump_length", "jump_n_sample"):
        value = getattr(args, name)
        if value is not None and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}.")
    if args.temperature is not None and not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}.")
    if os.path.exists(args.output_dir):
        parser.error(f"--output_dir {args.output_dir} already exists; choose another directory.")
    flag = "--student" if args.student is not None else "--labeller"
    args.labeller = args.student if args.student is not None else args.labeller
    try:
        args.labeller_kind = labeller_kind(args.labeller)
    except ValueError as error:
        parser.error(f"{flag}: {error}")
    if args.student is not None and args.labeller_kind != "student":
        parser.error(f"--student {args.student} is a DAKTer pipeline directory, not a student; pass it as --labeller.")
    given = [f"--{name}" for name in GENERATOR_OPTIONS if getattr(args, name) is not None]
    if args.labeller_kind == "student" and given:
        parser.error(f"{flag} {args.labeller} is a student: {', '.join(given)} apply to a generator labeller only.")
    return args


@command_line_errors
def main(argv: list[str] | None = None) -> int:
    """Relabel (or score) `--generated_dataset` with `--labeller` into `--output_dir`. Returns 0 (errors exit with a
    one-line message)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    generated = load_generated_dataset(args.generated_dataset)
    options = {name: getattr(args, name) for name in GENERATOR_OPTIONS if name != "scheduler"}
    if args.labeller_kind == "generator":
        options = {"num_samples": 1, "num_inference_steps": 20, "seed": 0, **{k: v for k, v in options.items()
                                                                              if v is not None}}
    labeller = load_labeller(args.labeller, temperature=args.temperature, scheduler=args.scheduler, **options)
    with OutputDirLock.beside(args.output_dir):
        output = relabel_to_disk(generated, labeller, args.output_dir, score_only=args.score_only,
                                 batch_size=args.batch_size, source=args.generated_dataset)
    verb = "Scored" if args.score_only else "Relabelled"
    resumed = f" ({output.num_resumed} resumed)" if output.num_resumed else ""
    print(f"{verb} {len(output.dataset)} pairs{resumed} with the {labeller.kind} {args.labeller} into "
          f"{args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
