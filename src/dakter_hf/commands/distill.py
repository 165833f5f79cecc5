"""`accelerate launch examples/distill.py`: train a student segmentation model (SegFormer) on real pairs and
DAKTer-generated pairs.

    accelerate launch examples/distill.py --dataset sos --data_dir ../shared/data/sos --sensor palsar \\
        --generated_dataset outputs/generated --mode soft --student b0 --resolution 64 \\
        --train_batch_size 16 --max_train_steps 2000 --output_dir outputs/student-soft

(`python -m dakter_hf.commands.distill ...` is the same command.) Modes (one code path, see `dakter_hf.distill`):
`real` (real pairs only, the baseline; no generated dataset needed), `hard` (generated pairs with argmax(q) as hard
labels), `soft` (DAKTer: KD on the soft labels q). Every mode trains `--max_train_steps` steps of
`--train_batch_size` samples per process, so the budgets are equal.

Outputs in `--output_dir`: `best/` (highest validation mIoU) and `final/` students (`save_pretrained` with `id2label`
+ `preprocessor_config.json`, loadable with `AutoModelForSemanticSegmentation` / `AutoImageProcessor`), `metrics.json`
(every evaluation, best, final, losses, `num_processes`), `learning_curves.png`, `logs/*.jsonl` and Accelerate
checkpoints `checkpoint-<step>`.

Several processes on CPU: `accelerate launch --cpu --num_processes 2` runs ONE process (its CPU multi-process mode
expects MPI); use `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/distill.py ...` (gloo backend). The
command refuses to run when the launcher started more processes than Accelerate sees.
"""

import argparse
import logging
import os

from ..data import add_data_args, check_data_args
from ..distill.sampler import DEFAULT_GENERATED_RATIO, batch_composition, parse_generated_ratio
from ..distill.students import SEGFORMER_PRESETS, segformer_config
from ..distill.trainer import train_student
from ..filesystem import OutputDirLock, is_launcher_main_process
from ..training.runs import resolve_resume_checkpoint
from .errors import DEBUG_HELP, command_line_errors
from .options import add_adamw_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the distillation script (`--help` lists them)."""
    parser = argparse.ArgumentParser(description="Train a SAR segmentation student on real + DAKTer-generated pairs.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_args(parser)
    gen = parser.add_argument_group("generated data and loss")
    gen.add_argument("--mode", choices=["real", "hard", "soft"], default="soft",
                     help="real: real pairs only (baseline); hard: generated pairs with argmax labels; "
                          "soft: DAKTer KD.")
    gen.add_argument("--generated_dataset", default=None,
                     help="Generated pairs: a `save_to_disk` directory or a Hub dataset id (split 'train'). Required "
                          "for --mode hard/soft, ignored for --mode real.")
    gen.add_argument("--num_generated_samples", type=int, default=None,
                     help="Use only the first N generated pairs (e.g. 1x / 2x / 4x the real set).")
    gen.add_argument("--generated_ratio", type=parse_generated_ratio, default=DEFAULT_GENERATED_RATIO,
                     help="Fraction of EVERY batch taken from the generated pairs: round(ratio * batch_size) generated "
                          "+ the rest real. 'auto' (default) = |generated| / (|real| + |generated|), the expected "
                          "share of a uniform draw from real U generated. Forced to 0 in --mode real.")
    gen.add_argument("--kd_temperature", type=float, default=1.0,
                     help="KD temperature tau of tau^2 * KL(q || softmax(z / tau)) (soft mode). Default 1: the "
                          "softness of q is set when generating.")
    gen.add_argument("--real_loss_weight", type=float, default=1.0, help="Per-pixel weight of the real CE.")
    gen.add_argument("--generated_loss_weight", type=float, default=1.0,
                     help="Per-pixel weight of the generated loss (KD or hard CE).")
    gen.add_argument("--drop_worst_pairs", type=float, default=0.0, metavar="FRACTION",
                     help="Drop this fraction of the generated pairs, those of lowest `pair_quality` (a column written "
                          "by `dakter relabel --score_only`), after --num_generated_samples; an 'auto' "
                          "--generated_ratio counts the pairs kept.")
    gen.add_argument("--pair_quality_weighting", action="store_true",
                     help="Weight each generated pair's loss by pair_quality / mean(pair_quality) over the pairs kept.")
    gen.add_argument("--balance_generated_classes", action="store_true",
                     help="Weight each generated pair's loss so that the generated pairs' class frequencies (the mean "
                          "of their soft labels) equal the real training masks' (the weighting closest to the current "
                          "weights in KL divergence; on top of --pair_quality_weighting).")
    model = parser.add_argument_group("student")
    model.add_argument("--student", default="b0",
                       help=f"SegFormer preset {list(SEGFORMER_PRESETS)} (random init) or a pretrained directory / Hub "
                            "id (e.g. nvidia/mit-b0; RGB kernels summed to 1 channel).")
    model.add_argument("--resolution", type=int, default=64, help="Training / inference resolution (>= 32).")
    train = parser.add_argument_group("training")
    train.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process.")
    train.add_argument("--max_train_steps", type=int, default=2000, help="Optimisation steps (the budget).")
    train.add_argument("--learning_rate", type=float, default=6e-4, help="Peak learning rate of AdamW.")
    train.add_argument("--lr_scheduler", default="linear",
                       help='"linear", "cosine", "constant", "constant_with_warmup", "polynomial", ...')
    train.add_argument("--lr_warmup_steps", type=int, default=0, help="Linear warm-up steps of the schedule.")
    add_adamw_args(train, weight_decay=0.01)
    train.add_argument("--augment", action="store_true", help="Random flips / 90-degree rotations per sample.")
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                       help="Mixed precision (autocast; weights, optimizer and losses stay float32): bf16 also on "
                            "CPUs (faster with bf16 instructions, see BENCHMARKS.md), fp16 on GPUs. Defaults to the "
                            "`accelerate config` value.")
    train.add_argument("--compile", action="store_true",
                       help="torch.compile the student: the first steps include the compilation (minutes on a CPU).")
    train.add_argument("--dataloader_num_workers", type=int, default=0, help="DataLoader worker processes.")
    train.add_argument("--seed", type=int, default=0, help="Seeds the student's init, the data order and augmentation.")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval_split", default="test", help="Split scored during training (best student selection).")
    ev.add_argument("--eval_steps", type=int, default=200, help="Evaluate every N steps (and at the end).")
    ev.add_argument("--eval_batch_size", type=int, default=16, help="Evaluation batch size per process.")
    ev.add_argument("--max_eval_samples", type=int, default=None, help="Score only the first N evaluation pairs.")
    out = parser.add_argument_group("outputs")
    out.add_argument("--output_dir", default="outputs/student", help="Where the students, metrics and logs go.")
    out.add_argument("--checkpointing_steps", type=int, default=500,
                     help="Save an Accelerate checkpoint every N steps.")
    out.add_argument("--checkpoints_total_limit", type=int, default=None,
                     help="Keep at most N checkpoints (default: all).")
    out.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    out.add_argument("--report_to", default="none",
                     help='Accelerate tracker ("tensorboard", "wandb", "all"); "none" (default): only the JSON logs.')
    out.add_argument("--push_to_hub", action="store_true", help="Push the best student (+ image processor, metrics).")
    out.add_argument("--hub_model_id", default=None, help="Defaults to the name of --output_dir.")
    out.add_argument("--hub_token", default=None, help="Hub token (default: the logged-in token / HF_TOKEN).")
    out.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)

    positive = ["train_batch_size", "max_train_steps", "eval_steps", "eval_batch_size", "checkpointing_steps"]
    optional_positive = ["checkpoints_total_limit", "max_eval_samples", "num_generated_samples", "num_train_samples"]
    for name in positive + optional_positive:
        value = getattr(args, name)
        if (name in positive or value is not None) and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}.")
    for name in ("learning_rate", "kd_temperature"):
        if not getattr(args, name) > 0:
            parser.error(f"--{name} must be > 0, got {getattr(args, name)}.")
    for name in ("real_loss_weight", "generated_loss_weight", "lr_warmup_steps", "dataloader_num_workers"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}.")
    if not 0 <= args.drop_worst_pairs < 1:
        parser.error(f"--drop_worst_pairs must lie in [0, 1) (a fraction of the generated pairs), got "
                     f"{args.drop_worst_pairs}.")
    check_data_args(parser, args, split=args.eval_split)

    # Student and resolution: presets are checked here, pretrained students when loaded (create_student).
    if args.student in SEGFORMER_PRESETS:
        try:
            segformer_config(args.student, num_labels=2, image_size=args.resolution)
        except ValueError as error:
            parser.error(f"--resolution {args.resolution}: {error}")
    elif not os.path.isdir(args.student) and "/" not in args.student:
        parser.error(f"--student {args.student!r} is neither a preset {list(SEGFORMER_PRESETS)}, an existing directory "
                     "nor an org/name Hub id.")
    elif args.resolution < 32:
        parser.error(f"--resolution must be >= 32 for SegFormer students, got {args.resolution}.")

    if args.mode == "real":
        if args.generated_dataset is not None or args.generated_ratio not in ("auto", 0.0):
            logging.getLogger(__name__).warning("--mode real trains on real pairs only: --generated_dataset / "
                                                "--generated_ratio are ignored.")
        if args.drop_worst_pairs or args.pair_quality_weighting or args.balance_generated_classes:
            parser.error("--drop_worst_pairs / --pair_quality_weighting / --balance_generated_classes select and "
                         "weight generated pairs: they need --mode hard or soft.")
        args.generated_dataset = None
    else:
        if args.generated_dataset is None:
            parser.error(f"--mode {args.mode} needs --generated_dataset (a `save_to_disk` directory or a Hub id); "
                         "use --mode real for the baseline without generated data.")
        if args.generated_ratio == 0.0:
            parser.error(f"--generated_ratio 0 with --mode {args.mode} would never use the generated pairs.")
        if args.generated_ratio != "auto":
            try:
                batch_composition(args.train_batch_size, args.generated_ratio)
            except ValueError as error:
                parser.error(str(error))
    try:
        args.resume_path = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)
    except (FileNotFoundError, ValueError) as error:
        parser.error(str(error))
    return args


@command_line_errors
def main(argv: list[str] | None = None) -> dict | None:
    """Train one student, save its best and final checkpoints with `save_pretrained` and write `metrics.json`.

    Returns that report (best and final scores, settings) on the main process, `None` on the others. A bad input
    ends the command with one line on stderr and exit code 2. One run at a time per `--output_dir` (a second one
    stops at once, naming the lock's holder).
    """
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    if not is_launcher_main_process():
        return train_student(args)
    with OutputDirLock.inside(args.output_dir):
        return train_student(args)


if __name__ == "__main__":
    main()
