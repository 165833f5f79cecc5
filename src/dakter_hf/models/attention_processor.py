"""`Float32BackwardAttnProcessor`: the attention of [`JointUNet2DModel`] in float32 when it is trained on a CPU under
autocast to a reduced precision."""

import torch
from diffusers.models.attention_processor import AttnProcessor2_0


class Float32BackwardAttnProcessor:
    r"""
    Runs a diffusers attention processor in float32 while gradients are recorded under CPU autocast (bf16 / fp16),
    and as it is everywhere else (inference, float32 training, GPUs).

    Why: with torch 2.13 on CPU, the backward pass of `scaled_dot_product_attention` in bfloat16 took 11x its
    float32 time, 29% of a bf16 generator training step (profiled 2026-12-06 on a 2-core Xeon with AMX; BENCHMARKS.md,
    issue #25); the forward pass alone is fast in bfloat16, so sampling keeps it. The block's output is float32, which
    the next autocast layer casts back to the reduced precision.

    Parameters:
        processor (*optional*): the wrapped processor, `AttnProcessor2_0()` by default.
    """

    def __init__(self, processor=None):
        self.processor = processor if processor is not None else AttnProcessor2_0()

    def __call__(self, attn, hidden_states: torch.Tensor, encoder_hidden_states: torch.Tensor | None = None,
                 attention_mask: torch.Tensor | None = None, temb: torch.Tensor | None = None) -> torch.Tensor:
        # (named arguments: diffusers' `Attention` passes on only the keyword arguments a processor's signature names)
        tensors = (hidden_states, encoder_hidden_states, attention_mask, temb)
        if hidden_states.device.type == "cpu" and torch.is_grad_enabled() and torch.is_autocast_enabled("cpu"):
            with torch.autocast("cpu", enabled=False):
                return self.processor(attn, *(t.float() if t is not None and t.is_floating_point() else t
                                              for t in tensors))
        return self.processor(attn, *tensors)
