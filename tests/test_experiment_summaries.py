"""`dakter_hf.experiments.summaries`: mean ± std over seeds, and a single seed written without a spread."""

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
