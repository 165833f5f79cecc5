"""Each artefact reaches the Hub in a single commit with its card (against the local server of `tests/conftest.py`):
a generated dataset (parquet shards, card with `dataset_info` / `configs`, preview) and a student (weights, image
processor, card, run files). The cards read back from the Hub keep their metadata."""

import datasets
import numpy as np
import torch
from huggingface_hub import DatasetCard, HfApi, ModelCard
from test_hub_pipeline_code import make_tiny_pipeline

from dakter_hf import hub
from dakter_hf.generation import generate_to_disk
from dakter_hf.model_cards import CARD_NAME, make_student_card


def commits(repo_id, repo_type="model"):
    return HfApi().list_repo_commits(repo_id, repo_type=repo_type)


def test_dataset_push_is_one_commit_and_loads_back(tmp_path, hub_server, hub_repo_id, clean_hub_cache,
                                                   monkeypatch):
    output = generate_to_disk(make_tiny_pipeline(), tmp_path / "generated", 3, batch_size=3, num_inference_steps=2)
    local = output.dataset
    monkeypatch.setattr(hub, "MAX_SHARD_BYTES", -(-local.data.nbytes // 2))  # 2 shards
    hub.push_dataset_to_hub(output.output_dir, hub_repo_id)
    assert len(commits(hub_repo_id, "dataset")) == 2  # the repository's initial commit, then the push
    files = set(hub_server.repo_files(hub_repo_id, repo_type="dataset"))
    shards = {f"data/train-{i:05d}-of-00002.parquet" for i in range(2)}
    assert shards | {CARD_NAME, "preview.png"} <= files

    card = DatasetCard.load(hub_repo_id, repo_type="dataset")
    assert card.data.annotations_creators == ["machine-generated"] and card.data.license == "apache-2.0"
    assert card.data.configs[0]["data_files"][0]["path"] == "data/train-*"
    remote = datasets.load_dataset(hub_repo_id, split="train")
    assert remote.features == local.features and remote["seed"] == local["seed"]
    np.testing.assert_array_equal(np.stack(remote.with_format("numpy")["soft_label"]),
                                  np.stack(local.with_format("numpy")["soft_label"]))

    # a second push (one shard now) replaces the data in one commit: the stale shards go
    monkeypatch.setattr(hub, "MAX_SHARD_BYTES", 2**40)
    hub.push_dataset_to_hub(output.output_dir, hub_repo_id)
    assert len(commits(hub_repo_id, "dataset")) == 3
    files = set(hub_server.repo_files(hub_repo_id, repo_type="dataset"))
    assert {f for f in files if f.startswith("data/")} == {"data/train-00000-of-00001.parquet"}


def test_student_push_is_one_commit_with_its_card(tmp_path, hub_server, hub_repo_id, clean_hub_cache):
    from transformers import AutoModelForSemanticSegmentation

    from dakter_hf.distill import create_image_processor, create_student
    from dakter_hf.distill.training import save_student

    torch.manual_seed(0)
    id2label = {0: "sea", 1: "oil_spill"}
    student_dir = save_student(create_student("tiny", id2label=id2label, image_size=32, num_channels=1),
                               create_image_processor(32), tmp_path / "best")
    make_student_card(id2label, {"mean_iou": 0.5, "iou_sea": 0.9, "iou_oil_spill": 0.1},
                      {"dataset": "simulated", "mode": "real", "eval_split": "test"}, step=4,
                      repo_id=hub_repo_id).save(tmp_path / "best" / CARD_NAME)
    (tmp_path / "metrics.json").write_text("{}")
    hub.push_student_to_hub(student_dir, hub_repo_id, extra_files=[str(tmp_path / "metrics.json")])
    assert len(commits(hub_repo_id)) == 2
    files = set(hub_server.repo_files(hub_repo_id))
    assert {"config.json", "model.safetensors", "preprocessor_config.json", CARD_NAME, "metrics.json"} <= files
    card = ModelCard.load(hub_repo_id)
    assert card.data.pipeline_tag == "image-segmentation"
    assert {r.metric_name for r in card.data.eval_results} == {"mIoU", "IoU sea", "IoU oil_spill"}
    remote = AutoModelForSemanticSegmentation.from_pretrained(hub_repo_id)
    assert remote.config.id2label == id2label
