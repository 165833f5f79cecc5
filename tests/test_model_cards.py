"""Cards of the artefacts (`dakter_hf.model_cards`): their metadata survive a round trip through
`huggingface_hub.ModelCard` / `DatasetCard` (what the Hub indexes), and the student card's usage snippet runs."""

import math
import re

import numpy as np
import PIL.Image
import pytest
import torch
from huggingface_hub import DatasetCard, ModelCard

from dakter_hf.model_cards import (
    QUALITY_KEY,
    joint_diffusion_model_card,
    make_dataset_card,
    make_student_card,
    read_card_metadata,
)


ID2LABEL = {0: "sea", 1: "oil_spill"}
DISTILL_ARGS = {"dataset": "sos", "sensor": "sentinel", "data_dir": "/data/sos", "student": "nvidia/mit-b0",
                "mode": "soft", "generated_dataset": "org/generated-pairs", "generated_ratio": "auto",
                "max_train_steps": 300, "train_batch_size": 8, "learning_rate": 6e-4, "augment": True, "seed": 1,
                "eval_split": "test", "resolution": 64, "kd_temperature": 1.0}


def student_card(**overrides):
    kwargs = dict(id2label=ID2LABEL, metrics={"mean_iou": 0.71234, "iou_sea": 0.95, "iou_oil_spill": 0.47468},
                  args=DISTILL_ARGS, step=250, generated_ratio=0.5, num_train_real=150, num_train_generated=600,
                  base_model="nvidia/mit-b0", license="cc-by-4.0", repo_id="org/student")
    kwargs.update(overrides)
    return make_student_card(**kwargs)


def test_student_card_metadata_round_trip():
    card = ModelCard(str(student_card()))  # parsed back from the text, as the Hub reads it
    data = card.data
    assert data.pipeline_tag == "image-segmentation" and data.library_name == "transformers"
    assert data.license == "cc-by-4.0" and data.base_model == "nvidia/mit-b0"
    assert data.datasets == ["sos-sentinel", "org/generated-pairs"]
    results = {r.metric_name: r for r in data.eval_results}
    assert set(results) == {"mIoU", "IoU sea", "IoU oil_spill"}
    assert results["mIoU"].metric_value == pytest.approx(0.7123)
    assert results["IoU oil_spill"].metric_type == "iou"
    assert {r.task_type for r in data.eval_results} == {"image-segmentation"}
    assert {(r.dataset_type, r.dataset_split) for r in data.eval_results} == {("sos-sentinel", "test")}
    assert "model-index" in data.to_dict()
    text = card.text
    assert "soft" in text and "org/generated-pairs" in text and "600 pairs" in text and "0.500" in text
    assert "step 250" in text and "71.23" in text


def test_student_card_without_generated_data_or_scores():
    args = {**DISTILL_ARGS, "mode": "real", "student": "b0"}
    card = ModelCard(str(student_card(args=args, metrics={"mean_iou": 0.5, "iou_sea": 0.99,
                                                           "iou_oil_spill": math.nan}, base_model=None)))
    assert card.data.datasets == ["sos-sentinel"]  # the generated dataset of a real-only run is not training data
    assert card.data.base_model is None
    assert {r.metric_name for r in card.data.eval_results} == {"mIoU", "IoU sea"}  # NaN IoU left out
    unevaluated = ModelCard(str(student_card(metrics=None)))
    assert unevaluated.data.eval_results is None and "not evaluated" in unevaluated.text


def test_student_card_usage_snippet_runs(tmp_path):
    from dakter_hf.distill import create_image_processor, create_student
    from dakter_hf.distill.training import save_student

    torch.manual_seed(0)
    save_student(create_student("tiny", id2label=ID2LABEL, image_size=32, num_channels=1),
                 create_image_processor(32), tmp_path / "student")
    PIL.Image.fromarray(np.random.default_rng(0).integers(0, 255, (40, 48), dtype=np.uint8)).save(
        tmp_path / "scene.png")
    text = student_card(repo_id=None).text.replace("path/to/this/directory", str(tmp_path / "student"))
    code = re.search(r"```python\n(.*?)```", text, re.S).group(1).replace("scene.png", str(tmp_path / "scene.png"))
    namespace = {}
    exec(code, namespace)
    assert tuple(namespace["mask"].shape) == (40, 48)


def test_dataset_card_carries_the_generator_metadata(tmp_path):
    settings = {"seed": 0, "id2label": {"0": "sea", "1": "oil_spill"}, "label_scale": 0.4, "scheduler": "DDIM",
                "num_inference_steps": 10, "batch_size": 4, "soft_label_temperature": 1.0, "eta": 0.0,
                "unet_fingerprint": "ab" * 32}
    generator = {"license": "cc-by-4.0", "datasets": ["sos-sentinel"], QUALITY_KEY: {"alignment_miou": 0.61}}
    card = make_dataset_card(settings, 1500, "org/generator", generator_metadata=generator)
    card.save(tmp_path / "README.md")
    data = DatasetCard.load(tmp_path / "README.md").data
    assert data.license == "cc-by-4.0" and data.source_datasets == ["sos-sentinel"]
    assert data.annotations_creators == ["machine-generated"] and data.task_categories == ["image-segmentation"]
    assert data.size_categories == ["1K<n<10K"]
    assert data.to_dict()[QUALITY_KEY] == {"alignment_miou": 0.61}
    bare = make_dataset_card(settings, 10, None).data
    assert bare.license == "apache-2.0" and bare.source_datasets == [] and QUALITY_KEY not in bare.to_dict()


def test_generator_card_metadata(tmp_path):
    unet_config = {"sample_size": 32, "label_scale": 0.4, "num_classes": 2, "architecture": "dual",
                   "block_out_channels": [8, 16], "prediction_type": "sample"}
    text = joint_diffusion_model_card(unet_config, {"dataset": "sos", "sensor": "palsar"}, 150, ID2LABEL, 100,
                                      {}, 1000, quality={"alignment_miou": 0.5})
    (tmp_path / "README.md").write_text(text)
    metadata = read_card_metadata(tmp_path)
    assert metadata["license"] == "apache-2.0" and metadata["datasets"] == ["sos-palsar"]
    assert metadata[QUALITY_KEY] == {"alignment_miou": 0.5}
    assert read_card_metadata(tmp_path / "missing") == {} and read_card_metadata(None) == {}


def test_student_card_is_named_after_the_repository_or_the_run():
    assert ModelCard(str(student_card())).data.model_name == "student"
    named = student_card(repo_id=None, args={**DISTILL_ARGS, "output_dir": "/runs/sos-soft-seed1"})
    assert ModelCard(str(named)).data.model_name == "sos-soft-seed1" and "# sos-soft-seed1" in named.text
