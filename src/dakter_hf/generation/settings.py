"""What a generated row depends on: the settings recorded in the manifest of a run and in the dataset card.

Besides the model and the sampler, the batch size, the memory layout of the UNet's kernels, its compute dtype and
whether it is compiled decide the floating-point rounding of the samples, so they are settings too: an interrupted
run resumes only with the same ones.
"""

import hashlib
import json
from collections.abc import Mapping
from typing import Any

import torch


def unet_fingerprint(unet: torch.nn.Module) -> str:
    """SHA-256 of a model's parameters and buffers: a resumed run must continue with the same weights.

    The bytes are read in row-major order whatever the memory layout (which [`unet_memory_format`] reports).
    """
    digest = hashlib.sha256()
    for name, tensor in sorted(unet.state_dict().items()):
        digest.update(name.encode())
        # reshape(-1): a channels-last 1x1 kernel counts as contiguous but its last stride is not 1
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()


def unet_memory_format(unet: torch.nn.Module) -> str:
    """The memory layout of a model's convolution kernels: `"channels_last"`, `"contiguous"` or `"mixed"`.

    The layout decides which kernels run, hence the floating-point rounding of the samples (about 1e-6, like the batch
    size), so it is part of the generation settings. Kernels laid out the same either way (1x1 kernels, kernels of
    one input channel) are ignored.
    """
    layouts = set()
    for parameter in unet.parameters():
        if parameter.dim() != 4:
            continue
        channels_last = parameter.is_contiguous(memory_format=torch.channels_last)
        if channels_last != parameter.is_contiguous():
            layouts.add("channels_last" if channels_last else "contiguous")
    if len(layouts) > 1:
        return "mixed"
    return layouts.pop() if layouts else "contiguous"


def generation_settings(
    pipe,
    batch_size: int,
    seed: int,
    num_inference_steps: int,
    soft_label_temperature: float,
    eta: float,
    soft_label_dtype: str,
    id2label: Mapping[int, str],
    dtype: str = "float32",
) -> dict[str, Any]:
    """Everything a generated row depends on (recorded in the manifest of a run and in the dataset card; the
    batch size is among them because it decides the floating-point rounding, see [`generate_rows`])."""
    scheduler_config = json.loads(pipe.scheduler.to_json_string())
    scheduler_config.pop("_diffusers_version", None)
    unet_config = {k: v for k, v in dict(pipe.unet.config).items() if not k.startswith("_")}
    settings = {
        "unet_config": unet_config,
        "unet_fingerprint": unet_fingerprint(pipe.unet),
        "label_scale": float(pipe.unet.config.label_scale),
        "scheduler": type(pipe.scheduler).__name__,
        "scheduler_config": scheduler_config,
        "num_inference_steps": int(num_inference_steps),
        "batch_size": int(batch_size),
        "seed": int(seed),
        "soft_label_temperature": float(soft_label_temperature),
        "eta": float(eta),
        "soft_label_dtype": soft_label_dtype,
        "id2label": {str(k): v for k, v in id2label.items()},
    }
    memory_format = unet_memory_format(pipe.unet)
    if memory_format != "contiguous":  # recorded only then, so that runs begun before this key existed still resume
        settings["unet_memory_format"] = memory_format
    if dtype != "float32":  # likewise: the denoiser's compute dtype changes the rounding of every row
        settings["compute_dtype"] = dtype
    if getattr(pipe.unet, "_compiled_call_impl", None) is not None:  # `unet.compile()`: fused kernels round apart
        settings["unet_compiled"] = True
    return json.loads(json.dumps(settings))  # JSON-normalised (tuples -> lists), as read back from the manifest
