import json

import pytest
import torch

from dakter_hf import JointUNet2DModel, JointUNet2DOutput

from tiny_models import TINY_UNET as TINY


def tiny_model(**overrides):
    torch.manual_seed(0)
    return JointUNet2DModel(**{**TINY, **overrides}).eval()


def inputs(batch=2, seed=0, size=16, classes=3):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(batch, 1, size, size, generator=generator), torch.randn(batch, classes, size, size,
                                                                                 generator=generator)


@pytest.mark.parametrize("architecture", ["dual", "concat"])
def test_forward_shapes_and_output_dataclass(architecture):
    model = tiny_model(architecture=architecture)
    image, label = inputs()
    out = model(image, label, torch.tensor([3, 700]))
    assert isinstance(out, JointUNet2DOutput)
    assert out.image.shape == (2, 1, 16, 16) and out.label_logits.shape == (2, 3, 16, 16)
    as_tuple = model(image, label, 3, return_dict=False)
    assert isinstance(as_tuple, tuple) and len(as_tuple) == 2
    # The output dataclass can be built by keyword.
    assert JointUNet2DOutput(image=out.image, label_logits=out.label_logits).image is out.image


def test_dual_branches_are_independent_at_initialisation_and_exchange_when_trained():
    model = tiny_model(architecture="dual")
    image, label = inputs(seed=1)
    _, other_label = inputs(seed=2)
    with torch.no_grad():
        a, b = model(image, label, 10), model(image, other_label, 10)
        assert torch.equal(a.image, b.image), "the image branch must ignore the label at initialisation"
        other_image, _ = inputs(seed=3)
        c = model(other_image, label, 10)
        assert torch.equal(a.label_logits, c.label_logits), "the label branch must ignore the image at init"
        for conv in list(model.label_to_image) + list(model.image_to_label):
            torch.nn.init.normal_(conv.weight, std=0.1)
        a, b = model(image, label, 10), model(image, other_label, 10)
        assert not torch.allclose(a.image, b.image), "a trained exchange carries label features to the image"


def test_concat_mixes_modalities_from_the_start():
    model = tiny_model(architecture="concat")
    image, label = inputs(seed=1)
    _, other_label = inputs(seed=2)
    with torch.no_grad():
        assert not torch.allclose(model(image, label, 10).image, model(image, other_label, 10).image)


@pytest.mark.parametrize("architecture", ["dual", "concat"])
def test_save_and_load_round_trip_is_bit_exact(tmp_path, architecture):
    model = tiny_model(architecture=architecture, label_scale=0.528)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "diffusion_pytorch_model.safetensors").exists()
    assert not list(tmp_path.glob("*.bin"))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["label_scale"] == 0.528 and config["architecture"] == architecture
    assert config["_class_name"] == "JointUNet2DModel"
    loaded = JointUNet2DModel.from_pretrained(tmp_path).eval()
    original, restored = model.state_dict(), loaded.state_dict()
    assert original.keys() == restored.keys()
    assert all(torch.equal(original[k], restored[k]) for k in original)
    image, label = inputs()
    with torch.no_grad():
        assert torch.equal(model(image, label, 5).image, loaded(image, label, 5).image)


def test_every_constructor_argument_is_saved():
    model = tiny_model(prediction_type="epsilon", dropout=0.1, act_fn="silu", attention_head_dim=4)
    import inspect

    arguments = set(inspect.signature(JointUNet2DModel.__init__).parameters) - {"self"}
    assert arguments <= set(model.config.keys())
    assert model.config.prediction_type == "epsilon" and model.config.attention_head_dim == 4


def test_gradients_reach_both_branches():
    model = tiny_model(architecture="dual").train()
    image, label = inputs()
    out = model(image, label, torch.tensor([1, 2]))
    (out.image.square().mean() + out.label_logits.square().mean()).backward()
    assert model.image_branch.conv_in.weight.grad.abs().sum() > 0
    assert model.label_branch.conv_in.weight.grad.abs().sum() > 0
    # Zero convolutions receive gradient through their weights, so the exchange can open during training.
    assert model.label_to_image[0].weight.grad.abs().sum() > 0


@pytest.mark.parametrize(
    "overrides, message",
    [
        (dict(num_classes=1), "num_classes"),
        (dict(label_scale=0.0), "label_scale"),
        (dict(label_scale=-0.5), "label_scale"),
        (dict(sample_size=15), "divisible"),
        (dict(sample_size=(16, 9)), "divisible"),
        (dict(architecture="triple"), "architecture"),
        (dict(prediction_type="v_prediction"), "prediction_type"),
        (dict(block_out_channels=(8, 16, 32)), "one entry per level"),
        (dict(down_block_types=("DownBlock2D", "CrossAttnDownBlock2D")), "down_block_types"),
        (dict(block_out_channels=(6, 16)), "norm_num_groups"),
    ],
)
def test_construction_rejects_bad_config(overrides, message):
    with pytest.raises(ValueError, match=message):
        JointUNet2DModel(**{**TINY, **overrides})


def test_forward_rejects_mismatched_inputs():
    model = tiny_model()
    image, label = inputs()
    with pytest.raises(ValueError, match="image"):
        model(torch.randn(2, 3, 16, 16), label, 1)
    with pytest.raises(ValueError, match="label"):
        model(image, label[:, :2], 1)
    with pytest.raises(ValueError, match="label"):
        model(image, label[:1], 1)


def test_non_square_samples():
    model = tiny_model(sample_size=(16, 8))
    out = model(torch.randn(1, 1, 16, 8), torch.randn(1, 3, 16, 8), 0)
    assert out.label_logits.shape == (1, 3, 16, 8)


def test_attention_trains_in_float32_under_cpu_autocast_and_samples_in_bfloat16(monkeypatch):
    # The CPU backward of bf16 scaled-dot-product attention is ~11x slower than float32 (torch 2.13): training under
    # CPU autocast runs the attention blocks in float32; inference and float32 runs keep the dtype they are given.
    seen = []
    sdpa = torch.nn.functional.scaled_dot_product_attention

    def spy(query, key, value, *args, **kwargs):
        seen.append(query.dtype)
        return sdpa(query, key, value, *args, **kwargs)

    monkeypatch.setattr(torch.nn.functional, "scaled_dot_product_attention", spy)
    warnings = []
    monkeypatch.setattr("diffusers.models.attention_processor.logger.warning", warnings.append)
    model = tiny_model().train()
    image, label = inputs()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(image, label, torch.tensor([3, 700]))
    assert seen and set(seen) == {torch.float32}
    (out.image.float().square().mean() + out.label_logits.float().square().mean()).backward()
    grads = [p.grad for p in model.parameters() if p.grad is not None]
    assert grads and all(torch.isfinite(g).all() for g in grads)

    seen.clear()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        sampled = model.eval()(image, label, torch.tensor([3, 700]))
    assert set(seen) == {torch.bfloat16} and sampled.image.dtype == torch.bfloat16

    seen.clear()
    with torch.no_grad():
        model(image, label, 3)
    assert set(seen) == {torch.float32}
    assert warnings == [], "every keyword the attention blocks pass (temb) reaches the wrapped processor"
