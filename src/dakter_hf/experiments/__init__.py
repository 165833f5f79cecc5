"""The whole DAKTer loop as an experiment: resumable stages (train the generator, generate pairs, distil students,
score them) and their summaries. `examples/demo.py` (simulated scenes) and `benchmarks/sos_benchmark.py` (real SOS
data) are built on it."""

from .stages import (
    COMMANDS,
    StageError,
    StageRunner,
    calibrate_temperature,
    concatenate_pairs,
    distill_student,
    generate_mask_pairs,
    generate_pairs,
    label_pairs_with_generator,
    relabel_pairs,
    train_generator,
    write_json,
)
from .summaries import LABELS, METRICS, MODES, format_summary, merge_summaries, seed_count_note, summarize


__all__ = [
    "COMMANDS",
    "LABELS",
    "METRICS",
    "MODES",
    "StageError",
    "StageRunner",
    "calibrate_temperature",
    "concatenate_pairs",
    "distill_student",
    "format_summary",
    "generate_mask_pairs",
    "generate_pairs",
    "label_pairs_with_generator",
    "merge_summaries",
    "relabel_pairs",
    "seed_count_note",
    "summarize",
    "train_generator",
    "write_json",
]
