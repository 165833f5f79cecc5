"""Training of DAKTer's generator, and the run utilities that the student training loop shares.

- [`joint_diffusion`](joint_diffusion.py): model-size presets, the loss and one training step, the balancing factor,
  augmentation, data loader, noise scheduler, pipeline assembly and validation grid.
- [`modality_timesteps`](modality_timesteps.py): per-modality timesteps (UniDiffuser-style) for generators built
  with `per_modality_timesteps=True`: the case probabilities, the draws and their loss terms.
- [`runs`](runs.py): checkpoints (crash-safe save, load without pickle, list, prune, resume), the non-finite loss
  check, the JSON-lines loss log, EMA weights, and
  [`backward_and_step`], the optimizer step of both training loops.
- [`trainer`](trainer.py): the Accelerate loop of `examples/train_joint_diffusion.py` ([`train_joint_diffusion`]).
"""

from .joint_diffusion import (
    JOINT_UNET_PRESETS,
    JointDiffusionLossOutput,
    assemble_pipeline,
    augment_batch,
    build_noise_scheduler,
    build_train_dataloader,
    check_training_resolution,
    downsampling_factor,
    estimate_label_scale,
    joint_diffusion_loss,
    joint_diffusion_training_step,
    joint_unet_config,
    parse_label_scale,
    save_validation_grid,
)
from .modality_timesteps import (
    ModalityTimesteps,
    ModalityTimestepSampling,
    draw_modality_timesteps,
    modality_timestep_losses,
)
from .runs import (
    CHECKPOINT_PREFIX,
    EMA_WEIGHTS_NAME,
    JsonlLossLog,
    MissingCheckpointError,
    backward_and_step,
    check_finite_losses,
    checkpoint_step,
    ema_weights,
    list_checkpoints,
    load_checkpoint,
    prune_checkpoints,
    resolve_resume_checkpoint,
    save_checkpoint,
)
from .trainer import train_joint_diffusion


__all__ = [
    "CHECKPOINT_PREFIX",
    "EMA_WEIGHTS_NAME",
    "JOINT_UNET_PRESETS",
    "JointDiffusionLossOutput",
    "JsonlLossLog",
    "MissingCheckpointError",
    "ModalityTimestepSampling",
    "ModalityTimesteps",
    "assemble_pipeline",
    "augment_batch",
    "backward_and_step",
    "build_noise_scheduler",
    "build_train_dataloader",
    "check_finite_losses",
    "check_training_resolution",
    "checkpoint_step",
    "downsampling_factor",
    "draw_modality_timesteps",
    "ema_weights",
    "estimate_label_scale",
    "joint_diffusion_loss",
    "joint_diffusion_training_step",
    "joint_unet_config",
    "list_checkpoints",
    "load_checkpoint",
    "modality_timestep_losses",
    "parse_label_scale",
    "prune_checkpoints",
    "resolve_resume_checkpoint",
    "save_checkpoint",
    "save_validation_grid",
    "train_joint_diffusion",
]
