"""Distillation with two real processes on CPU (gloo), compared with one process at the same global batch size.

How two CPU processes are really started (accelerate 1.15, torch 2.13, no GPU):

* `accelerate launch --cpu --num_processes 2` starts ONE process (its CPU multi-process mode goes through MPI);
* `accelerate launch --multi_gpu --cpu` is refused (the flags are exclusive);
* `torchrun --nproc_per_node 2` (or `accelerate launch --multi_gpu --num_processes 2`) starts two processes, but
  Accelerate only builds a CPU process group when told to use the CPU, so each process believes it is alone
  (`DistributedType.NO`, `num_processes == 1`) -- two duplicate runs writing the same files;
* `ACCELERATE_USE_CPU=1 torchrun --standalone --nproc_per_node 2` gives `DistributedType.MULTI_CPU` with the gloo
  backend and `num_processes == 2` (used here, as `python -m torch.distributed.run`). `examples/distill.py` checks
  `WORLD_SIZE` against `accelerator.num_processes` and refuses the duplicate-run case.

What is compared, and the tolerances:

* exact: world size 2 (written by the run into metrics.json), global batch size, batch composition, the number of
  evaluated pixels (the split is sharded without padding, so every pixel counts once), and
  `examples/evaluate_student.py` under 2 processes reproduces the one-process metrics of the same checkpoint exactly
  (summed confusion matrices);
* approximate: the training itself. Both runs see the same samples at every step (the sampler's global batch is
  process-count invariant, see `test_mixed_batch_sampler_is_deterministic_balanced_and_shardable`) and start from the
  same weights, but SegFormer's decode head has a BatchNorm whose batch statistics are per process (4 samples instead
  of 8; torch's SyncBatchNorm is GPU-only), and gradients are averaged in another order. Measured when this test was
  written (12 steps): per-step losses differ by at most 0.012 (~1%), final pixel accuracy 0.848 vs 0.857, final mIoU
  0.170 vs 0.195 (this early, mIoU jumps when a minority class starts to be predicted). The tolerances -- loss per
  step within 0.05 absolute (~5% of ~1.1), final mIoU and pixel accuracy within 0.05 -- leave room for that drift
  while still catching real errors (a process training on a duplicate shard, a lost half batch or a learning-rate
  schedule stepping at the wrong rate change the loss curve by far more).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from test_distill import base_args, distill_command, make_generated_dataset

from repo_scripts import REPO_ROOT


STEPS = 12


def _launch_two(script: str, args: list[str], use_cpu: bool = True, timeout: int = 240):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("ACCELERATE_USE_CPU", None)
    if use_cpu:
        env["ACCELERATE_USE_CPU"] = "1"
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               str(REPO_ROOT / "examples" / script), *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT)


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("distributed")
    generated = make_generated_dataset(tmp / "generated", num_rows=16)
    common = ["--mode", "soft", "--generated_dataset", generated, "--generated_ratio", "0.5", "--num_train_samples",
              "16", "--max_train_steps", str(STEPS), "--eval_steps", "6", "--learning_rate", "2e-3",
              "--max_eval_samples", "15", "--eval_batch_size", "4"]
    two = _launch_two("distill.py", base_args(tmp / "two", *common, "--train_batch_size", "4"))
    assert two.returncode == 0, two.stderr[-4000:]
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        distill_command.main(base_args(tmp / "one", *common, "--train_batch_size", "8"))
    finally:
        torch.set_num_threads(previous)
    return tmp


def _read(run_dir: Path):
    metrics = json.loads((run_dir / "metrics.json").read_text())
    log = [json.loads(line) for line in (run_dir / "logs" / "train_log.jsonl").open()]
    return metrics, log


def test_two_processes_really_run_and_match_one_process(runs):
    one, one_log = _read(runs / "one")
    two, two_log = _read(runs / "two")
    assert one["num_processes"] == 1 and two["num_processes"] == 2
    assert one["global_batch_size"] == two["global_batch_size"] == 8
    assert two["batch_composition"] == {"real": 2, "generated": 2} and one["batch_composition"] == {"real": 4,
                                                                                                     "generated": 4}
    assert [r["num_real"] for r in two_log] == [4] * STEPS and [r["num_generated"] for r in two_log] == [4] * STEPS
    assert [e["step"] for e in two["evaluations"]] == [6, 12]
    for e1, e2 in zip(one["evaluations"], two["evaluations"]):
        assert e1["num_pixels"] == e2["num_pixels"] == 15 * 32 * 32  # 15 images on 2 processes, no padding

    losses_one = torch.tensor([r["loss"] for r in one_log])
    losses_two = torch.tensor([r["loss"] for r in two_log])
    assert (losses_one - losses_two).abs().max() < 0.05, (losses_one, losses_two)
    assert losses_two[-3:].mean() < losses_two[:3].mean()  # it trains
    for key in ("mean_iou", "pixel_accuracy"):
        assert abs(one["final"][key] - two["final"][key]) < 0.05, (key, one["final"][key], two["final"][key])
    assert (runs / "two" / "best" / "preprocessor_config.json").is_file()
    assert (runs / "two" / "learning_curves.png").is_file()


def test_evaluation_on_two_processes_equals_one_process_exactly(runs):
    out = runs / "eval-two.json"
    result = _launch_two("evaluate_student.py", ["--model_name_or_path", str(runs / "one" / "final"), "--dataset",
                                         "simulated", "--split", "test", "--max_eval_samples", "15",
                                         "--batch_size", "4", "--output_json", str(out)])
    assert result.returncode == 0, result.stderr[-4000:]
    evaluated = json.loads(out.read_text())
    assert evaluated["num_processes"] == 2
    final = json.loads((runs / "one" / "metrics.json").read_text())["final"]
    for key, value in evaluated["metrics"].items():
        assert value == pytest.approx(final[key], nan_ok=True, rel=0, abs=1e-12), key


def test_two_processes_without_cpu_process_group_are_refused(tmp_path):
    """torchrun without ACCELERATE_USE_CPU would train twice, independently: the script must stop."""
    result = _launch_two("distill.py", base_args(tmp_path / "dup", "--mode", "real", "--max_train_steps", "1"),
                         use_cpu=False)
    assert result.returncode != 0
    assert "ACCELERATE_USE_CPU=1 torchrun" in result.stderr
    assert not (tmp_path / "dup" / "metrics.json").exists()
