"""`make demo` end to end at toy scale: every stage runs, the table and figures are written, a rerun resumes.

The generator's training and the students run in this process (`tests/in_process_stages.py`: a fresh interpreter
per stage costs ~18 s of CPU in imports for a toy stage; `test_sos_benchmark.py`'s `--jobs` test starts those
commands as real subprocesses); generation keeps its real subprocess, the suite's one-process run of
`python -m dakter_hf.commands.generate` (the `--jobs` test generates under `accelerate launch`)."""

import json

import pytest

from in_process_stages import InProcessStages
from repo_scripts import load_script


@pytest.fixture(scope="module")
def demo():
    return load_script("examples/demo.py")


TOY = ["--resolution", "32", "--num_train_scenes", "8", "--generated_multiple", "1", "--model_size", "tiny",
       "--generator_steps", "2", "--generator_batch_size", "4", "--student_steps", "2", "--student_batch_size", "4",
       "--num_inference_steps", "2", "--num_threads", "1"]


def test_demo_runs_every_stage_and_resumes(demo, tmp_path, capsys, monkeypatch):
    stages = InProcessStages(monkeypatch, subprocess_commands={"generate"})
    out = tmp_path / "demo"
    demo.main(["--output_dir", str(out), *TOY])
    assert stages.in_process == ["train", "distill", "distill", "distill"]
    assert stages.subprocesses == ["dakter_hf.commands.generate"]
    report = json.loads((out / "results.json").read_text())
    assert set(report["summary"]) == {"real", "hard", "soft"}
    for mode in ("real", "hard", "soft"):
        assert 0.0 <= report["summary"][mode]["mean_iou"]["mean"] <= 1.0
        assert (out / "students" / mode / "final" / "config.json").is_file()
    for figure in ("results.png", "learning_curves.png", "generated/preview.png"):
        assert (out / figure).stat().st_size > 0, figure
    assert (out / "generator" / "model_index.json").is_file() and (out / "generated" / "dataset_info.json").is_file()
    table = (out / "results.md").read_text()
    assert all(f"| {mode} |" in table for mode in ("real", "hard", "soft"))
    # One seed per arm: the numbers stand alone, with no "± 0.00" spread, and the caption says n = 1.
    assert "±" not in table and "n = 1" in table
    capsys.readouterr()

    # Everything is complete: every stage is skipped, with --jobs too (the launcher is no argument of a stage).
    demo.main(["--output_dir", str(out), *TOY, "--jobs", "2"])
    printed = capsys.readouterr().out
    assert printed.count("[skip]") == 5 and "[run ]" not in printed
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["summary"] == report["summary"]
    # The skipped stages still report the wall times of the run that finished them.
    assert rerun["stage_seconds"] == report["stage_seconds"] and all(v > 0 for v in rerun["stage_seconds"].values())
