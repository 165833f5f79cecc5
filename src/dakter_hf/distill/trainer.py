"""The Accelerate loop of a distillation run (`dakter_hf.commands.distill`, `accelerate launch examples/distill.py`).

[`train_student`] loads the real, evaluation and generated data, builds the student and its stream, trains
`max_train_steps` steps of `train_batch_size` samples per process in any mode, evaluates every `eval_steps` (keeping
the best student by validation mIoU), checkpoints every `checkpointing_steps` (resumable with
`resume_from_checkpoint`), and writes `best/`, `final/`, `metrics.json`, `learning_curves.png` and `logs/*.jsonl`
in `output_dir`; optionally it pushes the best student to the Hub.
"""

from __future__ import annotations

import argparse
import os

import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import ProjectConfiguration, set_seed
from tqdm.auto import tqdm
from transformers import get_scheduler

from ..data import dataset_from_args, get_id2label
from ..distributed import check_world_size
from ..errors import UsageError, check_finite_parameters
from ..hub import push_student_to_hub
from ..model_cards import CARD_NAME, make_student_card
from ..overlays import segmentation_overlay_rows
from ..precision import warn_if_emulated_bf16
from ..seeding import step_generator
from ..tracking import log_images
from ..training.runs import JsonlLossLog, check_finite_losses, load_checkpoint, save_checkpoint
from ..visualization import save_learning_curves
from .class_balance import balance_generated_classes
from .data import build_distillation_dataloader, check_generated_dataset, load_generated_dataset
from .evaluation import (
    best_evaluation,
    build_evaluation_dataloader,
    evaluate_student,
    evaluation_dataset_from_args,
    learning_curve_history,
    write_metrics_report,
)
from .pair_quality import select_pairs_by_quality
from .sampler import batch_composition, resolve_generated_ratio
from .students import SEGFORMER_PRESETS, create_image_processor, create_student
from .training import adopt_unmarked_students, distillation_training_step, save_student


logger = get_logger(__name__, log_level="INFO")


def train_student(args: argparse.Namespace) -> dict | None:
    """Train one student, save its best and final checkpoints with `save_pretrained` and write `metrics.json`.

    Args:
        args (`argparse.Namespace`): the options of `dakter_hf.commands.distill.parse_args`, which checks them and
            resolves `resume_path` (the checkpoint to resume from, or `None`).

    Returns:
        `dict`: the report written to `metrics.json` (best and final scores, settings) on the main process, `None`
        on the others.

    Raises:
        `RuntimeError`: the Hub push failed (after every local output is written).
    """
    accelerator = Accelerator(
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/logs"),
    )
    check_world_size(accelerator)
    warn_if_emulated_bf16(accelerator.device.type, accelerator.mixed_precision, "--mixed_precision bf16")
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
    pair_weights = pair_quality = None  # pair-quality levers: drop the worst pairs, weight the others' loss
    drop, weighting = getattr(args, "drop_worst_pairs", 0.0), getattr(args, "pair_quality_weighting", False)
    if generated is not None and (drop or weighting):
        selection = select_pairs_by_quality(generated, drop, weighting, name=args.generated_dataset)
        generated, pair_weights, pair_quality = selection.dataset, selection.weights, selection.report
        logger.info(f"Pair quality: {pair_quality['num_dropped']} of {pair_quality['num_pairs']} generated pairs "
                    f"dropped, weighting {'on' if pair_quality['weighting'] else 'off'}")
    class_balance = None  # class-balance lever: weights that give the generated pairs the real class frequencies
    if generated is not None and getattr(args, "balance_generated_classes", False):
        balance = balance_generated_classes(generated, train_dataset, id2label, base_weights=pair_weights,
                                            name=args.generated_dataset)
        pair_weights, class_balance = balance.weights, balance.report
        logger.info(f"Class balance: generated {class_balance['generated_class_fractions']} -> real "
                    f"{class_balance['real_class_fractions']} (weights {class_balance['weight_min']:.3f} .. "
                    f"{class_balance['weight_max']:.3f}, effective pairs {class_balance['effective_num_pairs']})")
    generated_ratio = resolve_generated_ratio(args.generated_ratio, args.mode, len(train_dataset),
                                              0 if generated is None else len(generated))
    num_real, num_generated = batch_composition(args.train_batch_size, generated_ratio)

    # Student, image processor, optimisation.
    set_seed(args.seed)  # student initialisation
    try:
        model = create_student(args.student, id2label=id2label, image_size=args.resolution, num_channels=1)
    except ValueError as error:  # a directory / Hub id that is not a loadable SegFormer
        raise UsageError(f"--student {args.student}: {' '.join(str(error).split())}") from error
    image_processor = create_image_processor(args.resolution)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    train_dataloader = build_distillation_dataloader(
        train_dataset, generated, resolution=args.resolution, train_batch_size=args.train_batch_size,
        generated_ratio=generated_ratio, max_train_steps=args.max_train_steps,
        num_processes=accelerator.num_processes, seed=args.seed, num_workers=args.dataloader_num_workers,
        generated_weights=pair_weights)
    # AcceleratedScheduler steps `num_processes` times per optimizer step: scale as in the diffusers examples.
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(model, optimizer, train_dataloader,
                                                                           lr_scheduler)
    if args.compile:
        model.compile()  # in place: the module keeps its class, state dict and save_pretrained
    eval_dataloader = build_evaluation_dataloader(eval_dataset, image_processor, args.eval_batch_size,
                                                  accelerator.process_index, accelerator.num_processes,
                                                  args.max_eval_samples, args.dataloader_num_workers)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("distill", config={
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()})

    global_step = 0
    if args.resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {args.resume_path}")
        if accelerator.is_main_process:
            for path in adopt_unmarked_students(args.output_dir):
                logger.info(f"{path}: a student saved by an earlier dakter_hf version in this run's output directory; "
                            "it is replaced when this run saves that student again.")
        global_step = load_checkpoint(accelerator, args.resume_path)
    elif args.resume_from_checkpoint is not None:
        accelerator.print(f"No checkpoint in {args.output_dir!r}; starting a new training run.")
    resume_step = global_step if args.resume_path is not None else None
    train_log = eval_log = None
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        train_log = JsonlLossLog.start(os.path.join(args.output_dir, "logs", "train_log.jsonl"), resume_step)
        eval_log = JsonlLossLog.start(os.path.join(args.output_dir, "logs", "eval_log.jsonl"), resume_step)
    best_dir, final_dir = os.path.join(args.output_dir, "best"), os.path.join(args.output_dir, "final")
    repo_id = (args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir))) if args.push_to_hub else None
    card_args = {k: v for k, v in vars(args).items() if k not in ("hub_token", "resume_path")}

    def save_with_card(directory: str, step: int, metrics: dict | None) -> None:
        """The student, its image processor and its model card (with the scores of `step` on the evaluation split)."""
        save_student(model, image_processor, directory, accelerator)
        make_student_card(id2label, metrics, card_args, step, generated_ratio=generated_ratio,
                          num_train_real=len(train_dataset),
                          num_train_generated=0 if generated is None else len(generated),
                          base_model=None if args.student in SEGFORMER_PRESETS else args.student,
                          repo_id=repo_id).save(os.path.join(directory, CARD_NAME))

    preview = {}

    def log_predictions(step: int) -> None:
        """Image | prediction | ground truth of the first evaluation pairs, to the trackers."""
        if args.report_to == "none" or not accelerator.is_main_process:
            return
        if "batch" not in preview:
            preview["batch"] = next(iter(eval_dataloader), None)
        batch = preview["batch"]
        if batch is None:  # this process has no evaluation pairs
            return
        student = accelerator.unwrap_model(model)
        was_training = student.training
        student.eval()
        with torch.no_grad():
            logits = student(pixel_values=batch["pixel_values"].to(accelerator.device)).logits
        student.train(was_training)
        rows = segmentation_overlay_rows(batch["pixel_values"], logits, batch["labels"], max_rows=4)
        log_images(accelerator, {"eval/predictions": rows}, step=step)

    def run_evaluation(step: int) -> dict:
        check_finite_parameters(accelerator.unwrap_model(model), f"the student at step {step}")  # no NaN metrics
        metrics = evaluate_student(model, eval_dataloader, id2label, accelerator)
        accelerator.log({f"eval/{k}": v for k, v in metrics.items()}, step=step)
        log_predictions(step)
        if accelerator.is_main_process:
            current = {"step": step, **metrics}
            previous = best_evaluation(eval_log.read())
            eval_log.append(step, **metrics)
            best = best_evaluation([previous, current] if previous else [current])  # ties keep the earlier one
            if best is current:
                save_with_card(best_dir, step, metrics)
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
        check_finite_losses(losses, global_step, args.output_dir)
        progress_bar.update(1)
        logs = {**losses, "lr": lr_scheduler.get_last_lr()[0]}
        progress_bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{logs['lr']:.2e}")
        accelerator.log({f"train/{k}": v for k, v in logs.items()}, step=global_step)
        if accelerator.is_main_process:
            train_log.append(global_step, **logs)
        if global_step % args.eval_steps == 0 or global_step == args.max_train_steps:
            run_evaluation(global_step)
            last_eval_step = global_step
        if global_step % args.checkpointing_steps == 0:  # crash-safe; pruned after the new one is complete
            save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit,
                            model=accelerator.unwrap_model(model))
        if global_step >= args.max_train_steps:
            break
    progress_bar.close()
    if last_eval_step != global_step:  # e.g. resumed from the last checkpoint: score the final student anyway
        run_evaluation(global_step)

    accelerator.wait_for_everyone()
    report = None
    push_error = None
    if accelerator.is_main_process:
        check_finite_parameters(unwrapped, "the final student")
        evaluations = eval_log.read()
        save_with_card(final_dir, global_step, next((e for e in evaluations if e["step"] == global_step), None))
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
            kd_temperature=args.kd_temperature, global_step=global_step, pair_quality=pair_quality,
            class_balance=class_balance,
            final_train_losses=train_log.final_means(last=min(50, args.max_train_steps),
                                                     names=("loss", "loss_real", "loss_generated")),
            best_dir=best_dir, final_dir=final_dir,
            args={k: v for k, v in vars(args).items() if k not in ("hub_token",)})
        logger.info(f"Best {args.eval_split} mIoU {report['best']['mean_iou']:.4f} at step {report['best']['step']}; "
                    f"final {report['final']['mean_iou']:.4f}. Outputs in {args.output_dir}")
        if args.push_to_hub:
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
