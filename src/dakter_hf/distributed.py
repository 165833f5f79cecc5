"""Guards for multi-process launches (`accelerate launch`, `torchrun`) shared by the training and generation scripts."""

import os


def check_world_size(state) -> None:
    """
    Refuse to run when the launcher started more processes than Accelerate sees.

    `torchrun` on a machine without GPU starts `WORLD_SIZE` processes, but Accelerate only sets up a CPU process group
    when told to use the CPU (`ACCELERATE_USE_CPU=1`, or `Accelerator(cpu=True)`); otherwise every process believes
    it is the only one and they all train (or generate) and write the same files. (`accelerate launch --cpu
    --num_processes N` starts a single process unless MPI is used.)

    Args:
        state: an `accelerate.Accelerator` or `accelerate.PartialState`.

    Raises:
        `RuntimeError`: when `WORLD_SIZE` differs from `state.num_processes`.
    """
    launched = int(os.environ.get("WORLD_SIZE", "1"))
    if launched != state.num_processes:
        raise RuntimeError(
            f"The launcher started {launched} processes (WORLD_SIZE) but Accelerate runs {state.num_processes} "
            f"({state.distributed_type}): the processes would repeat each other's work and write the same files. "
            f"On CPU, launch with `ACCELERATE_USE_CPU=1 torchrun --nproc_per_node {launched} ...`."
        )
