"""Fetching a DAKTer pipeline from the Hub: its configs and safetensors weights only, loaded with the installed
`dakter_hf` classes (diffusers' generic loader refuses components whose classes live outside diffusers)."""

from typing import Any

from huggingface_hub import snapshot_download
from huggingface_hub.errors import (
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)


# Options of `DiffusionPipeline.from_pretrained` that concern the download, with their `snapshot_download` names.
_HUB_OPTIONS = {
    "revision": "revision",
    "token": "token",
    "cache_dir": "cache_dir",
    "force_download": "force_download",
    "local_files_only": "local_files_only",
    "proxies": "proxies",
}

# What a DAKTer pipeline repository needs locally: configs and safetensors weights; never pickles or remote code.
PIPELINE_FILE_PATTERNS = ["model_index.json", "*/config.json", "*/scheduler_config.json", "*.safetensors", "README.md"]


def download_pipeline(repo_id: str, options: dict[str, Any]) -> str:
    """Download a pipeline repository from the Hub and return its local snapshot directory.

    diffusers' generic loader rejects Hub repositories whose components are not diffusers or transformers classes
    unless the repository carries their code; `DAKTerPipeline.from_pretrained` uses this function instead, so the
    installed `dakter_hf` classes are used and no remote code is run.

    Args:
        repo_id (`str`): a Hub repository id such as `"org/name"`.
        options (`dict`): the keyword arguments given to `from_pretrained`; the Hub options among them (`revision`,
            `token`, `cache_dir`, `force_download`, `local_files_only`, `proxies`) are removed and used here.

    Returns:
        `str`: the path of the downloaded snapshot.
    """
    hub_kwargs = {target: options.pop(name) for name, target in _HUB_OPTIONS.items() if name in options}
    try:
        return snapshot_download(repo_id, allow_patterns=PIPELINE_FILE_PATTERNS, **hub_kwargs)
    except HFValidationError as error:
        raise OSError(f"{repo_id!r} is neither an existing local directory nor a valid Hub repository id.") from error
    except (RepositoryNotFoundError, RevisionNotFoundError, LocalEntryNotFoundError) as error:
        raise OSError(
            f"{repo_id!r} is neither a local directory nor a pipeline repository that could be fetched from the Hub "
            f"({type(error).__name__}). Check the path or repository id, the revision, your token and the network."
        ) from error
