#!/usr/bin/env python
"""Train a student segmentation model (SegFormer) on real pairs and DAKTer-generated pairs.

    accelerate launch examples/distill.py --dataset sos --data_dir ../shared/data/sos --sensor palsar \
        --generated_dataset outputs/generated --mode soft --student b0 --resolution 64 \
        --train_batch_size 16 --max_train_steps 2000 --output_dir outputs/student-soft

Modes (one code path, see `dakter_hf.distill.training`): `real` (real pairs only, the baseline; no generated dataset
needed), `hard` (generated pairs with argmax(q) as hard labels), `soft` (DAKTer: KD on the soft labels q). Every
mode trains `--max_train_steps` steps of `--train_batch_size` samples per process, so the budgets are equal.

Outputs in `--output_dir`: `best/` (highest validation mIoU) and `final/` students (`save_pretrained` with `id2label`
+ `preprocessor_config.json`, loadable with `AutoModelForSemanticSegmentation` / `AutoImageProcessor`), `metrics.json`
(every evaluation, best, final, losses, `num_processes`), `learning_curves.png`, `logs/*.jsonl` and Accelerate
checkpoints `checkpoint-<step>`.

Several processes on CPU: `accelerate launch --cpu --num_processes 2` runs ONE process (its CPU multi-process mode
expects MPI); use `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node 2 examples/distill.py ...` (gloo backend). The
script refuses to run when the launcher started more processes than Accelerate sees.
"""

import argparse
import logging
import os
import sys

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from dakter_hf.data import add_data_args, check_data_args, dataset_from_args, get_id2label
from dakter_hf.distill import SEGFORMER_PRESETS, create_image_processor, create_student, segformer_config
from dakter_hf.distill.training import (
    DEFAULT_GENERATED_RATIO,
    batch_composition,
    best_evaluation,
    build_distillation_dataloader,
    build_evaluation_dataloader,
    check_generated_dataset,
    distillation_training_step,
    evaluate_student,
    evaluation_dataset_from_args,
    learning_curve_history,
    load_generated_dataset,
    parse_generated_ratio,
    resolve_generated_ratio,
    save_student,
    write_metrics_report,
)
from dakter_hf.distributed import check_world_size
from dakter_hf.hub import push_student_to_hub
from dakter_hf.seeding import step_generator
from dakter_hf.training import (
    JsonlLossLog,
    checkpoint_step,
    prune_checkpoints,
    resolve_resume_checkpoint,
)
from dakter_hf.visualization import save_learning_curves


logger = get_logger(__name__, log_level="INFO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the distillation script (`--help` lists them)."""
    parser = argparse.ArgumentParser(description="Train a SAR segmentation student on real + DAKTer-generated pairs.")
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
    model = parser.add_argument_group("student")
    model.add_argument("--student", default="b0",
                       help=f"SegFormer preset {list(SEGFORMER_PRESETS)} (random init) or a pretrained directory / Hub "
                            "id (e.g. nvidia/mit-b0; RGB kernels summed to 1 channel).")
    model.add_argument("--resolution", type=int, default=64, help="Training / inference resolution (>= 32).")
    train = parser.add_argument_group("training")
    train.add_argument("--train_batch_size", type=int, default=16, help="Batch size per process.")
    train.add_argument("--max_train_steps", type=int, default=2000, help="Optimisation steps (the budget).")
    train.add_argument("--learning_rate", type=float, default=6e-4)
    train.add_argument("--lr_scheduler", default="linear",
                       help='"linear", "cosine", "constant", "constant_with_warmup", "polynomial", ...')
    train.add_argument("--lr_warmup_steps", type=int, default=0)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=0.01)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--augment", action="store_true", help="Random flips / 90-degree rotations per sample.")
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                       help="Defaults to the `accelerate config` value.")
    train.add_argument("--dataloader_num_workers", type=int, default=0)
    train.add_argument("--seed", type=int, default=0, help="Seeds the student's init, the data order and augmentation.")
    ev = parser.add_argument_group("evaluation")
    ev.add_argument("--eval_split", default="test", help="Split scored during training (best student selection).")
    ev.add_argument("--eval_steps", type=int, default=200, help="Evaluate every N steps (and at the end).")
    ev.add_argument("--eval_batch_size", type=int, default=16)
    ev.add_argument("--max_eval_samples", type=int, default=None, help="Score only the first N evaluation pairs.")
    out = parser.add_argument_group("outputs")
    out.add_argument("--output_dir", default="outputs/student")
    out.add_argument("--checkpointing_steps", type=int, default=500)
    out.add_argument("--checkpoints_total_limit", type=int, default=None)
    out.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    out.add_argument("--report_to", default="none",
                     help='Accelerate tracker ("tensorboard", "wandb", "all"); "none" (default): only the JSON logs.')
    out.add_argument("--push_to_hub", action="store_true", help="Push the best student (+ image processor, metrics).")
    out.add_argument("--hub_model_id", default=None, help="Defaults to the name of --output_dir.")
    out.add_argument("--hub_token", default=None)
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
    check_data_args(parser, args)

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


def main(argv: list[str] | None = None) -> dict:
    """Train one student, save its best and final checkpoints with `save_pretrained` and write `metrics.json`.

    Returns that report (best and final scores, settings) on the main process, `None` on the others.
    """
    args = parse_args(argv)
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/logs"),
    )
    check_world_size(accelerator)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)

    # Data: real pairs, evaluation split (native mask size; simulated scenes at --resolution), generated pairs.
    train_dataset = dataset_from_args(args, split="train")
    id2label = get_id2label(train_dataset)
    eval_dataset = evaluation_dataset_from_args(args, args.eval_split, simulated_resolution=args.resolution)
    generated = None
    if args.mode != "real":
        generated = load_generated_dataset(args.generated_dataset, token=args.hub_token)
        check_generated_dataset(generated, id2label, args.resolution)
        if args.num_generated_samples is not None:
            generated = generated.select(range(min(args.num_generated_samples, len(generated))))
    generated_ratio = resolve_generated_ratio(args.generated_ratio, args.mode, len(train_dataset),
                                              0 if generated is None else len(generated))
    num_real, num_generated = batch_composition(args.train_batch_size, generated_ratio)

    # Student, image processor, optimisation.
    set_seed(args.seed)  # student initialisation
    model = create_student(args.student, id2label=id2label, image_size=args.resolution, num_channels=1)
    image_processor = create_image_processor(args.resolution)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    train_dataloader = build_distillation_dataloader(
        train_dataset, generated, resolution=args.resolution, train_batch_size=args.train_batch_size,
        generated_ratio=generated_ratio, max_train_steps=args.max_train_steps,
        num_processes=accelerator.num_processes, seed=args.seed, num_workers=args.dataloader_num_workers)
    # AcceleratedScheduler steps `num_processes` times per optimizer step: scale as in the diffusers examples.
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(model, optimizer, train_dataloader,
                                                                           lr_scheduler)
    eval_dataloader = build_evaluation_dataloader(eval_dataset, image_processor, args.eval_batch_size,
                                                  accelerator.process_index, accelerator.num_processes,
                                                  args.max_eval_samples, args.dataloader_num_workers)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("distill", config={
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()})

    global_step = 0
    if args.resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {args.resume_path}")
        accelerator.load_state(args.resume_path)
        global_step = checkpoint_step(args.resume_path)
    elif args.resume_from_checkpoint is not None:
        accelerator.print(f"No checkpoint in {args.output_dir!r}; starting a new training run.")
    resume_step = global_step if args.resume_path is not None else None
    train_log = eval_log = None
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        train_log = JsonlLossLog.start(os.path.join(args.output_dir, "logs", "train_log.jsonl"), resume_step)
        eval_log = JsonlLossLog.start(os.path.join(args.output_dir, "logs", "eval_log.jsonl"), resume_step)
    best_dir, final_dir = os.path.join(args.output_dir, "best"), os.path.join(args.output_dir, "final")

    def run_evaluation(step: int) -> dict:
        metrics = evaluate_student(model, eval_dataloader, id2label, accelerator)
        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
        if accelerator.is_main_process:
            current = {"step": step, **metrics}
            previous = best_evaluation(eval_log.read())
            eval_log.append(step, **metrics)
            best = best_evaluation([previous, current] if previous else [current])  # ties keep the earlier one
            if best is current:
                save_student(model, image_processor, best_dir, accelerator)
            logger.info(f"step {step}: {args.eval_split} mIoU {metrics['mean_iou']:.4f} (best {best['mean_iou']:.4f} "
                        f"at step {best['step']})")
        return metrics

    unwrapped = accelerator.unwrap_model(model)
    logger.info(f"***** Distillation ({args.mode}): {len(train_dataset)} real + "
                f"{0 if generated is None else len(generated)} generated pairs, {num_real} real + {num_generated} "
                f"generated per batch, {args.max_train_steps} steps x {args.train_batch_size} x "
                f"{accelerator.num_processes} processes, {sum(p.numel() for p in unwrapped.parameters()) / 1e6:.2f}M "
                f"parameters, starting at step {global_step} *****")
    progress_bar = tqdm(total=args.max_train_steps, initial=global_step, desc="Steps",
                        disable=not accelerator.is_local_main_process)
    loader = accelerator.skip_first_batches(train_dataloader, global_step) if global_step else train_dataloader
    # the interrupted run evaluated the checkpoint's step if it was an evaluation step (before checkpointing)
    resumed_at_eval = global_step % args.eval_steps == 0 or global_step == args.max_train_steps
    last_eval_step = global_step if args.resume_path is not None and resumed_at_eval else None
    model.train()
    for batch in loader:
        losses = distillation_training_step(
            accelerator, model, optimizer, lr_scheduler, batch, mode=args.mode, kd_temperature=args.kd_temperature,
            real_weight=args.real_loss_weight, generated_weight=args.generated_loss_weight,
            max_grad_norm=args.max_grad_norm, augment=args.augment,
            generator=step_generator(args.seed, global_step, accelerator.process_index) if args.augment else None)
        global_step += 1
        progress_bar.update(1)
        logs = {**losses, "lr": lr_scheduler.get_last_lr()[0]}
        progress_bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        accelerator.log({f"train/{k}": v for k, v in logs.items()}, step=global_step)
        if accelerator.is_main_process:
            train_log.append(global_step, **logs)
        if global_step % args.eval_steps == 0 or global_step == args.max_train_steps:
            run_evaluation(global_step)
            last_eval_step = global_step
        if global_step % args.checkpointing_steps == 0:
            if accelerator.is_main_process:
                for removed in prune_checkpoints(args.output_dir, args.checkpoints_total_limit):
                    logger.info(f"Removed old checkpoint {removed}")
            accelerator.wait_for_everyone()
            accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{global_step}"))
        if global_step >= args.max_train_steps:
            break
    progress_bar.close()
    if last_eval_step != global_step:  # e.g. resumed from the last checkpoint: score the final student anyway
        run_evaluation(global_step)

    accelerator.wait_for_everyone()
    report = None
    push_error = None
    if accelerator.is_main_process:
        save_student(model, image_processor, final_dir, accelerator)
        evaluations = eval_log.read()
        best = best_evaluation(evaluations)
        curves_path = os.path.join(args.output_dir, "learning_curves.png")
        save_learning_curves(learning_curve_history(train_log.read(), evaluations), curves_path,
                             title=f"Student training ({args.mode})")
        metrics_path = os.path.join(args.output_dir, "metrics.json")
        report = write_metrics_report(
            metrics_path, evaluations, best_step=best["step"] if best else None, final_step=global_step,
            mode=args.mode, num_processes=accelerator.num_processes, eval_split=args.eval_split,
            train_batch_size=args.train_batch_size, global_batch_size=args.train_batch_size * accelerator.num_processes,
            batch_composition={"real": num_real, "generated": num_generated}, generated_ratio=generated_ratio,
            num_train_real=len(train_dataset), num_train_generated=0 if generated is None else len(generated),
            kd_temperature=args.kd_temperature, global_step=global_step,
            final_train_losses=train_log.final_means(last=min(50, args.max_train_steps),
                                                     names=("loss", "loss_real", "loss_generated")),
            best_dir=best_dir, final_dir=final_dir,
            args={k: v for k, v in vars(args).items() if k not in ("hub_token",)})
        logger.info(f"Best {args.eval_split} mIoU {report['best']['mean_iou']:.4f} at step {report['best']['step']}; "
                    f"final {report['final']['mean_iou']:.4f}. Outputs in {args.output_dir}")
        if args.push_to_hub:
            repo_id = args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))
            try:
                push_student_to_hub(best_dir, repo_id, token=args.hub_token,
                                    commit_message=f"DAKTer student ({args.mode}), best of {global_step} steps",
                                    extra_files=[metrics_path, curves_path])
                logger.info(f"Pushed the best student to {repo_id}")
            except RuntimeError as error:
                logger.error(str(error))
                push_error = error
    accelerator.end_training()
    if push_error is not None:
        raise push_error
    return report


if __name__ == "__main__":
    main(sys.argv[1:])
