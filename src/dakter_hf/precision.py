"""Whether bf16 autocast pays on the device it runs on, and a warning where it does not.

On a CPU, `torch.autocast("cpu", torch.bfloat16)` is fast only with native bf16 instructions (x86: `avx512_bf16`
or AMX). Without them, oneDNN emulates bf16 arithmetic and every convolution and matrix product gets slower, not
faster: on a 2-core AMD EPYC with AVX2 only, a generator training step took 13x its float32 CPU time, a student
step 12x and sampling 7x (BENCHMARKS.md, "bf16 on a CPU without bf16 instructions"). The training, distillation
and generation entry points call [`warn_if_emulated_bf16`], so that a user who passes `--mixed_precision bf16` /
`--dtype bfloat16` on such a machine is told before hours are lost. [`cpu_description`] names the CPU and its
instructions in benchmark and stage records, so that a result says which kind of machine produced it.
"""

import platform
import warnings

import torch


__all__ = ["EmulatedBF16Warning", "cpu_description", "cpu_has_native_bf16", "cpu_model", "warn_if_emulated_bf16"]

_X86 = ("x86_64", "amd64", "i386", "i686")
#: torch's probes of the x86 instructions that make CPU bf16 autocast fast.
_BF16_PROBES = ("_is_avx512_bf16_supported", "_is_amx_tile_supported")


class EmulatedBF16Warning(UserWarning):
    """bf16 autocast was asked for on a CPU that has no bf16 instructions (it runs emulated, slower than float32)."""


def cpu_has_native_bf16() -> bool | None:
    """
    Whether this machine's CPU has instructions that make bf16 autocast fast (`avx512_bf16` or AMX), as torch
    detects them.

    Returns:
        `bool | None`: `True` / `False` on x86 CPUs; `None` where this cannot be told (other architectures, or a
        torch without the probes), in which case nothing is assumed.
    """
    probes = [getattr(getattr(torch, "cpu", None), name, None) for name in _BF16_PROBES]
    if platform.machine().lower() not in _X86 or any(probe is None for probe in probes):
        return None
    return any(bool(probe()) for probe in probes)


def cpu_model() -> str:
    """The CPU's model name from `/proc/cpuinfo` (Linux), else what `platform` knows (often only the architecture)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def cpu_description() -> dict:
    """
    The CPU a result was measured on: `{"cpu_model", "cpu_capability", "cpu_bf16_instructions"}` (model name, the
    vector instruction set torch dispatches to, e.g. `"AVX2"` / `"AVX512"`, and [`cpu_has_native_bf16`]). The family
    name does not tell the instructions (an "AMD EPYC" with AVX2 only ran bf16 7-15x slower than fp32, one with
    `avx512_bf16` ran it faster), so they are recorded beside it.
    """
    return {
        "cpu_model": cpu_model(),
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "cpu_bf16_instructions": cpu_has_native_bf16(),
    }


def warn_if_emulated_bf16(device_type: str, dtype: str | None, flag: str) -> bool:
    """
    Warn ([`EmulatedBF16Warning`]) when `dtype` is bf16 autocast on a CPU without bf16 instructions.

    Args:
        device_type (`str`): the device the autocast runs on (`"cpu"`, `"cuda"`, ...); only `"cpu"` is checked.
        dtype (`str | None`): the precision asked for: `"bf16"` / `"bfloat16"` are checked, anything else is not.
        flag (`str`): the option that asked for it, named in the warning (e.g. `"--mixed_precision bf16"`).

    Returns:
        `bool`: whether a warning was given.
    """
    if device_type != "cpu" or dtype not in ("bf16", "bfloat16") or cpu_has_native_bf16() is not False:
        return False
    capability = torch.backends.cpu.get_cpu_capability()
    warnings.warn(
        f"{flag}: this CPU ({capability}) has no bf16 instructions (avx512_bf16 or AMX), so torch emulates bf16 and "
        "the run gets slower than in float32, not faster (on an AVX2-only CPU a generator training step took 13x "
        "its float32 CPU time, a student step 12x, sampling 7x; BENCHMARKS.md). Drop the option (float32) here.",
        EmulatedBF16Warning,
        stacklevel=2,
    )
    return True
