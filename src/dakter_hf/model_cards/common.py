"""What every card shares: its file name, the default licence, the metadata key of generator quality measures, and
the short names of training data."""

import os
from collections.abc import Mapping
from typing import Any

from huggingface_hub import ModelCard


#: File name of every card.
CARD_NAME = "README.md"
#: Licence written in the cards' metadata unless another is given: the licence of dakter_hf's own code. Pass
#: `license=` to record the licence a trained artefact inherits from its training data.
DEFAULT_LICENSE = "apache-2.0"
#: Metadata key of the generator quality measures (e.g. alignment, calibration, mask fidelity, each a number) in a
#: generator's card; a generated dataset's card copies them from its generator.
QUALITY_KEY = "dakter_quality"


def _describe_data(args: Mapping[str, Any], num_train_examples: int) -> str:
    dataset = args.get("dataset", "?")
    parts = [f"`{dataset}`"]
    if args.get("sensor"):
        parts.append(f"sensor `{args['sensor']}`")
    if args.get("data_dir"):
        parts.append(f"from `{os.path.basename(os.path.normpath(str(args['data_dir'])))}`")
    text = ", ".join(parts) + f", training split: {num_train_examples} examples"
    if dataset == "simulated":
        text += " (synthetic scenes from `dakter_hf.data.simulate_sar_scenes`, not real SAR data)"
    return text


def dataset_id(args: Mapping[str, Any]) -> str:
    """A short name of the real training data of a run, for the cards' `datasets` / `source_datasets` metadata:
    `sos-sentinel`, `osd`, the folder name of `--dataset folder`, `dakter-simulated`."""
    dataset = str(args.get("dataset") or "unknown")
    if dataset == "simulated":
        return "dakter-simulated"
    if dataset == "folder" and args.get("data_dir"):
        return os.path.basename(os.path.normpath(str(args["data_dir"])))
    return f"{dataset}-{args['sensor']}" if args.get("sensor") else dataset


def _size_category(n: int) -> str:
    for limit, name in ((1_000, "n<1K"), (10_000, "1K<n<10K"), (100_000, "10K<n<100K"), (1_000_000, "100K<n<1M")):
        if n < limit:
            return name
    return "1M<n<10M"


def read_card_metadata(directory: str | os.PathLike | None) -> dict[str, Any]:
    """The YAML metadata of the card (`README.md`) in `directory` as a dict; `{}` when there is none (no directory,
    no card, or a card without metadata)."""
    path = os.path.join(os.fspath(directory), CARD_NAME) if directory and os.path.isdir(directory) else None
    if path is None or not os.path.isfile(path):
        return {}
    return ModelCard.load(path, ignore_metadata_errors=True).data.to_dict()
