"""Student segmentation models (transformers SegFormer) and their matching image processor.

The student is a plain [`transformers.SegformerForSemanticSegmentation`], so anything trained here is saved,
shared and reloaded with the usual `save_pretrained` / `AutoModelForSemanticSegmentation.from_pretrained`, and
its preprocessing with `AutoImageProcessor.from_pretrained` from the same directory.

Students are built either from a size preset (`"tiny"`, `"b0"`..`"b5"`, the published Mix Transformer
encoders) with random weights, or from a pretrained directory / Hub id. SAR images are single-channel: a
pretrained RGB checkpoint is adapted to `num_channels=1` by **summing** the RGB kernels of the first patch-embedding
convolution. A grayscale image `x` replicated to RGB `(x, x, x)` gives the RGB layer the response
`sum_c W_c * x = (sum_c W_c) * x`, so the summed kernel reproduces the pretrained first-layer response to a
replicated grayscale input exactly (averaging would divide the activations by 3). The decode-head classifier is
re-initialised when the number of labels differs (`ignore_mismatched_sizes=True`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn
from transformers import SegformerConfig, SegformerForSemanticSegmentation
from transformers.image_utils import PILImageResampling
from transformers.models.segformer.modeling_segformer import SegformerOverlapPatchEmbeddings


__all__ = [
    "SEGFORMER_PRESETS",
    "adapt_input_channels",
    "create_image_processor",
    "create_student",
    "segformer_config",
]

_MIT_COMMON = {
    "num_encoder_blocks": 4,
    "sr_ratios": [8, 4, 2, 1],
    "patch_sizes": [7, 3, 3, 3],
    "strides": [4, 2, 2, 2],
    "mlp_ratios": [4, 4, 4, 4],
}
_MIT_WIDE = {"hidden_sizes": [64, 128, 320, 512], "num_attention_heads": [1, 2, 5, 8]}

#: SegFormer size presets. `b0`..`b5` are the published Mix Transformer encoders (Xie et al., NeurIPS 2021;
#: the `nvidia/mit-b*` configs): about 3.8M / 13.7M / 27.5M / 47.3M / 64.1M / 84.7M parameters with a
#: 150-class head. `tiny` (about 0.1M parameters) is for tests and quick CPU runs.
SEGFORMER_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        **_MIT_COMMON,
        "hidden_sizes": [8, 16, 32, 64],
        "num_attention_heads": [1, 1, 2, 4],
        "depths": [1, 1, 1, 1],
        "decoder_hidden_size": 32,
    },
    "b0": {
        **_MIT_COMMON,
        "hidden_sizes": [32, 64, 160, 256],
        "num_attention_heads": [1, 2, 5, 8],
        "depths": [2, 2, 2, 2],
        "decoder_hidden_size": 256,
    },
    "b1": {**_MIT_COMMON, **_MIT_WIDE, "depths": [2, 2, 2, 2], "decoder_hidden_size": 256},
    "b2": {**_MIT_COMMON, **_MIT_WIDE, "depths": [3, 4, 6, 3], "decoder_hidden_size": 768},
    "b3": {**_MIT_COMMON, **_MIT_WIDE, "depths": [3, 4, 18, 3], "decoder_hidden_size": 768},
    "b4": {**_MIT_COMMON, **_MIT_WIDE, "depths": [3, 8, 27, 3], "decoder_hidden_size": 768},
    "b5": {**_MIT_COMMON, **_MIT_WIDE, "depths": [3, 6, 40, 3], "decoder_hidden_size": 768},
}


def _resolve_labels(
    num_labels: int | None, id2label: Mapping[int | str, str] | None
) -> tuple[dict[int, str], dict[str, int]]:
    if id2label is None:
        if num_labels is None or num_labels < 1:
            raise ValueError(f"Pass `id2label` or a `num_labels` >= 1, got num_labels={num_labels}.")
        id2label = {i: f"class_{i}" for i in range(num_labels)}
    id2label = {int(k): str(v) for k, v in id2label.items()}
    if sorted(id2label) != list(range(len(id2label))):
        raise ValueError(f"`id2label` keys must be 0..K-1, got {sorted(id2label)}.")
    if num_labels is not None and num_labels != len(id2label):
        raise ValueError(f"`num_labels`={num_labels} does not match `id2label` with {len(id2label)} entries.")
    if len(set(id2label.values())) != len(id2label):
        raise ValueError(f"`id2label` names must be unique, got {list(id2label.values())}.")
    return id2label, {v: k for k, v in id2label.items()}


def _check_image_size(image_size: int | None, config: SegformerConfig) -> None:
    """Every encoder stage must be at least as large as its sequence-reduction kernel."""
    if image_size is None:
        return
    if image_size < 1:
        raise ValueError(f"`image_size` must be a positive integer, got {image_size}.")
    size = image_size
    for stage, (patch, stride, ratio) in enumerate(zip(config.patch_sizes, config.strides, config.sr_ratios)):
        size = (size + 2 * (patch // 2) - patch) // stride + 1
        if size < ratio:
            raise ValueError(
                f"`image_size`={image_size} is too small for this SegFormer: stage {stage} is {size}x{size}, "
                f"smaller than its sequence-reduction ratio {ratio}. Use an image_size of at least 32."
            )


def segformer_config(
    student: str,
    num_labels: int | None = None,
    id2label: Mapping[int | str, str] | None = None,
    image_size: int | None = None,
    num_channels: int = 1,
    ignore_index: int = 255,
    **config_kwargs: Any,
) -> SegformerConfig:
    """The [`SegformerConfig`] of a size preset.

    Args:
        student (`str`): a key of [`SEGFORMER_PRESETS`] (`"tiny"`, `"b0"`..`"b5"`).
        num_labels (`int`, *optional*): number of classes K (inferred from `id2label` if omitted).
        id2label (`Mapping`, *optional*): class index -> name; `label2id` is set to its inverse.
        image_size (`int`, *optional*): training resolution; checked against the encoder's downsampling and
            stored as `config.image_size` (informational, e.g. for [`create_image_processor`]).
        num_channels (`int`, *optional*, defaults to 1): input channels (1 for SAR).
        ignore_index (`int`, *optional*, defaults to 255): `semantic_loss_ignore_index` of the model's own loss.
        **config_kwargs: overrides of any [`SegformerConfig`] field (e.g. `drop_path_rate`).

    Returns:
        [`SegformerConfig`].
    """
    if student not in SEGFORMER_PRESETS:
        raise ValueError(f"Unknown SegFormer preset `student`={student!r}; valid presets: {list(SEGFORMER_PRESETS)}.")
    if num_channels < 1:
        raise ValueError(f"`num_channels` must be >= 1, got {num_channels}.")
    id2label, label2id = _resolve_labels(num_labels, id2label)
    fields = {**SEGFORMER_PRESETS[student], **config_kwargs}
    if image_size is not None:
        fields["image_size"] = image_size
    config = SegformerConfig(
        num_channels=num_channels,
        id2label=id2label,
        label2id=label2id,
        semantic_loss_ignore_index=ignore_index,
        **fields,
    )
    _check_image_size(image_size, config)
    return config


def _first_patch_embedding(model: SegformerForSemanticSegmentation) -> SegformerOverlapPatchEmbeddings:
    """The patch embedding of the first encoder stage (found by type: the module layout differs across versions)."""
    for module in model.segformer.modules():
        if isinstance(module, SegformerOverlapPatchEmbeddings) and module.proj.in_channels == model.config.num_channels:
            return module
    raise ValueError("Could not find the first patch-embedding convolution of this SegFormer.")


@torch.no_grad()
def adapt_input_channels(
    model: SegformerForSemanticSegmentation, num_channels: int
) -> SegformerForSemanticSegmentation:
    """Change the number of input channels of a (pretrained) SegFormer in place, keeping its first-layer weights.

    Rule (see the module docstring): each of the `N` new input channels gets the **sum** of the old kernels
    divided by `N`; for `N = 1` (SAR) that is the sum of the RGB kernels. The response to an image replicated over
    the channels is therefore unchanged (`sum_j W'_j = sum_c W_c`). The bias is kept. `model.config.num_channels` is
    updated so the model saves and reloads with the new input size.

    Args:
        model ([`SegformerForSemanticSegmentation`]): the model to modify.
        num_channels (`int`): the new number of input channels.

    Returns:
        [`SegformerForSemanticSegmentation`]: the same model.
    """
    if num_channels < 1:
        raise ValueError(f"`num_channels` must be >= 1, got {num_channels}.")
    old_channels = model.config.num_channels
    if num_channels == old_channels:
        return model
    embedding = _first_patch_embedding(model)
    conv = embedding.proj
    weight = conv.weight
    # every new channel gets (sum of the old kernels) / N: for N = 1, the sum of the RGB kernels
    new_weight = weight.sum(dim=1, keepdim=True).repeat(1, num_channels, 1, 1) / num_channels
    new_conv = nn.Conv2d(
        num_channels,
        conv.out_channels,
        kernel_size=conv.kernel_size,
        stride=conv.stride,
        padding=conv.padding,
        bias=conv.bias is not None,
    ).to(device=weight.device, dtype=weight.dtype)
    new_conv.weight.copy_(new_weight)
    if conv.bias is not None:
        new_conv.bias.copy_(conv.bias)
    embedding.proj = new_conv
    model.config.num_channels = num_channels
    return model


def create_student(
    student: str,
    num_labels: int | None = None,
    id2label: Mapping[int | str, str] | None = None,
    image_size: int | None = None,
    num_channels: int = 1,
    ignore_index: int = 255,
    pretrained_kwargs: Mapping[str, Any] | None = None,
    **config_kwargs: Any,
) -> SegformerForSemanticSegmentation:
    """Build a SegFormer student for SAR segmentation.

    Args:
        student (`str`): a size preset of [`SEGFORMER_PRESETS`] (`"tiny"`, `"b0"`..`"b5"`, random
            initialisation), or a pretrained local directory or `org/name` Hub id (e.g. `"nvidia/mit-b0"`).
        num_labels (`int`, *optional*): number of classes K (inferred from `id2label` if omitted).
        id2label (`Mapping`, *optional*): class index -> name (`label2id` is set to the inverse); defaults to
            `class_<i>` names.
        image_size (`int`, *optional*): training resolution, validated against the encoder's downsampling and
            stored as `config.image_size`.
        num_channels (`int`, *optional*, defaults to 1): input channels. A pretrained checkpoint with another
            number of channels is adapted with [`adapt_input_channels`] (RGB -> 1 channel: kernels summed).
        ignore_index (`int`, *optional*, defaults to 255): `config.semantic_loss_ignore_index`.
        pretrained_kwargs (`Mapping`, *optional*): extra arguments of `from_pretrained` (`revision`,
            `cache_dir`, `local_files_only`, ...).
        **config_kwargs: [`SegformerConfig`] overrides (presets) or config attributes passed to
            `from_pretrained` (pretrained).

    Returns:
        [`SegformerForSemanticSegmentation`]: its `logits` are `(B, K, H/4, W/4)` for `(B, num_channels, H, W)`
        inputs.

    Example:

    ```python
    >>> model = create_student("b0", id2label={0: "sea", 1: "oil"}, image_size=256)  # 1-channel, random init
    >>> model = create_student("nvidia/mit-b0", id2label={0: "sea", 1: "oil"})  # RGB kernels summed
    ```
    """
    if student in SEGFORMER_PRESETS:
        config = segformer_config(
            student, num_labels, id2label, image_size, num_channels, ignore_index, **config_kwargs
        )
        return SegformerForSemanticSegmentation(config)

    if not os.path.isdir(student) and "/" not in student:
        # not a directory and not an `org/name` Hub id: most likely a mistyped preset, fail without network calls
        raise ValueError(
            f"Unknown SegFormer preset `student`={student!r}; valid presets: {list(SEGFORMER_PRESETS)} (or pass a "
            "pretrained directory or an `org/name` Hub id)."
        )
    id2label, label2id = _resolve_labels(num_labels, id2label)
    try:
        model = SegformerForSemanticSegmentation.from_pretrained(
            student,
            id2label=id2label,
            label2id=label2id,
            semantic_loss_ignore_index=ignore_index,
            ignore_mismatched_sizes=True,
            **config_kwargs,
            **dict(pretrained_kwargs or {}),
        )
    except (OSError, ValueError) as error:
        raise ValueError(
            f"`student`={student!r} is neither a SegFormer preset {list(SEGFORMER_PRESETS)} nor a loadable "
            f"pretrained directory / Hub id: {error}"
        ) from error
    _check_image_size(image_size, model.config)
    if image_size is not None:  # not a SegformerConfig field, so from_pretrained would not route it to the config
        model.config.image_size = image_size
    return adapt_input_channels(model, num_channels)


def create_image_processor(resolution: int, num_channels: int = 1, **kwargs: Any):
    """The SegFormer image processor matching the training preprocessing of the students.

    `processor(images=<PIL "L" image>, return_tensors="pt").pixel_values` has shape `(1, 1, R, R)` and equals
    `(PIL_bilinear_resize(image, (R, R)) / 255 - 0.5) / 0.5`: resize to `(resolution, resolution)` with PIL's
    bilinear filter, rescale by 1/255, normalise with mean 0.5 and std 0.5 per channel (values in [-1, 1]), no
    RGB conversion. Segmentation maps passed as `segmentation_maps=` are resized with nearest neighbours.

    The PIL backend is used (`SegformerImageProcessorPil` where it exists, transformers >= 5) because it is
    bit-exact with PIL's resize. Saved with `save_pretrained`, it reloads with `AutoImageProcessor.from_pretrained`;
    when torchvision is installed, pass `backend="pil"` there to keep the exact PIL resize (the torchvision backend
    may differ by one grey level after resizing).

    Args:
        resolution (`int`): output height and width.
        num_channels (`int`, *optional*, defaults to 1): channels of the input images (length of the mean/std).
        **kwargs: overrides of the processor's arguments.

    Returns:
        `SegformerImageProcessorPil` (or `SegformerImageProcessor` on transformers < 5).
    """
    if resolution < 1:
        raise ValueError(f"`resolution` must be a positive integer, got {resolution}.")
    if num_channels < 1:
        raise ValueError(f"`num_channels` must be >= 1, got {num_channels}.")
    try:
        from transformers.models.segformer import SegformerImageProcessorPil as processor_class
    except ImportError:  # transformers < 5: SegformerImageProcessor is the PIL/numpy implementation
        from transformers import SegformerImageProcessor as processor_class
    arguments = {
        "do_resize": True,
        "size": {"height": resolution, "width": resolution},
        "resample": PILImageResampling.BILINEAR,
        "do_rescale": True,
        "rescale_factor": 1 / 255,
        "do_normalize": True,
        "image_mean": [0.5] * num_channels,
        "image_std": [0.5] * num_channels,
        "do_reduce_labels": False,
        "do_convert_rgb": False,
        **kwargs,
    }
    return processor_class(**arguments)
