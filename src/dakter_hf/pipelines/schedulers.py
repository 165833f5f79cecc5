"""The samplers a [`DAKTerPipeline`] is used with by name (`dakter-generate --scheduler`)."""

from diffusers import (
    DDIMScheduler,
    DDPMScheduler,
    DPMSolverMultistepScheduler,
    EulerDiscreteScheduler,
    UniPCMultistepScheduler,
)


#: Scheduler names accepted by [`set_scheduler`] and `dakter-generate --scheduler`.
SCHEDULERS = {
    "ddpm": DDPMScheduler,
    "ddim": DDIMScheduler,
    "dpmsolver": DPMSolverMultistepScheduler,  # DPM-Solver++ (its default `algorithm_type="dpmsolver++"`)
    "euler": EulerDiscreteScheduler,
    "unipc": UniPCMultistepScheduler,
}


def set_scheduler(pipe, name: str):
    """Replace the pipeline's scheduler by the one called `name` (see [`SCHEDULERS`]), built from the current
    scheduler's config so the noise schedule is kept. The pipeline converts the model's predictions for any
    `prediction_type`. Returns the pipeline."""
    if name not in SCHEDULERS:
        raise ValueError(f"`scheduler` must be one of {sorted(SCHEDULERS)}, got {name!r}.")
    pipe.scheduler = SCHEDULERS[name].from_config(pipe.scheduler.config)
    return pipe
