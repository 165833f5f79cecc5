"""Tests of the `dakter-generate` command (`dakter_hf.commands.generate`): the same dataset as the library, from a
local or a Hub pipeline, pushed to the Hub (or kept locally when the push fails), and split between two processes."""

import json
import os
import subprocess
import sys

import datasets
import numpy as np
import pytest
import torch
from test_generation import (
    ID2LABEL,
    NUM_SAMPLES,
    assert_same_rows,
    generate_reference,
)

from dakter_hf import DAKTerPipeline
from dakter_hf.commands.generate import main
from dakter_hf.generation import decode_soft_labels, get_generated_id2label, work_dir_for
from dakter_hf.hub import HubPushError, push_dataset_to_hub, push_pipeline_to_hub

from tiny_models import tiny_pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def pipe():
    return tiny_pipeline()


@pytest.fixture(scope="module")
def reference(pipe, tmp_path_factory):
    return generate_reference(pipe, tmp_path_factory.mktemp("reference") / "generated")


@pytest.fixture
def pipeline_dir(tmp_path):
    """A saved pipeline with its class names (in its model_index.json)."""
    path = tmp_path / "pipeline"
    DAKTerPipeline(**tiny_pipeline().components, id2label=ID2LABEL).save_pretrained(path)
    return path


def cli_args(pipeline, output_dir, *extra):
    return ["--pipeline", str(pipeline), "--num_samples", "3", "--batch_size", "2", "--num_inference_steps", "3",
            "--seed", "7", "--soft_label_temperature", "1.5", "--output_dir", str(output_dir), *extra]


def test_command_generates_the_library_dataset(pipeline_dir, reference, tmp_path):
    output_dir = tmp_path / "generated"
    assert main(cli_args(pipeline_dir, output_dir)) == 0
    ds = datasets.load_from_disk(str(output_dir))
    assert get_generated_id2label(ds) == ID2LABEL  # read from the pipeline's model_index.json
    assert_same_rows(ds, reference.dataset.select(range(3)).flatten_indices())
    with pytest.raises(SystemExit) as exit_info:  # one line on stderr (tests/test_bad_input.py), exit code 2
        main(cli_args(pipeline_dir, output_dir))
    assert exit_info.value.code == 2
    assert main(cli_args(pipeline_dir, output_dir, "--overwrite", "--scheduler", "ddim", "--soft_label_dtype",
                         "float16")) == 0
    meta = json.loads((output_dir / "dataset_info.json").read_text())
    assert meta["features"]["soft_label"]["dtype"] == "float16"
    assert "DDIMScheduler" in (output_dir / "README.md").read_text()


def test_command_channels_last(pipeline_dir, tmp_path):
    output_dir = tmp_path / "generated"
    assert main(cli_args(pipeline_dir, output_dir, "--channels_last")) == 0
    assert len(datasets.load_from_disk(str(output_dir))) == 3
    assert '"unet_memory_format": "channels_last"' in (output_dir / "README.md").read_text()


def test_dataset_hub_round_trip(pipeline_dir, reference, tmp_path, hub_server, hub_repo_id, clean_hub_cache):
    output_dir = tmp_path / "generated"
    assert main(cli_args(pipeline_dir, output_dir, "--push_to_hub", "--hub_dataset_id", hub_repo_id)) == 0
    files = hub_server.repo_files(hub_repo_id, repo_type="dataset")
    assert "preview.png" in files or not os.path.exists(output_dir / "preview.png")
    card = files["README.md"].decode()
    assert "These samples are synthetic" in card and "dataset_info" in card and "dakter:" in card

    remote = datasets.load_dataset(hub_repo_id, split="train")
    local = datasets.load_from_disk(str(output_dir))
    assert remote.features == local.features
    assert get_generated_id2label(remote) == ID2LABEL
    for column in ("seed", "soft_label"):
        assert remote[column] == local[column]
    for column in ("image", "label"):
        np.testing.assert_array_equal(np.stack(remote.with_format("numpy")[column]),
                                      np.stack(local.with_format("numpy")[column]))
    probs = decode_soft_labels(remote.with_format("torch")[:]["soft_label"], dtype=remote.features)
    torch.testing.assert_close(probs.sum(dim=1), torch.ones(3, 16, 16))


@pytest.mark.parametrize("failure", ["refused", "down"])
def test_failed_push_keeps_the_local_copy(pipeline_dir, tmp_path, hub_server, hub_repo_id, failure, caplog):
    output_dir = tmp_path / "generated"
    if failure == "refused":
        hub_server.refuse_writes = True
    else:
        hub_server.stop()
    assert main(cli_args(pipeline_dir, output_dir, "--push_to_hub", "--hub_dataset_id", hub_repo_id)) == 1
    assert "local copy" in caplog.text and hub_repo_id in caplog.text
    ds = datasets.load_from_disk(str(output_dir))
    assert len(ds) == 3 and (output_dir / "README.md").is_file()
    assert not os.path.exists(work_dir_for(output_dir))
    with pytest.raises(HubPushError, match=f"{hub_repo_id}.*local copy in {output_dir} is complete"):
        push_dataset_to_hub(output_dir, hub_repo_id)


def test_command_generates_from_a_hub_pipeline(pipe, reference, tmp_path, hub_server, hub_repo_id, clean_hub_cache):
    """`dakter-generate --pipeline <Hub id>`: the pushed pipeline generates the same rows as the local one."""
    push_pipeline_to_hub(pipe, hub_repo_id, id2label=ID2LABEL)
    output_dir = tmp_path / "generated"
    assert main(cli_args(hub_repo_id, output_dir)) == 0
    ds = datasets.load_from_disk(str(output_dir))
    assert get_generated_id2label(ds) == ID2LABEL
    assert_same_rows(ds, reference.dataset.select(range(3)).flatten_indices())
    assert hub_repo_id in (output_dir / "README.md").read_text()


def test_two_processes_split_the_indices(pipeline_dir, reference, tmp_path):
    """`accelerate launch` with 2 CPU processes: each generates its block, the main process assembles the same
    dataset as one process."""
    output_dir = tmp_path / "generated"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "dakter_hf.commands.generate", *cli_args(pipeline_dir, output_dir)]
    command[command.index("--num_samples") + 1] = str(NUM_SAMPLES)
    result = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    assert "generated now: 3" in result.stderr  # the main process's block: indices 0..2 of 0..4
    assert_same_rows(datasets.load_from_disk(str(output_dir)), reference.dataset)
