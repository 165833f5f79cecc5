"""Tests of `dakter_hf.hub`'s pipeline push against the local Hub-protocol server (the dataset push is tested through
the command in `test_commands_generate.py`, the student push in `test_distill.py`, a training run's in
`test_training.py`)."""

import json

import pytest
from test_generation import (
    ID2LABEL,
    SETTINGS,
    assert_same_rows,
)

from dakter_hf import DAKTerPipeline
from dakter_hf.generation import generate_dataset
from dakter_hf.hub import HubPushError, push_pipeline_to_hub
from dakter_hf.labels import resolve_id2label

from tiny_models import tiny_pipeline


pytestmark = pytest.mark.usefixtures("one_torch_thread")


def test_pipeline_hub_round_trip(hub_server, hub_repo_id, clean_hub_cache):
    pipe = tiny_pipeline(seed=3)
    push_pipeline_to_hub(pipe, hub_repo_id, id2label=ID2LABEL)
    files = hub_server.repo_files(hub_repo_id)
    assert {"model_index.json", "README.md", "unet/config.json"} <= set(files)
    assert "dakter_config.json" not in files
    assert "id2label" in files["README.md"].decode()
    assert json.loads(files["model_index.json"])["id2label"] == {str(k): v for k, v in ID2LABEL.items()}
    assert pipe.config.id2label is None  # the caller's pipeline is left unchanged

    loaded = DAKTerPipeline.from_pretrained(hub_repo_id)
    assert loaded.id2label == resolve_id2label(loaded) == ID2LABEL
    assert_same_rows(generate_dataset(loaded, 2, batch_size=2, **SETTINGS),
                     generate_dataset(pipe, 2, batch_size=2, **SETTINGS))


@pytest.mark.parametrize("failure", ["refused", "down"])
def test_failed_pipeline_push_is_reported(hub_server, hub_repo_id, failure):
    if failure == "refused":
        hub_server.refuse_writes = True
    else:
        hub_server.stop()
    with pytest.raises(HubPushError, match=hub_repo_id):
        push_pipeline_to_hub(tiny_pipeline(), hub_repo_id, id2label=ID2LABEL)
