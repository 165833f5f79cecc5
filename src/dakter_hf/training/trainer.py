"""The Accelerate training loop of DAKTer's generator (`accelerate launch examples/train_joint_diffusion.py`).

[`train_joint_diffusion`] trains (or resumes) a `JointUNet2DModel` on real image / mask pairs and writes, under
`args.output_dir`: Accelerate checkpoints (`checkpoint-<step>`), validation grids (`validation/step-<step>.png`), a
JSON-lines loss log (`logs/train_log.jsonl`), a loss curve (`loss_curve.png`) and, at the end, the `DAKTerPipeline`
(`save_pretrained`) with a model card, optionally pushed to the Hub. Its options are those of
`dakter_hf.commands.train`.
"""

import argparse
import logging
import math
import os

import PIL.Image
import torch
from accelerate import Accelerator
from accelerate.logging import get_logger
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration, set_seed
from diffusers.optimization import get_scheduler
from diffusers.training_utils import EMAModel
from tqdm.auto import tqdm

from ..data import dataset_from_args, get_id2label
from ..distributed import check_world_size
from ..errors import check_finite_parameters
from ..hub import HubPushError, create_hub_repo, push_folder_to_hub
from ..model_cards import save_joint_diffusion_model_card
from ..models.joint_unet_2d import JointUNet2DModel
from ..precision import warn_if_emulated_bf16
from ..seeding import step_generator
from ..tracking import log_images
from ..visualization import save_learning_curves
from .joint_diffusion import (
    assemble_pipeline,
    build_noise_scheduler,
    build_train_dataloader,
    estimate_label_scale,
    joint_diffusion_training_step,
    joint_unet_config,
    save_validation_grid,
)
from .runs import (
    JsonlLossLog,
    check_finite_losses,
    ema_weights,
    load_checkpoint,
    resolve_resume_checkpoint,
    save_checkpoint,
)


logger = get_logger(__name__, log_level="INFO")


def train_joint_diffusion(args: argparse.Namespace) -> JointUNet2DModel:
    """
    Train (or resume) the joint diffusion model and save it as a `DAKTerPipeline` under `args.output_dir`.

    The run is exactly reproducible from `args.seed`, and resumes exactly from any checkpoint
    (`args.resume_from_checkpoint`), on any number of processes: the data order comes from Accelerate's seedable
    sampler, and the timesteps, noise, crops and augmentations of each micro-batch from
    [`~dakter_hf.seeding.step_generator`].

    Args:
        args (`argparse.Namespace`): the options parsed and checked by `dakter_hf.commands.train.parse_args`.

    Returns:
        [`JointUNet2DModel`]: the trained model with its raw weights (the saved pipeline holds the EMA weights when
        `args.use_ema` is set).

    Raises:
        [`~dakter_hf.training.MissingCheckpointError`]: an explicit `--resume_from_checkpoint` does not exist (before
            any work); [`~dakter_hf.errors.DAKTerError`]: the checkpoint cannot be resumed (incomplete, other
            settings, a pickled object in it).
        [`~dakter_hf.errors.NonFiniteError`]: a loss is NaN or infinite (the run diverged); the checkpoints written
            before hold finite weights, and no pipeline of non-finite weights is saved.
        [`~dakter_hf.hub.HubPushError`]: with `--push_to_hub`, the repository cannot be created (before training) or
            the final upload fails (the local output is complete).
    """
    resume_path = resolve_resume_checkpoint(args.output_dir, args.resume_from_checkpoint)  # fails early
    accelerator = Accelerator(
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        mixed_precision=args.mixed_precision,
        log_with=None if args.report_to == "none" else args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=f"{args.output_dir}/logs"),
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, data_seed=args.seed),
    )
    check_world_size(accelerator)
    warn_if_emulated_bf16(accelerator.device.type, accelerator.mixed_precision, "--mixed_precision bf16")
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    logger.info(accelerator.state, main_process_only=False)
    set_seed(args.seed)  # model initialisation
    if accelerator.is_main_process:
        os.makedirs(args.output_dir, exist_ok=True)
        if args.push_to_hub:  # fail before training, not after it
            hub_repo_id = create_hub_repo(args.hub_model_id or os.path.basename(os.path.abspath(args.output_dir)),
                                          token=args.hub_token)

    # Data and balancing factor. Soft label targets need the masks at their native size (simulated scenes have none).
    native = args.soft_label_targets and args.dataset != "simulated"
    train_dataset = dataset_from_args(argparse.Namespace(**{**vars(args), "resolution": None}) if native else args,
                                      split="train")
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
        block_out_channels=args.block_out_channels,
        per_modality_timesteps=getattr(args, "per_modality_timesteps", False)))
    if getattr(args, "gradient_checkpointing", False):
        model.enable_gradient_checkpointing()
    ema_model = None
    if args.use_ema:
        ema_model = EMAModel(model.parameters(), decay=args.ema_max_decay, use_ema_warmup=True,
                             inv_gamma=args.ema_inv_gamma, power=args.ema_power, model_cls=JointUNet2DModel,
                             model_config=model.config)
    noise_scheduler = build_noise_scheduler(args.num_train_timesteps, args.prediction_type)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.learning_rate, betas=(args.adam_beta1, args.adam_beta2),
                                  weight_decay=args.adam_weight_decay, eps=args.adam_epsilon)
    train_dataloader = build_train_dataloader(
        train_dataset, args.resolution, args.train_batch_size, args.dataloader_num_workers,
        label_fractions_classes=len(id2label) if args.soft_label_targets else None)
    lr_scheduler = get_scheduler(args.lr_scheduler, optimizer=optimizer,
                                 num_warmup_steps=args.lr_warmup_steps * accelerator.num_processes,
                                 num_training_steps=args.max_train_steps * accelerator.num_processes)
    model, optimizer, train_dataloader, lr_scheduler = accelerator.prepare(
        model, optimizer, train_dataloader, lr_scheduler)
    if getattr(args, "compile", False):
        model.compile()  # in place: the module keeps its class, state dict and save_pretrained
    if ema_model is not None:
        ema_model.to(accelerator.device)  # saved by save_checkpoint as safetensors (Accelerate's hook pickles)
    if accelerator.is_main_process and args.report_to != "none":
        accelerator.init_trackers("train_joint_diffusion", config={
            k: v if isinstance(v, (int, float, str, bool)) else str(v) for k, v in vars(args).items()
            if k != "hub_token"})

    steps_per_epoch = math.ceil(len(train_dataloader) / args.gradient_accumulation_steps)
    num_epochs = math.ceil(args.max_train_steps / steps_per_epoch)
    global_step = 0
    if resume_path is not None:
        accelerator.print(f"Resuming from checkpoint {resume_path}")
        global_step = load_checkpoint(accelerator, resume_path, ema_model)
    elif args.resume_from_checkpoint is not None:
        accelerator.print(f"No checkpoint in {args.output_dir!r}; starting a new training run.")
    first_epoch = global_step // steps_per_epoch
    loss_log = JsonlLossLog.start(os.path.join(args.output_dir, "logs", "train_log.jsonl"),
                                  resume_step=global_step if resume_path is not None else None)
    unwrapped = accelerator.unwrap_model(model)

    def validate(step: int) -> None:
        with ema_weights(unwrapped, ema_model):
            grid = save_validation_grid(assemble_pipeline(unwrapped, noise_scheduler, id2label),
                                        os.path.join(args.output_dir, "validation", f"step-{step:06d}.png"),
                                        num_samples=args.num_validation_samples,
                                        num_inference_steps=args.validation_inference_steps, seed=args.seed,
                                        id2label=id2label, title=f"step {step}")
        if args.report_to != "none":  # the same grid in the trackers (TensorBoard, wandb, trackio)
            with PIL.Image.open(grid) as image:
                log_images(accelerator, {"validation/samples": [image.convert("RGB")]}, step=step)

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
                augment=args.augment, timestep_sampling=getattr(args, "timestep_sampling", None))
            if not accelerator.sync_gradients:
                continue
            if ema_model is not None:
                ema_model.step(unwrapped.parameters())
            global_step += 1
            check_finite_losses(losses, global_step, args.output_dir)
            progress_bar.update(1)
            logs = {**losses, "lr": lr_scheduler.get_last_lr()[0], "epoch": epoch}
            if ema_model is not None:
                logs["ema_decay"] = ema_model.cur_decay_value
            progress_bar.set_postfix(loss=f"{losses['loss']:.4f}", lr=f"{logs['lr']:.2e}")
            accelerator.log(logs, step=global_step)
            if accelerator.is_main_process:
                loss_log.append(global_step, **logs)
            if global_step % args.checkpointing_steps == 0 or global_step >= args.max_train_steps:
                # also at the end, so that training can be continued; pruned after the new one is complete
                save_checkpoint(accelerator, args.output_dir, global_step, args.checkpoints_total_limit, ema_model,
                                model=unwrapped)
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
            check_finite_parameters(unwrapped, "the trained model")
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
