"""One generated dataset from several: e.g. joint samples and images drawn for real masks, for one student.

[`concatenate_generated_datasets`] takes the first rows of each part (all of them by default), keeps every column
(a column one part lacks, such as a mask-conditioned set's `source_mask`, is empty -- `None` -- in the other part's
rows) and adds `generated_set`, the part each row comes from. It writes the result like every generated dataset: in
one rename, with a card naming the parts and, from their own cards, how each was made.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import datasets
from datasets import Features, Value

from ..data.generated import get_generated_id2label
from ..errors import OutputExistsError, UsageError
from ..filesystem import commit_directory, start_staging
from ..model_cards import CARD_NAME, make_concatenated_dataset_card, read_card_metadata
from .store import GENERATION_OWNER


__all__ = ["GENERATED_SET_COLUMN", "concatenate_generated_datasets"]

#: The column naming the part a row of a concatenated dataset comes from.
GENERATED_SET_COLUMN = "generated_set"
#: The columns every part must have, with the same features (the generated-dataset schema).
_SHARED_COLUMNS = ("image", "soft_label", "label", "seed")


def _load_part(path: str) -> datasets.Dataset:
    try:
        part = datasets.load_from_disk(path)
    except Exception as error:  # FileNotFoundError, a DatasetDict, unreadable files
        raise UsageError(f"generated dataset {path} cannot be loaded with `datasets.load_from_disk` "
                         f"({type(error).__name__}: {error}).") from error
    if not isinstance(part, datasets.Dataset):
        raise UsageError(f"generated dataset {path} is a {type(part).__name__}, expected a single `Dataset`.")
    missing = [name for name in _SHARED_COLUMNS if name not in part.column_names]
    if missing:
        raise UsageError(f"{path} is not a generated dataset: it lacks the columns {missing} (has "
                         f"{part.column_names}).")
    return part


def concatenate_generated_datasets(
    sources: Sequence[str | os.PathLike],
    output_dir: str | os.PathLike,
    num_samples: Sequence[int | None] | None = None,
    overwrite: bool = False,
) -> datasets.Dataset:
    """Concatenate generated datasets (directories written by `dakter-generate`) into `output_dir`.

    Args:
        sources (`Sequence[str | os.PathLike]`): the parts, in order (at least two).
        output_dir (`str` or `os.PathLike`): where the dataset goes; written next to it and renamed when complete.
        num_samples (`Sequence[int | None]`, *optional*): per part, how many of its first rows to take (`None`: all).
            Rows of generated datasets do not depend on how many were drawn (row `i` comes from seed `seed + i`), so
            the first `n` rows of a set are the set of `n` rows.
        overwrite (`bool`, *optional*, defaults to `False`): replace an existing `output_dir` written by the package.

    Returns:
        `datasets.Dataset`: the concatenated dataset, loaded from `output_dir`.

    Raises:
        `ValueError`: fewer than two parts, a part that is not a generated dataset, parts whose `image`,
            `soft_label` or `label` features differ (other classes, sizes or storage), a `num_samples` of the wrong
            length or larger than its part; `OutputExistsError`: `output_dir` exists without `overwrite`.
    """
    paths = [os.path.normpath(os.fspath(source)) for source in sources]
    if len(paths) < 2:
        raise UsageError(f"Concatenating generated datasets needs at least two of them, got {paths}.")
    counts = list(num_samples) if num_samples is not None else [None] * len(paths)
    if len(counts) != len(paths):
        raise UsageError(f"`num_samples` needs one value per generated dataset ({len(paths)}), got {counts}.")
    output_dir = os.path.normpath(os.fspath(output_dir))
    if os.path.lexists(output_dir) and not overwrite:
        raise OutputExistsError(f"`output_dir` {output_dir} already exists; pass overwrite=True / --overwrite to "
                                "replace it, or choose another directory.")
    parts, features, summaries = [], Features(), []
    for path, count in zip(paths, counts):
        part = _load_part(path)
        total = len(part)
        if count is not None and not 0 < count <= len(part):
            raise UsageError(f"`num_samples` {count} for {path}: it has {len(part)} rows; take 1..{len(part)}.")
        part = part if count is None else part.select(range(count))
        for name, feature in part.features.items():
            if name in _SHARED_COLUMNS and name in features and features[name] != feature:
                raise UsageError(f"{path}: its {name!r} feature ({feature}) differs from that of {paths[0]} "
                                 f"({features[name]}); only datasets of the same classes, size and storage "
                                 "concatenate.")
            features.setdefault(name, feature)
        parts.append((os.path.basename(path), part))
        summaries.append({"dataset": path, "num_rows": len(part), "of": total,
                          "dakter": read_card_metadata(path).get("dakter", {})})
    features[GENERATED_SET_COLUMN] = Value("string")
    columns = []
    for name, part in parts:
        for column, feature in features.items():
            if column not in part.column_names:
                fill = name if column == GENERATED_SET_COLUMN else None
                part = part.add_column(column, [fill] * len(part), feature=feature)
        columns.append(part.select_columns(list(features)).cast(features))
    dataset = datasets.concatenate_datasets(columns)
    staging = start_staging(output_dir, GENERATION_OWNER)  # a leftover of a killed run is discarded
    dataset.save_to_disk(staging)
    card = make_concatenated_dataset_card(summaries, len(dataset), get_generated_id2label(dataset),
                                          read_card_metadata(paths[0]))
    card.save(os.path.join(staging, CARD_NAME))
    commit_directory(staging, output_dir, GENERATION_OWNER)
    return datasets.load_from_disk(output_dir)
