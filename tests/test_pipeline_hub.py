"""DAKTer pipelines through a Hub repository, against the local Hub-protocol server of `tests/conftest.py`.

* `pipe.push_to_hub(repo_id)` then `DAKTerPipeline.from_pretrained(repo_id)` (fresh cache) gives back the installed
  classes and the same samples;
* with the remote-code files added to the repository, `DiffusionPipeline.from_pretrained(repo_id,
  custom_pipeline="pipeline_dakter", trust_remote_code=True)` generates the same samples in a process without
  dakter_hf, while `DAKTerPipeline.from_pretrained(repo_id)` still uses the installed classes and runs no remote code;
* a missing repository gives a clear `OSError`.
"""

import pytest
from diffusers import DiffusionPipeline
from test_hub_pipeline_code import (
    assert_loaded_remote_code,
    assert_same_outputs,
    generate,
    make_tiny_pipeline,
    run_without_dakter_hf,
)

from dakter_hf import DAKTerPipeline, JointUNet2DModel
from dakter_hf.remote_code import remote_code_files, upload_remote_code


PIPELINE_FILES = {"model_index.json", "scheduler/scheduler_config.json", "unet/config.json",
                  "unet/diffusion_pytorch_model.safetensors"}


@pytest.fixture
def pushed(hub_server, hub_repo_id):
    """A tiny pipeline pushed to a fresh repository, and what it generates."""
    pipe = make_tiny_pipeline()
    pipe.push_to_hub(hub_repo_id)
    return hub_repo_id, generate(pipe)


def test_push_then_load_from_hub(hub_server, pushed, clean_hub_cache):
    repo_id, expected = pushed
    assert PIPELINE_FILES <= set(hub_server.repo_files(repo_id))
    pipe = DAKTerPipeline.from_pretrained(repo_id)
    assert type(pipe) is DAKTerPipeline
    assert type(pipe.unet) is JointUNet2DModel
    assert_same_outputs(generate(pipe), expected)


def test_remote_code_from_hub_without_dakter_hf(hub_server, pushed, tmp_path):
    repo_id, expected = pushed
    upload_remote_code(repo_id)
    assert set(remote_code_files()) <= set(hub_server.repo_files(repo_id))
    # A cache of its own: the download must come from the server, not from this process's earlier downloads.
    outputs, loaded = run_without_dakter_hf(repo_id, tmp_path, env={"HF_HUB_CACHE": str(tmp_path / "hub_cache")})
    assert_loaded_remote_code(loaded)
    assert_same_outputs(outputs, expected)


def test_installed_pipeline_ignores_remote_code_on_the_hub(pushed, clean_hub_cache):
    repo_id, expected = pushed
    upload_remote_code(repo_id)
    pipe = DAKTerPipeline.from_pretrained(repo_id)  # no trust_remote_code: the remote code must not be needed
    assert type(pipe.unet) is JointUNet2DModel
    assert_same_outputs(generate(pipe), expected)


def test_installed_pipeline_after_a_remote_code_download(pushed, clean_hub_cache):
    repo_id, expected = pushed
    upload_remote_code(repo_id)
    # What a user who first tried the repository without dakter_hf leaves in the cache (download only, no code run).
    DiffusionPipeline.download(repo_id, custom_pipeline="pipeline_dakter", trust_remote_code=True)
    pipe = DAKTerPipeline.from_pretrained(repo_id)
    assert type(pipe.unet) is JointUNet2DModel
    assert_same_outputs(generate(pipe), expected)


def test_missing_repository_is_a_clear_oserror(hub_server, clean_hub_cache):
    with pytest.raises(OSError, match="dakter-tester/no-such-pipeline"):
        DAKTerPipeline.from_pretrained("dakter-tester/no-such-pipeline")
