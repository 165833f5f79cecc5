"""`dakter_hf.experiments.summaries`: mean ± std over seeds, and a single seed written without a spread."""

import statistics

import pytest

from dakter_hf.experiments import LABELS, format_summary, seed_count_note, summarize


def reports(*values):
    return [{"final": {"mean_iou": v}} for v in values]


def test_summarize_mean_std_and_count():
    summary = summarize({"real": reports(0.70, 0.72, 0.74)}, ["mean_iou"])
    cell = summary["real"]["mean_iou"]
    assert cell["mean"] == pytest.approx(0.72) and cell["std"] == pytest.approx(0.02) and cell["n"] == 3


def test_single_seed_tables_have_no_spread():
    single = summarize({"real": reports(0.7512), "soft": reports(0.7633)}, ["mean_iou"])
    table = format_summary(single, ["mean_iou"], LABELS)
    assert "| real | 75.12 |" in table and "| soft | 76.33 |" in table and "±" not in table
    assert seed_count_note(single) == "one seed (n = 1)"

    # Beside several-seed arms, a single-seed cell says so instead of showing a spread of 0.
    mixed = summarize({"real": reports(0.70, 0.72, 0.74), "soft": reports(0.7633)}, ["mean_iou"])
    table = format_summary(mixed, ["mean_iou"], LABELS)
    assert "| real | 72.00 ± 2.00 |" in table and "| soft | 76.33 (n = 1) |" in table
    assert seed_count_note(mixed) == "mean ± std over seeds"


def seeded(values, seeds):
    return [{"final": {"mean_iou": v}, "seed": s} for v, s in zip(values, seeds)]


def test_summaries_of_runs_over_other_seeds_merge_per_seed():
    """`--student_seeds 3 4` after a run of seeds 0-2: the arm holds five seeds, not the last run's two; a seed run
    again takes its new score; cells that do not name their seeds (older files) are replaced as before."""
    from dakter_hf.experiments import merge_summaries

    first = summarize({"real": seeded([0.70, 0.72, 0.74], [0, 1, 2]), "soft": seeded([0.75], [0])}, ["mean_iou"])
    assert first["real"]["mean_iou"]["seeds"] == [0, 1, 2]
    more = summarize({"real": seeded([0.76, 0.78], [3, 4]), "hard": seeded([0.8], [0])}, ["mean_iou"])
    merged = merge_summaries(first, more)
    cell = merged["real"]["mean_iou"]
    assert cell["seeds"] == [0, 1, 2, 3, 4] and cell["values"] == [0.70, 0.72, 0.74, 0.76, 0.78]
    assert cell["n"] == 5 and cell["mean"] == pytest.approx(0.74)
    assert cell["std"] == pytest.approx(statistics.stdev([0.70, 0.72, 0.74, 0.76, 0.78]))
    assert merged["soft"] == first["soft"] and merged["hard"] == more["hard"]  # arms of one run only are kept
    rerun = merge_summaries(merged, summarize({"real": seeded([0.60], [1])}, ["mean_iou"]))
    assert rerun["real"]["mean_iou"]["values"] == [0.70, 0.60, 0.74, 0.76, 0.78]
    unnamed = summarize({"real": reports(0.5, 0.6)}, ["mean_iou"])
    assert "seeds" not in unnamed["real"]["mean_iou"]
    assert merge_summaries(first, unnamed)["real"] == unnamed["real"]
