"""Run utilities shared by the generator and the student training loops.

Checkpoint directories (`checkpoint-<step>`: listing, pruning, which one to resume from), the JSON-lines loss log,
the EMA weights swap and the optimizer step that both loops take under `accelerator.accumulate`.
"""

import json
import os
import re
import shutil
from collections.abc import Sequence
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.training_utils import EMAModel


# ----------------------------------------------------------------------------------------------------------------------
# Checkpoints
# ----------------------------------------------------------------------------------------------------------------------

CHECKPOINT_PREFIX = "checkpoint-"


def list_checkpoints(output_dir: str | os.PathLike) -> list[str]:
    """The `checkpoint-<step>` directories of `output_dir`, oldest (lowest step) first."""
    if not os.path.isdir(output_dir):
        return []
    names = [n for n in os.listdir(output_dir) if re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", n)
             and os.path.isdir(os.path.join(output_dir, n))]
    return [os.path.join(output_dir, n) for n in sorted(names, key=checkpoint_step)]


def checkpoint_step(path: str | os.PathLike) -> int:
    """The global step of a `checkpoint-<step>` directory."""
    match = re.fullmatch(rf"{CHECKPOINT_PREFIX}(\d+)", os.path.basename(os.path.normpath(path)))
    if match is None:
        raise ValueError(f"{path!r} is not named '{CHECKPOINT_PREFIX}<step>'.")
    return int(match.group(1))


def prune_checkpoints(output_dir: str | os.PathLike, total_limit: int | None, room_for: int = 1) -> list[str]:
    """
    Delete the oldest checkpoints so that at most `total_limit - room_for` remain (room for the next save).

    Args:
        output_dir (`str`): the directory holding `checkpoint-<step>` folders.
        total_limit (`int`, *optional*): maximum number of checkpoints to keep; `None` keeps all.
        room_for (`int`, *optional*, defaults to 1): checkpoints about to be written.

    Returns:
        `list[str]`: the removed directories.
    """
    if total_limit is None:
        return []
    if total_limit < 1:
        raise ValueError(f"`checkpoints_total_limit` must be >= 1, got {total_limit}.")
    checkpoints = list_checkpoints(output_dir)
    excess = len(checkpoints) - (total_limit - room_for)
    removed = checkpoints[: max(excess, 0)]
    for path in removed:
        shutil.rmtree(path)
    return removed


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> str | None:
    """
    The checkpoint directory to resume from, or `None` to start afresh.

    Args:
        output_dir (`str`): the run's output directory.
        resume_from_checkpoint (`str`, *optional*): `"latest"` (the newest `checkpoint-<step>` of `output_dir`, or
            `None` when there is none), a path, or the name of a checkpoint inside `output_dir`.

    Raises:
        `FileNotFoundError`: when an explicit checkpoint does not exist.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    for candidate in (resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)):
        if os.path.isdir(candidate):
            checkpoint_step(candidate)  # validates the name
            return candidate
    raise FileNotFoundError(
        f"--resume_from_checkpoint {resume_from_checkpoint!r} does not exist (neither as a path nor inside "
        f"{str(output_dir)!r}); use 'latest' or an existing '{CHECKPOINT_PREFIX}<step>' directory."
    )


# ----------------------------------------------------------------------------------------------------------------------
# Loss log
# ----------------------------------------------------------------------------------------------------------------------


class JsonlLossLog:
    """
    A JSON-lines log of training losses, one record per optimisation step (`{"step": ..., "loss": ..., ...}`).

    `JsonlLossLog(path)` only reads and appends: it never changes the records already there, so a finished run's log
    can be read (`history`, `final_means`) safely. A training run starts its log with [`JsonlLossLog.start`].

    Args:
        path (`str`): the log file.
    """

    def __init__(self, path: str | os.PathLike):
        self.path = str(path)

    @classmethod
    def start(cls, path: str | os.PathLike, resume_step: int | None = None) -> "JsonlLossLog":
        """
        The log of a training run: emptied for a new run (`resume_step=None`); when resuming from the checkpoint of
        step `resume_step`, its records up to that step are kept and later ones (from an interrupted run that went
        further than the checkpoint) are dropped, so that the log matches the resumed run. Rewritten atomically.
        """
        log = cls(path)
        kept = [r for r in log.read() if r["step"] <= resume_step] if resume_step is not None else []
        os.makedirs(os.path.dirname(log.path) or ".", exist_ok=True)
        tmp = log.path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            f.writelines(json.dumps(record) + "\n" for record in kept)
        os.replace(tmp, log.path)
        return log

    def read(self) -> list[dict[str, Any]]:
        """All records in the log."""
        if not os.path.exists(self.path):
            return []
        with open(self.path, encoding="utf-8") as f:
            return [json.loads(line) for line in f if line.strip()]

    def append(self, step: int, **values: float) -> None:
        """Append one record."""
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write(json.dumps({"step": int(step), **values}) + "\n")

    def history(
        self, names: Sequence[str] = ("image_loss", "label_loss", "loss")
    ) -> dict[str, list[tuple[int, float]]]:
        """The logged curves, `{name: [(step, value), ...]}` (the format of `save_learning_curves`)."""
        records = self.read()
        return {name: [(r["step"], r[name]) for r in records if name in r] for name in names}

    def final_means(self, last: int = 50, names: Sequence[str] = ("loss", "image_loss", "label_loss")) -> dict:
        """Means of each loss over the last `last` logged steps (and how many steps were averaged)."""
        records = self.read()[-last:]
        if not records:
            return {}
        means = {name: sum(r[name] for r in records) / len(records) for name in names}
        return {**means, "num_steps_averaged": len(records)}


# ----------------------------------------------------------------------------------------------------------------------
# EMA
# ----------------------------------------------------------------------------------------------------------------------


@contextmanager
def ema_weights(model: torch.nn.Module, ema_model: EMAModel | None):
    """Temporarily load the EMA weights into `model` (no-op without `ema_model`)."""
    if ema_model is None:
        yield model
        return
    ema_model.store(model.parameters())
    ema_model.copy_to(model.parameters())
    try:
        yield model
    finally:
        ema_model.restore(model.parameters())


# ----------------------------------------------------------------------------------------------------------------------
# Optimizer step
# ----------------------------------------------------------------------------------------------------------------------


def backward_and_step(
    accelerator,
    loss: torch.Tensor,
    model: torch.nn.Module,
    optimizer,
    lr_scheduler=None,
    max_grad_norm: float | None = None,
) -> None:
    """
    Back-propagate `loss` and take one optimizer step: the end of a training step of any model under Accelerate.

    Call it inside `with accelerator.accumulate(model):`, after the forward pass and the loss (the forward pass must
    be inside that context too, so that gradients are synchronised only at the end of an accumulation cycle). It
    runs `accelerator.backward(loss)`, clips the gradients of `model` to `max_grad_norm` when they are synchronised,
    then steps the optimizer and the learning-rate scheduler and clears the gradients. Under gradient accumulation
    the optimizer and scheduler prepared by Accelerate skip the micro-batches that do not complete a cycle.

    Args:
        accelerator (`accelerate.Accelerator`): the accelerator that prepared `model`, `optimizer` and `lr_scheduler`.
        loss (`torch.Tensor`): the scalar loss of the (micro-)batch.
        model (`torch.nn.Module`): the (prepared) model whose parameters are clipped.
        optimizer (`torch.optim.Optimizer`): the (prepared) optimizer.
        lr_scheduler (*optional*): the (prepared) learning-rate scheduler; `None` when there is none.
        max_grad_norm (`float`, *optional*): gradient clipping norm; `None` (the default) disables clipping.
    """
    accelerator.backward(loss)
    if accelerator.sync_gradients and max_grad_norm is not None:
        accelerator.clip_grad_norm_(model.parameters(), max_grad_norm)
    optimizer.step()
    if lr_scheduler is not None:
        lr_scheduler.step()
    optimizer.zero_grad(set_to_none=True)
