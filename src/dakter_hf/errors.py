"""The one error type the command-line tools turn into a one-line message (`DAKTerError`) and its specific kinds.

Library code raises these for problems of the user's input or environment (a bad file, a busy output directory, a
diverged run); the commands (`dakter_hf.commands`) print `error: <message>` on stderr and exit with code 2 instead
of a traceback. Anything else is a bug and keeps its traceback.
"""


class DAKTerError(Exception):
    """A problem of the user's input or environment; the message names the file or argument and what was expected."""


class UsageError(DAKTerError, ValueError):
    """Arguments that cannot work, together or with what is already on disk (e.g. resuming with other settings)."""


class OutputExistsError(DAKTerError, FileExistsError):
    """An output would replace something that must not be replaced (without `--overwrite`, or not a tool's own)."""


class OutputLockedError(DAKTerError):
    """Another run holds the lock of an output directory."""


class NonFiniteError(DAKTerError):
    """A loss, gradient, weight or model output is NaN or infinite (a diverged run); nothing non-finite is saved."""


def check_finite_parameters(model, what: str, advice: str | None = None) -> None:
    """Raise [`NonFiniteError`] naming the first parameter of `model` (a `torch.nn.Module`) that holds a NaN or an
    infinity.

    Args:
        model (`torch.nn.Module`): the model about to be saved, evaluated, reported or sampled from.
        what (`str`): what is checked, for the message (e.g. `"the model at step 120"`).
        advice (`str`, *optional*): what to do about it (default: a diverged training run's advice).
    """
    for name, param in model.named_parameters():
        if not bool(param.detach().isfinite().all()):
            advice = advice or ("the run diverged, so it is not saved: lower --learning_rate (or raise "
                                "--lr_warmup_steps) and resume from the last checkpoint")
            raise NonFiniteError(f"{what} has non-finite weights (first: {name}): {advice}.")
