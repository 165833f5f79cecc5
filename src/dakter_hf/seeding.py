"""Reproducible random streams for training loops that resume exactly on any number of processes.

Accelerate saves objects registered with `accelerator.register_for_checkpointing` from the main process only, so a
random generator carried through a run would come back on every process with the main process's state after a
resume. Deriving a fresh generator from `(seed, step, process_index)` leaves no state to save: a resumed run draws
exactly what an uninterrupted one would, on every process, and processes never share draws.
"""

import torch


_MODULUS = 2**63 - 1


def step_generator(seed: int, step: int, process_index: int = 0) -> torch.Generator:
    """
    The CPU `torch.Generator` of one step of one process, a pure function of `(seed, step, process_index)`.

    Args:
        seed (`int`): the run's seed.
        step (`int`): the step (or micro-batch) counter, counted from the start of the run.
        process_index (`int`, *optional*, defaults to 0): `accelerator.process_index`.
    """
    if step < 0 or process_index < 0:
        raise ValueError(f"`step` and `process_index` must be >= 0, got {step} and {process_index}.")
    return torch.Generator().manual_seed((seed * 1_000_003 + step * 7_919 + process_index * 104_729) % _MODULUS)
