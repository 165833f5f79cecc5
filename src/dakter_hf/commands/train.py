"""Train DAKTer's joint image + label diffusion model (`JointUNet2DModel`) on real SAR image / mask pairs.

    accelerate launch examples/train_joint_diffusion.py --dataset simulated --resolution 64 --model_size small \\
        --train_batch_size 16 --max_train_steps 2000 --output_dir outputs/joint-diffusion

Writes Accelerate checkpoints (`checkpoint-<step>`), validation grids (`validation/step-<step>.png`), a JSON-lines
loss log (`logs/train_log.jsonl`), a loss curve (`loss_curve.png`) and, at the end, the `DAKTerPipeline`
(`save_pretrained`) with a model card. This module parses and checks the options; the loop is
`dakter_hf.training.train_joint_diffusion`.
"""

import argparse

import accelerate.utils
from diffusers.optimization import SchedulerType

from ..data import add_data_args, check_data_args
from ..filesystem import OutputDirLock, is_launcher_main_process
from ..training import (
    JOINT_UNET_PRESETS,
    ModalityTimestepSampling,
    check_training_resolution,
    parse_label_scale,
    train_joint_diffusion,
)
from .errors import DEBUG_HELP, command_line_errors
from .options import add_adamw_args


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the generator training script (`--help` lists them with their defaults)."""
    parser = argparse.ArgumentParser(description="Train DAKTer's joint image + soft-label diffusion model.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    add_data_args(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--resolution", type=int, default=64, help="Training (and generation) resolution.")
    model.add_argument("--crop_size", type=int, default=None,
                       help="Train on random crops of this size (the model still generates at --resolution).")
    model.add_argument("--augment", action="store_true", help="Random flips / 90-degree rotations per sample.")
    model.add_argument("--architecture", choices=["dual", "concat"], default="dual",
                       help="'dual': an image UNet and a label UNet joined at every level; 'concat': one UNet.")
    model.add_argument("--model_size", choices=list(JOINT_UNET_PRESETS), default="small",
                       help="Model-size preset (dakter_hf.training.JOINT_UNET_PRESETS).")
    model.add_argument("--block_out_channels", type=int, nargs="+", default=None,
                       help="Override the preset's channels per level.")
    model.add_argument("--label_scale", type=parse_label_scale, default="auto",
                       help="Balancing factor b: 'auto' (RMS of the normalised training images) or a positive float.")
    model.add_argument("--prediction_type", choices=["sample", "epsilon"], default="sample",
                       help="What the image side predicts: the clean image or the noise.")
    model.add_argument("--num_train_timesteps", type=int, default=1000, help="Timesteps of the DDPM noise schedule.")
    model.add_argument("--per_modality_timesteps", action="store_true",
                       help="Separate image and label timesteps (UniDiffuser-style), so that the mask -> image and "
                            "segmentation pipelines condition exactly; the next three flags set how often a sample "
                            "has a clean image, a clean label or independent timesteps (the rest trains jointly).")
    model.add_argument("--clean_image_prob", type=float, default=None,
                       help="With --per_modality_timesteps: share of samples with a clean image (None: 0.25).")
    model.add_argument("--clean_label_prob", type=float, default=None,
                       help="With --per_modality_timesteps: share of samples with a clean label (None: 0.25).")
    model.add_argument("--independent_timesteps_prob", type=float, default=None,
                       help="With --per_modality_timesteps: share of samples with independent timesteps (None: 0).")
    train = parser.add_argument_group("training")
    train.add_argument("--ce_weight", type=float, default=1.0, help="Weight of the label cross-entropy.")
    train.add_argument("--soft_label_targets", action="store_true",
                       help="Label targets keep the boundary uncertainty of the masks: class fractions of the "
                            "native-size masks area-averaged to --resolution (soft-target CE, clean label "
                            "b * (2q - 1)) instead of nearest-resized one-hot masks.")
    train.add_argument("--train_batch_size", type=int, default=16, help="Batch size per device.")
    train.add_argument("--max_train_steps", type=int, default=2000, help="Optimizer steps in total.")
    train.add_argument("--gradient_accumulation_steps", type=int, default=1, help="Micro-batches per optimizer step.")
    train.add_argument("--learning_rate", type=float, default=2e-4, help="Peak learning rate of AdamW.")
    train.add_argument("--lr_scheduler", default="cosine", choices=[t.value for t in SchedulerType],
                       help="Learning-rate schedule (diffusers.optimization.get_scheduler).")
    train.add_argument("--lr_warmup_steps", type=int, default=100, help="Linear warm-up steps of the schedule.")
    add_adamw_args(train, weight_decay=0.0)
    train.add_argument("--use_ema", action="store_true", help="Keep an EMA of the weights; the pipeline uses it.")
    train.add_argument("--ema_max_decay", type=float, default=0.9999, help="EMA: largest decay (after warm-up).")
    train.add_argument("--ema_inv_gamma", type=float, default=1.0, help="EMA warm-up: inverse multiplicative factor.")
    train.add_argument("--ema_power", type=float, default=3 / 4, help="EMA warm-up: exponential factor.")
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                       help="Mixed precision (autocast; weights, optimizer and losses stay float32): bf16 also on "
                            "CPUs (faster with bf16 instructions, see BENCHMARKS.md), fp16 on GPUs; None takes the "
                            "`accelerate config` value.")
    train.add_argument("--gradient_checkpointing", action="store_true",
                       help="Recompute the UNet's activations in the backward pass: much less memory for large "
                            "images, at more compute per step (see BENCHMARKS.md).")
    train.add_argument("--compile", action="store_true",
                       help="torch.compile the model: the first steps include the compilation (minutes on a CPU).")
    train.add_argument("--dataloader_num_workers", type=int, default=0, help="Data loading worker processes.")
    train.add_argument("--seed", type=int, default=0, help="Seeds model init, data order, timesteps and noise.")
    out = parser.add_argument_group("outputs")
    out.add_argument("--output_dir", default="outputs/joint-diffusion",
                     help="Where the checkpoints, logs, figures and the final pipeline go.")
    out.add_argument("--checkpointing_steps", type=int, default=500,
                     help="Save an Accelerate checkpoint every N steps (and at the end).")
    out.add_argument("--checkpoints_total_limit", type=int, default=None,
                     help="Keep at most this many checkpoints (the oldest are deleted); None keeps all.")
    out.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    out.add_argument("--validation_steps", type=int, default=500, help="Write a sample grid every N steps.")
    out.add_argument("--validation_inference_steps", type=int, default=50, help="Sampling steps of the sample grids.")
    out.add_argument("--num_validation_samples", type=int, default=8, help="Pairs per sample grid.")
    out.add_argument("--report_to", default="none",
                     help='Accelerate tracker ("tensorboard", "wandb", "all"); "none" logs only to '
                          "logs/train_log.jsonl, which is always written.")
    out.add_argument("--push_to_hub", action="store_true",
                     help="Upload the final pipeline (not the checkpoints) to the Hub.")
    out.add_argument("--hub_model_id", default=None, help="Hub repository; None takes the name of --output_dir.")
    out.add_argument("--hub_token", default=None, help="Hub token; None uses the saved login.")
    out.add_argument("--debug", action="store_true", help=DEBUG_HELP)
    args = parser.parse_args(argv)

    positive = ["train_batch_size", "max_train_steps", "gradient_accumulation_steps", "num_train_timesteps",
                "checkpointing_steps", "validation_steps", "validation_inference_steps", "num_validation_samples"]
    for name in positive + ["checkpoints_total_limit", "crop_size"]:
        value = getattr(args, name)
        if (name in positive or value is not None) and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}.")
    if args.learning_rate <= 0 or args.ce_weight < 0:
        parser.error("--learning_rate must be > 0 and --ce_weight >= 0.")
    for name in ("lr_warmup_steps", "dataloader_num_workers", "max_grad_norm", "adam_weight_decay"):
        if getattr(args, name) < 0:
            parser.error(f"--{name} must be >= 0, got {getattr(args, name)}.")
    num_levels = len(args.block_out_channels or JOINT_UNET_PRESETS[args.model_size]["block_out_channels"])
    try:
        check_training_resolution(args.resolution, num_levels)
        if args.crop_size is not None:
            check_training_resolution(args.crop_size, num_levels, name="--crop_size")
    except ValueError as error:
        parser.error(str(error))
    check_data_args(parser, args)
    if args.report_to not in ("none", "all"):
        available = getattr(accelerate.utils, f"is_{args.report_to}_available", None)
        if available is not None and not available():
            parser.error(f"--report_to {args.report_to}: the package is not installed (use 'none' to log only to "
                         "logs/train_log.jsonl).")
    if args.crop_size is not None and args.crop_size > args.resolution:
        parser.error(f"--crop_size={args.crop_size} must not exceed --resolution={args.resolution}.")
    args.timestep_sampling = _timestep_sampling(parser, args)
    return args


def _timestep_sampling(parser: argparse.ArgumentParser, args: argparse.Namespace) -> ModalityTimestepSampling | None:
    """The per-modality timestep sampling of the flags (`None` without `--per_modality_timesteps`)."""
    names = {"clean_image_prob": "clean_image", "clean_label_prob": "clean_label",
             "independent_timesteps_prob": "independent"}
    given = {field: getattr(args, flag) for flag, field in names.items() if getattr(args, flag) is not None}
    if not args.per_modality_timesteps:
        if given:
            parser.error(f"{', '.join('--' + f for f in names if getattr(args, f) is not None)} only apply with "
                         "--per_modality_timesteps.")
        return None
    try:
        return ModalityTimestepSampling(**given)
    except ValueError as error:
        parser.error(f"--clean_image_prob, --clean_label_prob, --independent_timesteps_prob: {error}")


@command_line_errors
def main(argv: list[str] | None = None) -> int:
    """Train (or resume) the joint diffusion model and save it as a `DAKTerPipeline` under `--output_dir`.

    The saved pipeline holds the EMA weights when `--use_ema` is set. Returns 0; a bad input ends the command with
    one line on stderr and exit code 2. One run at a time per `--output_dir` (a second one stops at once, naming the
    lock's holder).
    """
    args = parse_args(argv)
    if not is_launcher_main_process():
        train_joint_diffusion(args)
        return 0
    with OutputDirLock.inside(args.output_dir):
        train_joint_diffusion(args)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
