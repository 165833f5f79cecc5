#!/usr/bin/env python
"""Train DAKTer's joint image + label diffusion model (`JointUNet2DModel`) on real SAR image / mask pairs.

    accelerate launch examples/train_joint_diffusion.py --dataset simulated --resolution 64 --model_size small \
        --train_batch_size 16 --max_train_steps 2000 --output_dir outputs/joint-diffusion

Writes Accelerate checkpoints (`checkpoint-<step>`), validation grids (`validation/step-<step>.png`), a JSON-lines
loss log (`logs/train_log.jsonl`), a loss curve (`loss_curve.png`) and, at the end, the `DAKTerPipeline`
(`save_pretrained`) with a model card. The logic lives in `dakter_hf.training`; this script wires it together.
"""

import argparse
import logging
import math
import os
import sys

import accelerate.utils
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import SchedulerType, get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from dakter_hf import JointUNet2DModel
from dakter_hf.data import add_data_args, check_data_args, dataset_from_args, get_id2label
from dakter_hf.distributed import check_world_size
from dakter_hf.hub import HubPushError, create_hub_repo, push_folder_to_hub
from dakter_hf.model_cards import save_joint_diffusion_model_card
from dakter_hf.seeding import step_generator
from dakter_hf.training import (
    JOINT_UNET_PRESETS,
    JsonlLossLog,
    assemble_pipeline,
    build_noise_scheduler,
    build_train_dataloader,
    check_training_resolution,
    checkpoint_step,
    ema_weights,
    estimate_label_scale,
    joint_diffusion_training_step,
    joint_unet_config,
    parse_label_scale,
    prune_checkpoints,
    resolve_resume_checkpoint,
    save_validation_grid,
)
from dakter_hf.visualization import save_learning_curves


logger = get_logger(__name__, log_level="INFO")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the generator training script (`--help` lists them)."""
    parser = argparse.ArgumentParser(description="Train DAKTer's joint image + soft-label diffusion model.")
    add_data_args(parser)
    model = parser.add_argument_group("model")
    model.add_argument("--resolution", type=int, default=64, help="Training (and generation) resolution.")
    model.add_argument("--crop_size", type=int, default=None,
                       help="Train on random crops of this size (the model still generates at --resolution).")
    model.add_argument("--augment", action="store_true", help="Random flips / 90-degree rotations per sample.")
    model.add_argument("--architecture", choices=["dual", "concat"], default="dual")
    model.add_argument("--model_size", choices=list(JOINT_UNET_PRESETS), default="small")
    model.add_argument("--block_out_channels", type=int, nargs="+", default=None,
                       help="Override the preset's channels per level.")
    model.add_argument("--label_scale", type=parse_label_scale, default="auto",
                       help="Balancing factor b: 'auto' (RMS of the normalised training images) or a positive float.")
    model.add_argument("--prediction_type", choices=["sample", "epsilon"], default="sample")
    model.add_argument("--num_train_timesteps", type=int, default=1000)
    train = parser.add_argument_group("training")
    train.add_argument("--ce_weight", type=float, default=1.0, help="Weight of the label cross-entropy.")
    train.add_argument("--train_batch_size", type=int, default=16, help="Batch size per device.")
    train.add_argument("--max_train_steps", type=int, default=2000)
    train.add_argument("--gradient_accumulation_steps", type=int, default=1)
    train.add_argument("--learning_rate", type=float, default=2e-4)
    train.add_argument("--lr_scheduler", default="cosine", choices=[t.value for t in SchedulerType])
    train.add_argument("--lr_warmup_steps", type=int, default=100)
    train.add_argument("--adam_beta1", type=float, default=0.9)
    train.add_argument("--adam_beta2", type=float, default=0.999)
    train.add_argument("--adam_weight_decay", type=float, default=0.0)
    train.add_argument("--adam_epsilon", type=float, default=1e-8)
    train.add_argument("--max_grad_norm", type=float, default=1.0)
    train.add_argument("--use_ema", action="store_true", help="Keep an EMA of the weights; the pipeline uses it.")
    train.add_argument("--ema_max_decay", type=float, default=0.9999)
    train.add_argument("--ema_inv_gamma", type=float, default=1.0)
    train.add_argument("--ema_power", type=float, default=3 / 4)
    train.add_argument("--mixed_precision", choices=["no", "fp16", "bf16"], default=None,
                       help="Defaults to the `accelerate config` value.")
    train.add_argument("--dataloader_num_workers", type=int, default=0)
    train.add_argument("--seed", type=int, default=0, help="Seeds model init, data order, timesteps and noise.")
    out = parser.add_argument_group("outputs")
    out.add_argument("--output_dir", default="outputs/joint-diffusion")
    out.add_argument("--checkpointing_steps", type=int, default=500)
    out.add_argument("--checkpoints_total_limit", type=int, default=None)
    out.add_argument("--resume_from_checkpoint", default=None, help="'latest' or a checkpoint directory.")
    out.add_argument("--validation_steps", type=int, default=500, help="Write a sample grid every N steps.")
    out.add_argument("--validation_inference_steps", type=int, default=50)
    out.add_argument("--num_validation_samples", type=int, default=8)
    out.add_argument("--report_to", default="none",
                     help='Accelerate tracker ("tensorboard", "wandb", "all"); "none" (default) logs only to '
                          "logs/train_log.jsonl, which is always written.")
    out.add_argument("--push_to_hub", action="store_true")
    out.add_argument("--hub_model_id", default=None)
    out.add_argument("--hub_token", default=None)
    args = parser.parse_args(argv)

    positive = ["train_batch_size", "max_train_steps", "gradient_accumulation_steps", "num_train_timesteps",
                "checkpointing_steps", "validation_steps", "validation_inference_steps", "num_validation_samples"]
    for name in positive + ["checkpoints_total_limit", "crop_size"]:
        value = getattr(args, name)
        if (name in positive or value is not None) and value < 1:
            parser.error(f"--{name} must be a positive integer, got {value}.")
    if args.learning_rate <= 0 or args.ce_weight < 0:
        parser.error("--learning_rate must be > 0 and --ce_weight >= 0.")
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
    return args


def main(argv: list[str] | None = None) -> JointUNet2DModel:
    """Train (or resume) the joint diffusion model and save it as a `DAKTerPipeline` under `--output_dir`.

    The saved pipeline holds the EMA weights when `--use_ema` is set; the returned model holds the raw weights.
    """
    args = parse_args(argv)
    resume_path = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)  # fails early
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    check_world_size(accelerator)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)  # model initialisation
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.push_to_hub:  # fail before training, not after it
            hub_repo_id = create_hub_repo(args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
                                          token=args.hub_token)

    # Data and balancing factor.
    train_dataset = dataset_from_args(args, split="train")
    id2label = get_id2label(train_dataset)
    if args.label_scale == "auto":
        label_scale = estimate_label_scale(train_dataset, args.resolution)
        logger.info(f"label_scale (balancing factor b) = {label_scale:.6f}, estimated over {len(train_dataset)} "
                    "training images")
    else:
        label_scale = args.label_scale
        logger.info(f"label_scale (balancing factor b) = {label_scale} (given)")

    # Model, EMA, optimisation.
    model = JointUNet2DModel(**joint_unet_config(
        args.model_size, resolution=args.resolution, num_classes=len(id2label), label_scale=label_scale,
        architecture=args.architecture, prediction_type=args.prediction_type,
        block_out_channels=args.block_out_channels))
    ema_model = None
    if args.use_ema:
        ema_model = EMAModel(model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True,
                             inv_gamma=args.ema_inv_gamma, power=args.ema_power, model_cls=JointUNet2DModel,
                             model_config=model.config)
    noise_scheduler = build_noise_scheduler(args.num_train_timesteps, args.prediction_type)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    train_dataloader = build_train_dataloader(train_dataset, args.resolution, args.train_batch_size,
                                              args.dataloader_num_workers)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler)
    if ema_model is not None:
        ema_model.to(accelerator.device)
        accelerator.register_for_checkpointing(ema_model)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("train_joint_diffusion", config={
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()
            if k != "hub_token"})

    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    global_step = 0
    if resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {resume_path}")
        accelerator.load_state(resume_path)
        global_step = checkpoint_step(resume_path)
    elif args.resume_from_checkpoint is not None:
        accelerator.print(f"No checkpoint in {args.output_dir!r}; starting a new training run.")
    first_epoch = global_step // steps_per_epoch
    loss_log = JsonlLossLog.start(os.path.join(args.output_dir, "logs", "train_log.jsonl"),
                                  resume_step=global_step if resume_path is not None else None)
    unwrapped = accelerator.unwrap_model(model)

    def validate(step: int) -> None:
        with ema_weights(unwrapped, ema_model):
            save_validation_grid(assemble_pipeline(unwrapped, noise_scheduler, id2label),
                                 os.path.join(args.output_dir, "validation", f"step-{step:06d}.png"),
                                 num_samples=args.num_validation_samples,
                                 num_inference_steps=args.validation_inference_steps, seed=args.seed,
                                 id2label=id2label, title=f"step {step}")

    def save_checkpoint(step: int) -> None:
        if accelerator.is_main_process:
            for removed in prune_checkpoints(args.output_dir, args.checkpoints_total_limit):
                logger.info(f"Removed old checkpoint {removed}")
        accelerator.wait_for_everyone()
        accelerator.save_state(os.path.join(args.output_dir, f"checkpoint-{step}"))

    num_params = sum(p.numel() for p in unwrapped.parameters())
    logger.info(f"***** Training: {len(train_dataset)} examples, {num_params / 1e6:.2f}M parameters, "
                f"{args.max_train_steps} steps of {args.train_batch_size} x {accelerator.num_processes} x "
                f"{args.gradient_accumulation_steps}, starting at step {global_step} *****")
    progress_bar = tqdm(total=args.max_train_steps, initial=global_step, desc="Steps",
                        disable=not accelerator.is_local_main_process)
    model.train()
    for epoch in range(first_epoch, num_epochs):
        train_dataloader.set_epoch(epoch)
        consumed = (global_step - epoch * steps_per_epoch) * args.gradient_accumulation_steps
        loader = accelerator.skip_first_batches(train_dataloader, consumed) if consumed > 0 else train_dataloader
        # Timesteps, noise, crops and augmentations of each micro-batch come from a generator derived from
        # (seed, micro-batch, process): nothing to checkpoint, exact resumes on every process.
        micro_batch = global_step * args.gradient_accumulation_steps
        for batch in loader:
            generator = step_generator(args.seed, micro_batch, accelerator.process_index)
            micro_batch += 1
            losses = joint_diffusion_training_step(
                accelerator, model, noise_scheduler, optimizer, lr_scheduler, batch, generator=generator,
                ce_weight=args.ce_weight, max_grad_norm=args.max_grad_norm, crop_size=args.crop_size,
                augment=args.augment)
            if not accelerator.sync_gradients:
                continue
            if ema_model is not None:
                ema_model.step(unwrapped.parameters())
            global_step += 1
            progress_bar.update(1)
            logs = {**losses, "lr": lr_scheduler.get_last_lr()[0], "epoch": epoch}
            if ema_model is not None:
                logs["ema_decay"] = ema_model.cur_decay_value
            progress_bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=global_step)
            if accelerator.is_main_process:
                loss_log.append(global_step, **logs)
            if global_step % args.checkpointing_steps == 0 or global_step >= args.max_train_steps:
                save_checkpoint(global_step)  # also at the end, so that training can be continued
            if accelerator.is_main_process and global_step % args.validation_steps == 0:
                validate(global_step)
            if global_step >= args.max_train_steps:
                break
        if global_step >= args.max_train_steps:
            break
    progress_bar.close()

    accelerator.wait_for_everyone()
    push_error = None
    if accelerator.is_main_process:
        if global_step % args.validation_steps != 0:
            validate(global_step)
        save_learning_curves(loss_log.history(), os.path.join(args.output_dir, "loss_curve.png"),
                             title="Joint diffusion training loss")
        with ema_weights(unwrapped, ema_model):
            assemble_pipeline(unwrapped, noise_scheduler, id2label).save_pretrained(args.output_dir)
        save_joint_diffusion_model_card(
            args.output_dir, unet_config=dict(unwrapped.config), args=vars(args), num_train_examples=len(train_dataset),
            id2label=id2label, global_step=global_step, final_losses=loss_log.final_means(),
            num_parameters=num_params, repo_id=hub_repo_id if args.push_to_hub else None)
        if args.push_to_hub:
            try:
                push_folder_to_hub(args.output_dir, hub_repo_id, what="the trained pipeline", token=args.hub_token,
                                   commit_message=f"Step {global_step}",
                                   ignore_patterns=["checkpoint-*", "step_*", "epoch_*"])
            except HubPushError as error:
                logger.error(str(error))
                push_error = error
    accelerator.end_training()
    if push_error is not None:
        raise push_error
    return unwrapped


if __name__ == "__main__":
    main(sys.argv[1:])
