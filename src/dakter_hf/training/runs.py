"""Run utilities shared by the generator and the student training loops.

Checkpoint directories (`checkpoint-<step>`: crash-safe saving with the EMA weights as safetensors, loading without
unpickling, listing, pruning, which one to resume from), the non-finite loss check, the JSON-lines loss log, the EMA
weights swap and the optimizer step that both loops take under `accelerator.accumulate`.
"""

import json
import math
import os
import pickle
import re
import shutil
from collections.abc import Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from diffusers.training_utils import EMAModel
from safetensors import safe_open
from safetensors.torch import save_file

from ..errors import DAKTerError, NonFiniteError, check_finite_parameters
from ..filesystem import commit_directory, owner_of, staging_path, start_staging


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


#: Owner recorded in the checkpoints this package writes (see `dakter_hf.filesystem.mark_owned`).
CHECKPOINT_OWNER = "dakter_hf checkpoint"
#: The EMA weights inside a checkpoint (safetensors; never a pickle).
EMA_WEIGHTS_NAME = "ema.safetensors"


#: Files `accelerator.save_state` (and `save_checkpoint`) write into a checkpoint: how a checkpoint written before the
#: ownership markers is recognised.
_STATE_FILE_RE = re.compile(r"(model|pytorch_model|optimizer|scheduler|sampler|random_states)(_\d+)?"
                            r"\.(safetensors|bin|pkl)" rf"|{re.escape(EMA_WEIGHTS_NAME)}")


def is_run_checkpoint(path: str | os.PathLike) -> bool:
    """Whether `path` is a `checkpoint-<step>` directory a dakter_hf training loop wrote: it carries the checkpoint
    owner marker, or (an older version's checkpoint, written before the markers) holds nothing but the files of a
    saved training state (model, optimizer, scheduler and random states, EMA weights)."""
    path = os.fspath(path)
    name = os.path.basename(os.path.normpath(path))
    if not os.path.isdir(path) or os.path.islink(path) or not re.fullmatch(rf"{CHECKPOINT_PREFIX}\d+", name):
        return False
    if owner_of(path) == CHECKPOINT_OWNER:
        return True
    names = os.listdir(path)
    return any(n.startswith("model") for n in names) and all(_STATE_FILE_RE.fullmatch(n) for n in names)


class MissingCheckpointError(DAKTerError, FileNotFoundError):
    """`--resume_from_checkpoint` names a checkpoint that does not exist."""


def check_finite_losses(losses: Mapping[str, float], step: int, output_dir: str | os.PathLike | None = None) -> None:
    """Raise [`NonFiniteError`] when a loss of optimisation step `step` is NaN or infinite (naming the step and
    the checkpoint to resume from)."""
    bad = {name: value for name, value in losses.items() if not math.isfinite(value)}
    if not bad:
        return
    checkpoints = list_checkpoints(output_dir) if output_dir is not None else []
    resume = (f"the last complete checkpoint {checkpoints[-1]} is kept (resume from it with a lower "
              "--learning_rate)" if checkpoints else "no checkpoint was written; lower --learning_rate")
    raise NonFiniteError(f"non-finite loss at step {step} ({', '.join(f'{k}={v}' for k, v in bad.items())}): the "
                         f"run diverged and stops here; {resume}.")


def _ema_to_safetensors(ema_model: EMAModel, path: str) -> None:
    state = ema_model.state_dict()
    tensors = {f"shadow_params.{i}": p.detach().contiguous().cpu() for i, p in enumerate(state.pop("shadow_params"))}
    save_file(tensors, path, metadata={"ema_state": json.dumps(state)})


def _ema_from_safetensors(ema_model: EMAModel, path: str) -> None:
    if not os.path.isfile(path):
        raise DAKTerError(f"checkpoint {os.path.dirname(path)} has no {EMA_WEIGHTS_NAME} but this run uses --use_ema "
                          "(the checkpoint was written without --use_ema, or by an older version that pickled the "
                          "EMA, which is not loaded); resume with the settings of the run that wrote it.")
    with safe_open(path, framework="pt") as f:
        state = json.loads(f.metadata()["ema_state"])
        count = len(f.keys())
        shadow = [f.get_tensor(f"shadow_params.{i}") for i in range(count)]
    if len(shadow) != len(ema_model.shadow_params) or any(
            a.shape != b.shape for a, b in zip(shadow, ema_model.shadow_params)):
        raise DAKTerError(f"{path} holds EMA weights of another model ({len(shadow)} tensors, the model has "
                          f"{len(ema_model.shadow_params)}): resume with the model settings of the run that wrote it.")
    device = ema_model.shadow_params[0].device if ema_model.shadow_params else "cpu"
    ema_model.load_state_dict({**state, "shadow_params": [t.to(device) for t in shadow]})


def save_checkpoint(
    accelerator,
    output_dir: str | os.PathLike,
    step: int,
    total_limit: int | None = None,
    ema_model: EMAModel | None = None,
    model: torch.nn.Module | None = None,
) -> str:
    """
    Save the training state of step `step` as `<output_dir>/checkpoint-<step>`, crash-safely.

    The state is written to `checkpoint-<step>.incomplete` ([`accelerator.save_state`] plus the EMA weights as
    `ema.safetensors`) and renamed when complete; only then are the oldest checkpoints pruned to `total_limit`. A
    kill at any moment leaves the previous complete checkpoints in place, and `--resume_from_checkpoint latest`
    never sees a half-written one. Call it on every process.

    Args:
        accelerator (`accelerate.Accelerator`): the run's accelerator.
        output_dir (`str`): the run's output directory.
        step (`int`): the global step.
        total_limit (`int`, *optional*): keep at most this many checkpoints; `None` keeps all.
        ema_model (`EMAModel`, *optional*): EMA weights to save with the checkpoint (never registered with
            `accelerator.register_for_checkpointing`, which pickles).
        model (`torch.nn.Module`, *optional*): refused (before anything is written) if its weights are not finite.

    Returns:
        `str`: the checkpoint directory.
    """
    if model is not None:
        check_finite_parameters(model, f"the model at step {step}")
    target = os.path.join(output_dir, f"{CHECKPOINT_PREFIX}{step}")
    staging = staging_path(target)
    if accelerator.is_main_process:
        start_staging(target, CHECKPOINT_OWNER)
    accelerator.wait_for_everyone()
    accelerator.save_state(staging)
    if accelerator.is_main_process and ema_model is not None:
        _ema_to_safetensors(ema_model, os.path.join(staging, EMA_WEIGHTS_NAME))
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        commit_directory(staging, target, CHECKPOINT_OWNER)
        prune_checkpoints(output_dir, total_limit, room_for=0)
    accelerator.wait_for_everyone()
    return target


def load_checkpoint(accelerator, path: str | os.PathLike, ema_model: EMAModel | None = None) -> int:
    """
    Restore the training state saved by [`save_checkpoint`] and return its step.

    Nothing is unpickled: Accelerate's model / optimizer / scheduler / RNG files load with `weights_only=True`, the
    EMA weights from `ema.safetensors`. A checkpoint that cannot be read (truncated, from another model or other
    settings) raises [`DAKTerError`] naming it.
    """
    path = os.fspath(path)
    step = checkpoint_step(path)
    pickled = sorted(n for n in os.listdir(path) if n.startswith("custom_checkpoint_"))
    if pickled:
        raise DAKTerError(f"checkpoint {path} holds pickled objects ({', '.join(pickled)}: an older version's EMA, or "
                          "a crafted file), which are never loaded as unpickling can run code; delete them to resume "
                          "(the EMA then restarts from the model's weights) or resume from another checkpoint.")
    try:
        accelerator.load_state(path)
    except (OSError, EOFError, RuntimeError, KeyError, ValueError, pickle.UnpicklingError) as error:
        reason = " ".join(f"{type(error).__name__}: {error}".split())[:300]
        raise DAKTerError(f"checkpoint {path} cannot be resumed ({reason}); it is incomplete or was written by a run "
                          "with other model / optimiser settings: resume from another checkpoint-<step> with the "
                          "settings of the run that wrote it.") from error
    if ema_model is not None:
        _ema_from_safetensors(ema_model, os.path.join(path, EMA_WEIGHTS_NAME))
    return step


def resolve_resume_checkpoint(output_dir: str | os.PathLike, resume_from_checkpoint: str | None) -> str | None:
    """
    The checkpoint directory to resume from, or `None` to start afresh.

    Args:
        output_dir (`str`): the run's output directory.
        resume_from_checkpoint (`str`, *optional*): `"latest"` (the newest `checkpoint-<step>` of `output_dir`, or
            `None` when there is none), a path, or the name of a checkpoint inside `output_dir`.

    Raises:
        [`MissingCheckpointError`] (a `FileNotFoundError`): when an explicit checkpoint does not exist.
    """
    if resume_from_checkpoint is None:
        return None
    if resume_from_checkpoint == "latest":
        checkpoints = list_checkpoints(output_dir)
        return checkpoints[-1] if checkpoints else None
    for candidate in (resume_from_checkpoint, os.path.join(output_dir, resume_from_checkpoint)):
        if os.path.isdir(candidate):
            try:
                checkpoint_step(candidate)  # validates the name
            except ValueError as error:
                raise DAKTerError(f"--resume_from_checkpoint: {error}") from None
            return candidate
    raise MissingCheckpointError(
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
