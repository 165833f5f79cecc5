"""Tests for dakter_hf.distill.students: SegFormer presets, 1-channel SAR input, RGB checkpoint adaptation,
image processor matching the training preprocessing, save/reload round trip."""

import numpy as np
import pytest
import torch
from PIL import Image
from transformers import (
    AutoImageProcessor,
    AutoModelForSemanticSegmentation,
    SegformerForSemanticSegmentation,
)

from dakter_hf.distill import (
    SEGFORMER_PRESETS,
    adapt_input_channels,
    create_image_processor,
    create_student,
    segformer_config,
)


ID2LABEL = {0: "sea", 1: "oil spill"}

# (depths, hidden sizes, decoder hidden size, millions of parameters with a 150-class head, 3 input channels);
# parameters as published for SegFormer-B0..B5 on ADE20K (Xie et al., 2021, Table 1).
PUBLISHED = {
    "b0": ([2, 2, 2, 2], [32, 64, 160, 256], 256, 3.8),
    "b1": ([2, 2, 2, 2], [64, 128, 320, 512], 256, 13.7),
    "b2": ([3, 4, 6, 3], [64, 128, 320, 512], 768, 27.5),
    "b3": ([3, 4, 18, 3], [64, 128, 320, 512], 768, 47.3),
    "b4": ([3, 8, 27, 3], [64, 128, 320, 512], 768, 64.1),
    "b5": ([3, 6, 40, 3], [64, 128, 320, 512], 768, 84.7),
}


@pytest.mark.parametrize("preset", list(PUBLISHED))
def test_presets_have_published_architecture(preset):
    depths, widths, decoder, _ = PUBLISHED[preset]
    config = segformer_config(preset, id2label=ID2LABEL)
    assert list(config.depths) == depths and list(config.hidden_sizes) == widths
    assert config.decoder_hidden_size == decoder
    assert list(config.num_attention_heads) == [1, 2, 5, 8] and list(config.sr_ratios) == [8, 4, 2, 1]
    assert config.num_channels == 1 and config.num_labels == 2
    assert config.id2label == ID2LABEL and config.label2id == {"sea": 0, "oil spill": 1}


@pytest.mark.parametrize("preset", ["b0", "b2"])
def test_preset_parameter_counts_match_published(preset):
    model = create_student(preset, num_labels=150, num_channels=3)
    assert sum(p.numel() for p in model.parameters()) / 1e6 == pytest.approx(PUBLISHED[preset][3], abs=0.05)


def test_tiny_student_single_channel_logits_at_quarter_resolution():
    model = create_student("tiny", id2label=ID2LABEL, image_size=64).eval()
    assert isinstance(model, SegformerForSemanticSegmentation)
    assert list(model.config.hidden_sizes) == SEGFORMER_PRESETS["tiny"]["hidden_sizes"]
    assert model.config.image_size == 64 and model.config.num_channels == 1
    with torch.no_grad():
        logits = model(pixel_values=torch.randn(2, 1, 64, 48)).logits
    assert logits.shape == (2, 2, 16, 12)
    # the model's own loss ignores 255, like dakter_hf.distill.distillation_loss
    labels = torch.full((2, 64, 48), 255)
    labels[:, 0, 0] = 1
    assert torch.isfinite(model(pixel_values=torch.randn(2, 1, 64, 48), labels=labels).loss)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"student": "b9", "num_labels": 2}, r"b9.*tiny.*b5"),
        ({"student": "tiny"}, "num_labels"),
        ({"student": "tiny", "num_labels": 3, "id2label": ID2LABEL}, "num_labels"),
        ({"student": "tiny", "id2label": {0: "a", 2: "b"}}, "id2label"),
        ({"student": "tiny", "num_labels": 2, "image_size": 16}, "image_size"),
        ({"student": "tiny", "num_labels": 2, "num_channels": 0}, "num_channels"),
    ],
)
def test_create_student_errors(kwargs, match):
    with pytest.raises(ValueError, match=match):
        create_student(**kwargs)


def _tiny_rgb_checkpoint(path, num_labels=5):
    torch.manual_seed(0)
    config = segformer_config("tiny", num_labels=num_labels, num_channels=3)
    model = SegformerForSemanticSegmentation(config).eval()
    model.save_pretrained(path)
    return model


def test_pretrained_rgb_checkpoint_adapts_to_one_channel(tmp_path):
    rgb = _tiny_rgb_checkpoint(tmp_path / "rgb")
    student = create_student(str(tmp_path / "rgb"), id2label=ID2LABEL, num_channels=1, image_size=32).eval()
    assert student.config.image_size == 32 and student.config.semantic_loss_ignore_index == 255

    rgb_state, state = rgb.state_dict(), student.state_dict()
    (first_conv,) = [k for k in state if k.endswith("patch_embeddings.proj.weight") and state[k].shape[1] == 1]
    # documented rule: the RGB kernels are summed
    assert torch.allclose(state[first_conv], rgb_state[first_conv].sum(dim=1, keepdim=True))
    assert student.config.num_channels == 1 and student.config.id2label == ID2LABEL
    # the classifier is re-initialised for the new number of labels; everything else is kept
    assert state["decode_head.classifier.weight"].shape[0] == 2
    for key, value in rgb_state.items():
        if key != first_conv and not key.startswith("decode_head.classifier"):
            assert torch.equal(state[key], value), key
    # so a grayscale image gives the same features as the RGB model fed the image replicated to 3 channels
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        expected = rgb.segformer(x.repeat(1, 3, 1, 1), output_hidden_states=True).hidden_states
        actual = student.segformer(x, output_hidden_states=True).hidden_states
    for a, e in zip(actual, expected):
        assert torch.allclose(a, e, atol=1e-5)


def test_adapt_input_channels_to_several_channels_keeps_replicated_response():
    torch.manual_seed(0)
    model = SegformerForSemanticSegmentation(segformer_config("tiny", num_labels=2, num_channels=3)).eval()
    x = torch.randn(1, 1, 32, 32)
    with torch.no_grad():
        before = model(pixel_values=x.repeat(1, 3, 1, 1)).logits
        adapt_input_channels(model, 2)
        after = model(pixel_values=x.repeat(1, 2, 1, 1)).logits
    assert model.config.num_channels == 2
    assert torch.allclose(before, after, atol=1e-5)


def _pil_reference(image: Image.Image, resolution: int) -> np.ndarray:
    resized = np.asarray(image.resize((resolution, resolution), Image.BILINEAR), dtype=np.float64)
    return (resized / 255.0 - 0.5) / 0.5


@pytest.mark.parametrize("shape", [(70, 50), (16, 24), (32, 32)])
def test_image_processor_matches_training_preprocessing(shape):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, shape, dtype=np.uint8), mode="L")
    processor = create_image_processor(32)
    pixel_values = processor(images=image, return_tensors="pt").pixel_values
    assert pixel_values.shape == (1, 1, 32, 32)
    assert np.abs(pixel_values[0, 0].numpy() - _pil_reference(image, 32)).max() < 1e-6
    assert pixel_values.min() >= -1 and pixel_values.max() <= 1


def test_processor_and_model_round_trip_reproduce_predictions(tmp_path):
    torch.manual_seed(0)
    model = create_student("tiny", id2label=ID2LABEL, image_size=32).eval()
    processor = create_image_processor(32)
    model.save_pretrained(tmp_path)
    processor.save_pretrained(tmp_path)

    rng = np.random.default_rng(1)
    images = [Image.fromarray(rng.integers(0, 256, (40, 56), dtype=np.uint8), mode="L") for _ in range(2)]
    reloaded_processor = AutoImageProcessor.from_pretrained(tmp_path)
    reloaded_model = AutoModelForSemanticSegmentation.from_pretrained(tmp_path).eval()
    assert isinstance(reloaded_model, SegformerForSemanticSegmentation)
    assert reloaded_model.config.id2label == ID2LABEL and reloaded_model.config.num_channels == 1

    inputs = processor(images=images, return_tensors="pt")
    reloaded_inputs = reloaded_processor(images=images, return_tensors="pt")
    assert torch.equal(inputs.pixel_values, reloaded_inputs.pixel_values)
    with torch.no_grad():
        outputs = model(**inputs)
        reloaded_outputs = reloaded_model(**reloaded_inputs)
    assert torch.allclose(outputs.logits, reloaded_outputs.logits, atol=1e-6)
    maps = reloaded_processor.post_process_semantic_segmentation(reloaded_outputs, target_sizes=[(40, 56)] * 2)
    assert maps[0].shape == (40, 56)
    original_maps = processor.post_process_semantic_segmentation(outputs, target_sizes=[(40, 56)] * 2)
    assert all(torch.equal(a, b) for a, b in zip(maps, original_maps))


def test_image_processor_errors():
    with pytest.raises(ValueError, match="resolution"):
        create_image_processor(0)
    with pytest.raises(ValueError, match="num_channels"):
        create_image_processor(32, num_channels=0)
