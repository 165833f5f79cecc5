"""`dakter env`: the versions and hardware to paste into a bug report (as `diffusers-cli env`)."""

import argparse
import importlib.metadata
import os
import platform
import sys

import torch

import dakter_hf
from dakter_hf.precision import cpu_has_native_bf16, cpu_model


#: Packages whose versions are reported, in this order (`not installed` when absent).
PACKAGES = ("torch", "diffusers", "transformers", "accelerate", "datasets", "huggingface_hub", "safetensors",
            "evaluate", "gradio", "tensorboard", "wandb", "trackio")


def _version(package: str) -> str:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def _accelerator() -> str:
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return f"CUDA {torch.version.cuda} ({torch.cuda.device_count()}: {names})"
    if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
        return "MPS (Apple)"
    if hasattr(torch, "xpu") and torch.xpu.is_available():
        return f"XPU ({torch.xpu.device_count()})"
    return "none (CPU only)"


def _cpu_bf16() -> str:
    """Whether `--bf16` / `--mixed_precision bf16` can pay on this CPU (BENCHMARKS.md: 7-15x slower without)."""
    native = cpu_has_native_bf16()
    capability = torch.backends.cpu.get_cpu_capability()
    if native is None:
        return f"unknown ({platform.machine()}, {capability})"
    return f"yes ({capability})" if native else f"no ({capability}): bf16 autocast is emulated there, keep fp32"


def environment_info() -> dict[str, str]:
    """The report of `dakter env` as an ordered `{name: value}` mapping."""
    info = {
        "dakter_hf version": dakter_hf.__version__,
        "Platform": platform.platform(),
        "Python version": platform.python_version(),
    }
    info.update({f"{package} version": _version(package) for package in PACKAGES})
    info.update({
        "torch threads (intra-op / inter-op)": f"{torch.get_num_threads()} / {torch.get_num_interop_threads()}",
        "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS", "unset"),
        "CPU": cpu_model(),
        "CPU cores": str(os.cpu_count()),
        "CPU bf16 instructions": _cpu_bf16(),
        "Accelerator": _accelerator(),
    })
    return info


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `dakter env`."""
    parser = argparse.ArgumentParser(prog="dakter env", description=__doc__)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Print the environment report; returns 0."""
    parse_args(argv)
    info = environment_info()
    print("Copy-and-paste the text below in your GitHub issue.\n")
    print("\n".join(f"- {name}: {value}" for name, value in info.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
