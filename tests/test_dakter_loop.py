"""`StageRunner` (`dakter_hf.experiments`): stages are skipped once complete, and their wall times survive a rerun."""

import json
import os
import sys
import threading

import pytest

from dakter_hf import filesystem
from dakter_hf.experiments import stages


@pytest.fixture(scope="module")
def loop():
    return stages


def write_script(path, body):
    path.write_text("import sys, pathlib, time\n" + body, encoding="utf-8")
    return path


def test_finished_stage_times_are_kept_for_later_runs(loop, tmp_path):
    done = tmp_path / "out" / "done.txt"
    script = write_script(tmp_path / "stage.py", "time.sleep(0.2)\npathlib.Path(sys.argv[1]).parent.mkdir()\n"
                                                  "pathlib.Path(sys.argv[1]).write_text('ok')\n")
    first = loop.StageRunner(tmp_path, verbose=False)
    elapsed = first.run("stage-a", str(script), [done], done)  # an absolute script path is used as it is
    assert elapsed >= 0.2 and first.durations == {"stage-a": elapsed}
    recorded = json.loads((tmp_path / "logs" / "stage_seconds.json").read_text())
    assert recorded == {"stage-a": elapsed}

    # A new runner (an interrupted loop run again) skips the stage and still reports the time it took.
    second = loop.StageRunner(tmp_path, verbose=False)
    assert second.run("stage-a", str(script), [done], done) == 0.0
    assert second.durations == {"stage-a": elapsed}
    # A stage that never finished in a recorded run reports 0 when skipped.
    other = tmp_path / "other.txt"
    other.write_text("made by hand")
    second.run("stage-b", str(script), [other], other)
    assert second.durations["stage-b"] == 0.0


def test_each_stage_records_the_machine_it_ran_on(loop, tmp_path):
    """A work_dir resumed on another machine mixes outputs of both: each finished stage records its CPU (model,
    instructions, bf16 support) and threads, and a later runner that skips the stage reports that record."""
    import torch

    from dakter_hf.precision import cpu_has_native_bf16

    done = tmp_path / "done.txt"
    script = write_script(tmp_path / "stage.py", "pathlib.Path(sys.argv[1]).write_text('ok')\n")
    first = loop.StageRunner(tmp_path, num_threads=1, verbose=False)
    first.run("stage-a", str(script), [done], done)
    recorded = json.loads((tmp_path / "logs" / "stage_machines.json").read_text())
    assert recorded == first.machines and set(recorded) == {"stage-a"}
    machine = recorded["stage-a"]
    assert machine["cpu_capability"] == torch.backends.cpu.get_cpu_capability() and machine["threads"] == 1
    assert machine["cpu_bf16_instructions"] == cpu_has_native_bf16() and machine["cpu_model"]

    # Resumed "elsewhere": the skipped stage keeps the machine it ran on, not the one that skips it.
    recorded["stage-a"]["cpu_model"] = "the first machine"
    (tmp_path / "logs" / "stage_machines.json").write_text(json.dumps(recorded))
    second = loop.StageRunner(tmp_path, verbose=False)
    second.run("stage-a", str(script), [done], done)
    assert second.machines["stage-a"]["cpu_model"] == "the first machine"
    second.run("stage-b", str(script), [tmp_path / "b.txt"], tmp_path / "b.txt")
    both = json.loads((tmp_path / "logs" / "stage_machines.json").read_text())
    assert both["stage-a"]["cpu_model"] == "the first machine" and both["stage-b"]["threads"] is None


def test_runners_sharing_a_work_dir_keep_each_others_times(loop, tmp_path):
    """Two benchmark processes in one output directory (say, two generator seeds side by side) each record their
    stages' times in the same file; neither may drop what the other recorded since it started."""
    script = write_script(tmp_path / "stage.py", "pathlib.Path(sys.argv[1]).write_text('ok')\n")
    first, second = loop.StageRunner(tmp_path, verbose=False), loop.StageRunner(tmp_path, verbose=False)
    first.run("stage-a", str(script), [tmp_path / "a.txt"], tmp_path / "a.txt")
    second.run("stage-b", str(script), [tmp_path / "b.txt"], tmp_path / "b.txt")
    first.run("stage-c", str(script), [tmp_path / "c.txt"], tmp_path / "c.txt")
    recorded = json.loads((tmp_path / "logs" / "stage_seconds.json").read_text())
    assert set(recorded) == {"stage-a", "stage-b", "stage-c"}
    assert recorded["stage-b"] == second.durations["stage-b"] and recorded["stage-c"] == first.durations["stage-c"]


def test_failed_stage_raises_with_its_log_and_records_no_time(loop, tmp_path):
    script = write_script(tmp_path / "fails.py", "print('about to fail')\nsys.exit(3)\n")
    runner = loop.StageRunner(tmp_path, verbose=False)
    with pytest.raises(RuntimeError, match=r"stage 'broken' failed \(exit code 3\)(.|\n)*about to fail"):
        runner.run("broken", str(script), [], tmp_path / "never.txt")
    assert not (tmp_path / "logs" / "stage_seconds.json").exists()


def test_unreadable_time_record_is_ignored_not_fatal(loop, tmp_path, capsys):
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "stage_seconds.json").write_text("{not json", encoding="utf-8")
    done = tmp_path / "done.txt"
    done.write_text("ok")
    runner = loop.StageRunner(tmp_path, verbose=False)
    runner.run("stage-a", sys.executable, [], done)
    assert runner.durations == {"stage-a": 0.0}
    assert "ignoring unreadable" in capsys.readouterr().out


def test_complete_stage_with_other_arguments_raises_instead_of_being_reused(loop, tmp_path):
    done = tmp_path / "done.txt"
    script = write_script(tmp_path / "stage.py", "pathlib.Path(sys.argv[1]).write_text(' '.join(sys.argv[2:]))\n")
    runner = loop.StageRunner(tmp_path, verbose=False)
    runner.run("train", str(script), [done, "--steps", 600, "--lr", "1e-3"], done)
    # The same arguments: skipped, the output is kept.
    assert runner.run("train", str(script), [done, "--steps", 600, "--lr", "1e-3"], done) == 0.0
    # Other arguments: the stale output is not passed off as the new setting's.
    with pytest.raises(loop.StageError, match=r"'train' is complete .* other arguments .*--steps 600 -> --steps 4000"):
        loop.StageRunner(tmp_path, verbose=False).run("train", str(script), [done, "--steps", 4000, "--lr", "1e-3"],
                                                       done)
    with pytest.raises(loop.StageError, match=r"--lr 1e-3 -> \(nothing\)"):
        runner.run("train", str(script), [done, "--steps", 600], done)
    assert done.read_text() == "--steps 600 --lr 1e-3"
    # A complete output without a log (made elsewhere) has nothing to compare with and is reused.
    other = tmp_path / "other.txt"
    other.write_text("made by hand")
    assert runner.run("made-elsewhere", str(script), [other, "--steps", 1], other) == 0.0


def test_argument_changes_name_the_flag(loop):
    assert loop._argument_changes(["--a", "1", "--b", "2"], ["--a", "1", "--b", "3"]) == "--b 2 -> --b 3"
    assert loop._argument_changes(["--a", "1"], ["--a", "1", "--c", "x"]) == "(nothing) -> --c x"


def test_write_json_replaces_the_file_whole(loop, tmp_path):
    path = tmp_path / "results.json"
    loop.write_json(path, {"a": 1})
    loop.write_json(path, {"b": [1, 2]})
    assert json.loads(path.read_text()) == {"b": [1, 2]} and [p.name for p in tmp_path.iterdir()] == ["results.json"]


def test_write_json_of_two_writers_at_once(loop, tmp_path, monkeypatch):
    """Two runners sharing an output directory (e.g. one benchmark process per generator seed) write the same
    durations file: a writer finishing between the other's temporary write and its rename must not take the other's
    temporary file away (it did when both used one temporary name)."""
    path = tmp_path / "durations.json"
    real_replace, interleaved = os.replace, []

    def replace_after_another_writer(src, dst):
        if not interleaved:  # the first writer is between its write and its rename: the other writes in full now
            interleaved.append(True)
            other = threading.Thread(target=loop.write_json, args=(path, {"other": 1}))
            other.start()
            other.join()
        real_replace(src, dst)

    monkeypatch.setattr(filesystem.os, "replace", replace_after_another_writer)
    loop.write_json(path, {"first": 1})
    assert interleaved and json.loads(path.read_text()) == {"first": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["durations.json"]


def test_flags_of_options(loop):
    flags = loop._flags({"steps": 600, "use_ema": True, "augment": False, "crop_size": None,
                         "block_out_channels": (32, 64), "seeds": [0, 1]})
    assert flags == ["--steps", "600", "--use_ema", "--block_out_channels", "32", "64", "--seeds", "0", "1"]


def test_stage_logged_by_the_former_example_script_is_recognised(loop, tmp_path):
    """Stages ran `examples/<script>.py` before they ran `python -m dakter_hf.commands.<name>`: a complete stage whose
    log names the script is reused with the same arguments and refused with others, as before."""
    done = tmp_path / "student" / "final.txt"
    done.parent.mkdir()
    done.write_text("ok")
    (tmp_path / "logs").mkdir()
    (tmp_path / "logs" / "student-a.log").write_text(
        f"\n$ {sys.executable} /repo/examples/distill.py --mode soft --max_train_steps 600\nlog output\n")
    runner = loop.StageRunner(tmp_path, verbose=False)
    distill = loop.COMMANDS["distill"]
    assert runner.run("student-a", distill, ["--mode", "soft", "--max_train_steps", 600], done) == 0.0
    with pytest.raises(loop.StageError, match=r"--max_train_steps 600 -> --max_train_steps 900"):
        runner.run("student-a", distill, ["--mode", "soft", "--max_train_steps", 900], done)


def test_threads_per_job_split_the_threads(loop, tmp_path):
    assert loop.StageRunner(tmp_path, num_threads=2).threads_per_job == 2
    assert loop.StageRunner(tmp_path, num_threads=2, jobs=2).threads_per_job == 1
    assert loop.StageRunner(tmp_path, num_threads=5, jobs=2).threads_per_job == 2
    assert loop.StageRunner(tmp_path, num_threads=2, jobs=4).threads_per_job == 1
    with pytest.raises(ValueError, match="`jobs` must be a positive integer"):
        loop.StageRunner(tmp_path, jobs=0)


# A stage that writes its thread setting, then waits (up to 60 s) until the stage named in argv[3] has started:
# two such stages finish only if they run side by side.
MEETING = ("import os\nout, me, other = map(pathlib.Path, sys.argv[1:4])\n"
           "me.write_text('started')\n"
           "for _ in range(600):\n    if other.exists(): break\n    time.sleep(0.1)\n"
           "else:\n    sys.exit('never met ' + str(other))\n"
           "out.write_text(os.environ.get('OMP_NUM_THREADS', '') + ' ' + os.environ.get('MKL_NUM_THREADS', ''))\n")


def test_concurrent_stages_run_side_by_side_with_their_share_of_threads(loop, tmp_path, capsys):
    script = write_script(tmp_path / "meet.py", MEETING)
    runner = loop.StageRunner(tmp_path, num_threads=2, jobs=2, verbose=False)

    def task(name, other):
        done = tmp_path / f"{name}.txt"
        runner.run(name, str(script), [done, tmp_path / f"{name}.started", tmp_path / f"{other}.started"], done)
        return done.read_text()

    assert runner.run_concurrently([lambda: task("a", "b"), lambda: task("b", "a")]) == ["1 1", "1 1"]
    assert set(runner.durations) == {"a", "b"}
    assert {p.name for p in (tmp_path / "logs").glob("*.log")} == {"a.log", "b.log"}  # one log per stage
    printed = capsys.readouterr().out
    assert "[run ] a (1 threads; log: " in printed and "[done] b in" in printed
    # A stage outside run_concurrently has all the threads.
    single = tmp_path / "single.txt"
    runner.run("single", str(script), [single, tmp_path / "single.started", tmp_path / "single.started"], single)
    assert single.read_text() == "2 2"
    # One job: the tasks run in order, in this thread.
    order = []
    one = loop.StageRunner(tmp_path, num_threads=2, verbose=False)
    assert one.run_concurrently([lambda: order.append(1) or "x", lambda: order.append(2) or "y"]) == ["x", "y"]
    assert order == [1, 2]


def test_a_failed_concurrent_stage_stops_the_run_and_names_its_log(loop, tmp_path):
    fails = write_script(tmp_path / "fails.py", "print('broken here')\nsys.exit(4)\n")
    slow = write_script(tmp_path / "slow.py", "time.sleep(1)\npathlib.Path(sys.argv[1]).write_text('ok')\n")
    runner = loop.StageRunner(tmp_path, num_threads=2, jobs=2, verbose=False)
    slow_done, after = tmp_path / "slow.txt", tmp_path / "after.txt"

    def chain():  # a student and its evaluation: the evaluation does not start once another stage failed
        runner.run("slow", str(slow), [slow_done], slow_done)
        runner.run("after-slow", str(slow), [after], after)

    never = tmp_path / "never.txt"
    tasks = [chain, lambda: runner.run("broken", str(fails), [], tmp_path / "missing.txt"),
             lambda: runner.run("queued", str(slow), [never], never)]
    log = tmp_path / "logs" / "broken.log"
    with pytest.raises(loop.StageError, match=rf"stage 'broken' failed \(exit code 4\); last lines of {log}"
                                              r"(.|\n)*broken here"):
        runner.run_concurrently(tasks)
    # The running stage finished (its output is valid for a rerun); nothing started after the failure.
    assert slow_done.read_text() == "ok" and not after.exists() and not never.exists()
    assert not (tmp_path / "logs" / "queued.log").exists()
    # The rerun resumes: the finished stage is skipped.
    runner.run_concurrently([lambda: runner.run("slow", str(slow), [slow_done], slow_done)])
    assert runner.durations["slow"] > 0
