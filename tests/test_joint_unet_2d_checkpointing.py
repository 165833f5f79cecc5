"""Gradient checkpointing of `JointUNet2DModel`: off by default, same loss and gradients when on (both architectures,
per-modality timesteps), really recomputes whole blocks."""

import pytest
import torch
from diffusers.models.resnet import ResnetBlock2D

from dakter_hf import JointUNet2DModel


# Two levels, attention in the lower one, so that plain, attention and middle blocks are all checkpointed.
TINY = dict(sample_size=16, num_classes=3, label_scale=0.5, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
            norm_num_groups=4, layers_per_block=1)


def loss_and_gradients(model, checkpointing: bool, resnet_calls: list | None = None, **timesteps):
    if checkpointing:
        model.enable_gradient_checkpointing()
    else:
        model.disable_gradient_checkpointing()
    model.zero_grad(set_to_none=True)
    generator = torch.Generator().manual_seed(1)
    image = torch.randn(2, 1, 16, 16, generator=generator)
    label = torch.randn(2, 3, 16, 16, generator=generator)
    out = model(image, label, torch.tensor([5, 900]), **timesteps)
    loss = out.image.square().mean() + torch.nn.functional.cross_entropy(out.label_logits, label.softmax(1))
    forward_calls = len(resnet_calls) if resnet_calls is not None else None
    loss.backward()
    grads = {name: p.grad.clone() for name, p in model.named_parameters()}
    return loss.detach(), grads, forward_calls


def count_resnet_calls(model) -> list:
    calls = []
    for module in model.modules():
        if isinstance(module, ResnetBlock2D):
            module.register_forward_pre_hook(lambda *_: calls.append(1))  # a post-hook would miss the
            # recomputation, which stops early once it has rebuilt the saved tensors
    return calls


@pytest.mark.parametrize("architecture", ["dual", "concat"])
@pytest.mark.parametrize("per_modality", [False, True])
def test_checkpointing_gives_the_same_loss_and_gradients(architecture, per_modality):
    torch.manual_seed(0)
    model = JointUNet2DModel(**TINY, architecture=architecture, dropout=0.1,
                             per_modality_timesteps=per_modality).train()
    timesteps = {"label_timestep": torch.tensor([0, 300])} if per_modality else {}
    # Open the zero-initialised exchange paths (and second time embeddings), so that gradients flow between the
    # branches as in a trained model.
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    torch.manual_seed(2)
    loss_plain, grads_plain, _ = loss_and_gradients(model, checkpointing=False, **timesteps)
    torch.manual_seed(2)  # dropout draws the same masks; checkpointing replays them in the recomputation
    loss_ckpt, grads_ckpt, _ = loss_and_gradients(model, checkpointing=True, **timesteps)
    assert torch.equal(loss_plain, loss_ckpt)
    assert grads_plain.keys() == grads_ckpt.keys()
    for name in grads_plain:
        torch.testing.assert_close(grads_ckpt[name], grads_plain[name], rtol=1e-5, atol=1e-7, msg=name)


def test_checkpointing_is_off_by_default_and_recomputes_every_resnet_when_on():
    torch.manual_seed(0)
    model = JointUNet2DModel(**TINY).train()
    assert not model.is_gradient_checkpointing
    calls = count_resnet_calls(model)
    num_resnets = sum(isinstance(m, ResnetBlock2D) for m in model.modules())

    _, _, forward_calls = loss_and_gradients(model, checkpointing=False, resnet_calls=calls)
    assert forward_calls == len(calls) == num_resnets  # no recomputation in the backward pass

    calls.clear()
    _, _, forward_calls = loss_and_gradients(model, checkpointing=True, resnet_calls=calls)
    assert model.is_gradient_checkpointing
    # Whole blocks are recomputed in the backward pass: every ResNet (the middle blocks' first ones too) runs twice,
    # and no block checkpoints its ResNets again inside (that would run them three times).
    assert forward_calls == num_resnets and len(calls) == 2 * num_resnets
    assert not any(getattr(m, "gradient_checkpointing", False) for m in model.modules() if m is not model)

    # Without gradients (sampling) nothing is checkpointed: each ResNet runs once.
    calls.clear()
    with torch.no_grad():
        model(torch.zeros(1, 1, 16, 16), torch.zeros(1, 3, 16, 16), 10)
    assert len(calls) == num_resnets

    model.disable_gradient_checkpointing()
    assert not model.is_gradient_checkpointing


def test_checkpointing_setting_is_not_saved_in_the_config(tmp_path):
    torch.manual_seed(0)
    model = JointUNet2DModel(**TINY)
    model.enable_gradient_checkpointing()
    model.save_pretrained(tmp_path)
    assert not JointUNet2DModel.from_pretrained(tmp_path).is_gradient_checkpointing
