"""The DAKTer loop as resumable stages: train the joint diffusion, generate pairs, distil students, score them.

Each stage runs one of the package's commands (`python -m dakter_hf.commands.<name>`) in a subprocess, logs to
`<work_dir>/logs/<stage>.log`, and is skipped when its output is complete; the commands themselves resume from their
latest checkpoint, so an interrupted loop continues where it stopped. With `jobs > 1`, independent stages run side by
side (`StageRunner.run_concurrently`) and generation runs as `jobs` processes over disjoint blocks of rows
(`accelerate launch`), each with `num_threads // jobs` threads.
"""

from __future__ import annotations

import difflib
import json
import os
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import FIRST_EXCEPTION, ThreadPoolExecutor, wait
from dataclasses import dataclass, field
from pathlib import Path
from typing import TextIO

from filelock import FileLock

from ..filesystem import write_text_atomic
from ..precision import cpu_description


__all__ = [
    "COMMANDS",
    "StageError",
    "StageRunner",
    "calibrate_temperature",
    "concatenate_pairs",
    "distill_student",
    "generate_mask_pairs",
    "generate_pairs",
    "label_pairs_with_generator",
    "relabel_pairs",
    "train_generator",
    "write_json",
]

#: The module each kind of stage runs with `python -m`.
COMMANDS = {
    "train": "dakter_hf.commands.train",
    "generate": "dakter_hf.commands.generate",
    "distill": "dakter_hf.commands.distill",
    "evaluate": "dakter_hf.commands.evaluate",
    "relabel": "dakter_hf.commands.relabel",
    "calibrate": "dakter_hf.commands.calibrate",
    "concatenate": "dakter_hf.commands.concatenate",
}
#: The example scripts the stages ran before they ran the commands: a stage log written then names them, and a
#: complete stage whose log shows the same arguments is still reused.
FORMER_SCRIPTS = {
    COMMANDS["train"]: "train_joint_diffusion.py",
    COMMANDS["generate"]: "generate.py",
    COMMANDS["distill"]: "distill.py",
    COMMANDS["evaluate"]: "evaluate.py",
}


class StageError(RuntimeError):
    """A stage failed, or a complete stage ran with other arguments than the ones asked for now."""


def write_json(path: Path, data) -> None:
    """Write `data` as JSON through a temporary file ([`write_text_atomic`]), so an interruption never leaves a
    half-written `path`, and two benchmark runs sharing an output directory never rename each other's file."""
    write_text_atomic(path, json.dumps(data, indent=2) + "\n")


def _argument_changes(then: Sequence[str], now: Sequence[str]) -> str:
    """The differing parts of two argument lists, each with the flag before it: '--steps 600 -> --steps 601'."""
    changes = []
    for op, i1, i2, j1, j2 in difflib.SequenceMatcher(a=list(then), b=list(now), autojunk=False).get_opcodes():
        if op != "equal":
            context = [then[i1 - 1]] if i1 > 0 and j1 > 0 and then[i1 - 1].startswith("--") else []
            changes.append(f"{' '.join(context + list(then[i1:i2])) or '(nothing)'} -> "
                           f"{' '.join(context + list(now[j1:j2])) or '(nothing)'}")
    return "; ".join(changes)


@dataclass
class StageRunner:
    """Runs stages as subprocesses, each with its own log, skipping the ones already complete.

    The wall time of every finished stage is kept in `logs/stage_seconds.json` as soon as it finishes, so a loop that is
    interrupted later still reports it when rerun (a stage that resumed reports the run that finished it); runners
    sharing a `work_dir` merge their times into that file. A complete stage is only skipped if its log shows it ran
    with the same arguments: a rerun with other settings in the same `work_dir` (say, more training steps) raises
    instead of silently reusing the old output.

    Args:
        work_dir (`Path`): where outputs and `logs/<stage>.log` go.
        num_threads (`int`, *optional*): torch threads of the loop (`OMP_NUM_THREADS` / `MKL_NUM_THREADS` of a stage
            run alone); one thread avoids the large slow-downs of oversubscribed cores when the machine is busy.
        jobs (`int`): stages run side by side by [`run_concurrently`], and processes of a generation stage
            ([`generate_pairs`]); each gets `threads_per_job` threads. 1 (the default) runs everything in order.
        verbose (`bool`): echo each stage's command.
    """

    work_dir: Path
    num_threads: int | None = None
    jobs: int = 1
    verbose: bool = True
    durations: dict[str, float] = field(default_factory=dict)
    machines: dict[str, dict] = field(default_factory=dict)
    _recorded: dict[str, float] = field(init=False, repr=False)

    def __post_init__(self):
        if self.jobs < 1:
            raise ValueError(f"`jobs` must be a positive integer, got {self.jobs}")
        self._recorded = self._read_recorded(self.durations_path, float)
        self._recorded_machines = self._read_recorded(self.machines_path, dict)
        self._lock = threading.Lock()
        self._stop = threading.Event()  # set when a concurrent stage failed: no further stage starts
        self._concurrent = False

    @property
    def threads_per_job(self) -> int | None:
        """Threads of each of `jobs` concurrent stages or generation processes: `max(1, num_threads // jobs)`
        (`num_threads` defaults to the CPU count then); `num_threads` itself when `jobs` is 1."""
        if self.jobs == 1:
            return self.num_threads
        return max(1, (self.num_threads or os.cpu_count() or 1) // self.jobs)

    @property
    def durations_path(self) -> Path:
        """The JSON file of finished stages' wall times, `{stage: seconds}`."""
        return self.work_dir / "logs" / "stage_seconds.json"

    @property
    def machines_path(self) -> Path:
        """The JSON file of the machine each finished stage ran on, `{stage: {cpu_model, cpu_capability, ...}}`:
        outputs of one work_dir may come from several machines (a run resumed elsewhere), whose speeds differ."""
        return self.work_dir / "logs" / "stage_machines.json"

    @staticmethod
    def _read_recorded(path: Path, kind: type) -> dict:
        if not path.exists():
            return {}
        try:
            return {str(k): kind(v) for k, v in json.loads(path.read_text(encoding="utf-8")).items()}
        # Unreadable: the records are informative only, and the outputs are not lost.
        except (ValueError, AttributeError, TypeError):
            print(f"[warn] ignoring unreadable {path}", flush=True)
            return {}

    def _record_duration(self, name: str, seconds: float, threads: int | None) -> None:
        """Add `name`'s time and machine to the files, merged under a file lock with what other runners of this
        `work_dir` (other processes, e.g. two generator seeds side by side) recorded since this one read them."""
        self.durations_path.parent.mkdir(parents=True, exist_ok=True)
        machine = {**cpu_description(), "threads": threads, "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
        self.machines[name] = machine
        with self._lock, FileLock(f"{self.durations_path}.lock"):
            self._recorded = {**self._recorded, **self._read_recorded(self.durations_path, float), name: seconds}
            write_json(self.durations_path, self._recorded)
            self._recorded_machines = {**self._recorded_machines, **self._read_recorded(self.machines_path, dict),
                                       name: machine}
            write_json(self.machines_path, self._recorded_machines)

    def _check_same_arguments(self, name: str, program: str, arguments: Sequence[str], done: Path) -> None:
        """Raise if the last command in the stage's log ran `program` with other arguments (no log: nothing to
        check)."""
        log_path = self.work_dir / "logs" / f"{name}.log"
        if not log_path.exists():
            return
        commands = [line[2:].rstrip() for line in log_path.read_text(encoding="utf-8", errors="replace").splitlines()
                    if line.startswith("$ ")]
        if not commands:
            return
        names = [Path(program).name] + ([FORMER_SCRIPTS[program]] if program in FORMER_SCRIPTS else [])
        now = [str(a) for a in arguments]
        last = commands[-1]
        for script_name in names:
            wanted = " ".join([script_name, *now])
            if last == wanted or last.endswith("/" + wanted) or last.endswith(" " + wanted):
                return
        then = last.split()
        for script_name in names:
            start = last.find(script_name + " ")
            if start >= 0:
                then = last[start + len(script_name) + 1:].split()
                break
        raise StageError(
            f"stage {name!r} is complete ({done}) but ran with other arguments than now ({log_path}): "
            f"{_argument_changes(then, now)}. Use another output directory for other settings, or delete that "
            "stage's output to recompute it.")

    def run(self, name: str, program: str, arguments: Sequence[str], done: Path, processes: int = 1) -> float:
        """Run `program` with `arguments` unless `done` exists; return the wall time of this call (0 if skipped).

        `program` is a module run with `python -m` (e.g. `dakter_hf.commands.distill`, see `COMMANDS`) or the path of
        a Python script (ending in `.py`). `processes > 1` starts it through `accelerate launch` with that many
        processes (on CPUs too, with gloo), each with `threads_per_job` threads; a stage inside
        [`run_concurrently`] also gets `threads_per_job` threads, any other `num_threads`.

        `durations[name]` is that time, or for a skipped stage the time recorded when it finished (0 if none was);
        `machines[name]` the CPU it ran on ([`cpu_description`], with its threads), when that was recorded.

        Raises:
            `StageError`: the stage fails, or it is complete but its log shows other arguments.
        """
        if done.exists():
            self._check_same_arguments(name, program, arguments, done)
            print(f"[skip] {name}: {done} exists")
            self.durations.setdefault(name, self._recorded.get(name, 0.0))
            if name in self._recorded_machines:
                self.machines.setdefault(name, self._recorded_machines[name])
            return 0.0
        if self._stop.is_set():
            raise StageError(f"stage {name!r} not started: another stage failed")
        log_path = self.work_dir / "logs" / f"{name}.log"
        log_path.parent.mkdir(parents=True, exist_ok=True)
        entry = [program] if program.endswith(".py") else ["-m", program]
        command = [sys.executable, *_launcher(processes), *entry, *map(str, arguments)]
        threads = self.threads_per_job if processes > 1 or self._concurrent else self.num_threads
        env = dict(os.environ)
        if threads:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(threads)
        how = f"{processes} processes x {threads} threads" if processes > 1 else f"{threads or 'default'} threads"
        print(f"[run ] {name} ({how}; log: {log_path})" + (f"\n       {' '.join(command)}" if self.verbose else ""),
              flush=True)
        start = time.perf_counter()
        with open(log_path, "a", encoding="utf-8") as log:
            log.write(f"\n$ {' '.join(command)}\n")
            log.flush()
            returncode = self._execute(command, log, env)
        elapsed = time.perf_counter() - start
        self.durations[name] = elapsed
        if returncode != 0 or not done.exists():
            tail = log_path.read_text(encoding="utf-8", errors="replace").splitlines()[-15:]
            print(f"[fail] {name} (log: {log_path})", flush=True)
            raise StageError(f"stage {name!r} failed (exit code {returncode}); last lines of {log_path}:\n"
                               + "\n".join(tail))
        self._record_duration(name, elapsed, threads)
        print(f"[done] {name} in {elapsed:.0f} s", flush=True)
        return elapsed

    @staticmethod
    def _execute(command: Sequence[str], log: TextIO, env: Mapping[str, str]) -> int:
        """Run one stage's `command` (`[python, ..., module or script, *arguments]`) with `env`, its stdout and stderr
        appended to the open `log`; returns its exit code. Every stage runs through here (tests replace it to run
        stages in-process, see `tests/in_process_stages.py`)."""
        return subprocess.run(command, stdout=log, stderr=subprocess.STDOUT, env=env).returncode

    def run_concurrently(self, tasks: Sequence[Callable[[], object]]) -> list:
        """Call `tasks` (each runs one or more stages in order, e.g. a student and its evaluation) up to `jobs` at a
        time, and return their results in the order of `tasks`; with `jobs == 1`, one after the other.

        The stages of concurrent tasks get `threads_per_job` threads each. When a task fails, no further stage starts,
        the stages already running finish (their outputs stay valid for a rerun), and the first failure is raised
        (a `StageError` names the stage and its log).
        """
        if self.jobs == 1:
            return [task() for task in tasks]

        failures = []

        def guarded(task):
            # The stop flag is set before the failed task's worker takes the next task, so none starts after it.
            try:
                return task()
            except BaseException as error:
                with self._lock:
                    if not self._stop.is_set():
                        failures.append(error)
                    self._stop.set()
                raise

        self._concurrent, self._stop = True, threading.Event()
        try:
            with ThreadPoolExecutor(max_workers=self.jobs, thread_name_prefix="stage") as pool:
                futures = [pool.submit(guarded, task) for task in tasks]
                wait(futures, return_when=FIRST_EXCEPTION)
                if self._stop.is_set():
                    for future in futures:
                        future.cancel()
                    wait(futures)
                    raise failures[0]
                return [future.result() for future in futures]
        finally:
            self._concurrent = False


def train_generator(runner: StageRunner, output_dir: Path, data_args: Sequence[str], **options) -> Path:
    """Train the joint diffusion (`dakter_hf.commands.train`); resumes from its latest checkpoint."""
    arguments = [*data_args, "--output_dir", output_dir, "--resume_from_checkpoint", "latest",
                 *_flags(options)]
    runner.run(f"generator-{output_dir.name}", COMMANDS["train"], arguments, output_dir / "model_index.json")
    return output_dir


def calibrate_temperature(runner: StageRunner, pipeline_dir: Path, data_args: Sequence[str], output_json: Path,
                          **options) -> dict:
    """Fit the generator's soft-label temperature on a labelled split and save it as the pipeline's default
    (`dakter_hf.commands.calibrate --save`); returns the fit (`output_json`)."""
    arguments = ["--pipeline", pipeline_dir, *data_args, "--save", "--output_json", output_json, *_flags(options)]
    runner.run(f"calibrate-{pipeline_dir.name}", COMMANDS["calibrate"], arguments, output_json)
    return json.loads(output_json.read_text())


def generate_pairs(runner: StageRunner, pipeline_dir: Path, output_dir: Path, num_samples: int, **options) -> Path:
    """Generate `num_samples` pairs (`dakter_hf.commands.generate`); resumes at the first missing index. With
    `runner.jobs > 1`, `jobs` processes generate disjoint blocks of rows (`accelerate launch`)."""
    arguments = ["--pipeline", pipeline_dir, "--num_samples", num_samples, "--output_dir", output_dir,
                 *_flags(options)]
    runner.run(f"generate-{output_dir.name}", COMMANDS["generate"], arguments, output_dir / "dataset_info.json",
               processes=runner.jobs)
    return output_dir


def generate_mask_pairs(runner: StageRunner, pipeline_dir: Path, output_dir: Path, data_args: Sequence[str],
                        **options) -> Path:
    """Draw images for the masks of the dataset of `data_args` (`dakter_hf.commands.generate --masks_from_dataset`);
    resumes at the first missing index. With `runner.jobs > 1`, `jobs` processes draw disjoint blocks of rows."""
    arguments = ["--pipeline", pipeline_dir, "--output_dir", output_dir, "--masks_from_dataset", *data_args,
                 *_flags(options)]
    runner.run(f"generate-{output_dir.name}", COMMANDS["generate"], arguments, output_dir / "dataset_info.json",
               processes=runner.jobs)
    return output_dir


def concatenate_pairs(runner: StageRunner, parts: Sequence[Path], num_samples: Sequence[int], output_dir: Path) -> Path:
    """Concatenate the first `num_samples` rows of each generated set of `parts` (`dakter_hf.commands.concatenate`)."""
    arguments = ["--generated_dataset", *parts, "--num_samples", *num_samples, "--output_dir", output_dir]
    runner.run(f"concatenate-{output_dir.name}", COMMANDS["concatenate"], arguments,
               output_dir / "dataset_info.json")
    return output_dir


def distill_student(runner: StageRunner, output_dir: Path, data_args: Sequence[str], mode: str,
                    generated_dataset: Path | None, **options) -> dict:
    """Train one student (`dakter_hf.commands.distill`) and return its metrics report."""
    arguments = [*data_args, "--mode", mode, "--output_dir", output_dir, "--resume_from_checkpoint", "latest",
                 *_flags(options)]
    if mode != "real":
        arguments += ["--generated_dataset", generated_dataset]
    runner.run(f"student-{output_dir.name}", COMMANDS["distill"], arguments, output_dir / "final" / "config.json")
    return json.loads((output_dir / "metrics.json").read_text())


def relabel_pairs(runner: StageRunner, student_dir: Path, generated_dataset: Path, output_dir: Path,
                  **options) -> Path:
    """Relabel a generated set with a student's soft labels (`dakter_hf.commands.relabel`): the control arm."""
    arguments = ["--generated_dataset", generated_dataset, "--student", student_dir, "--output_dir", output_dir,
                 *_flags(options)]
    runner.run(f"relabel-{output_dir.name}", COMMANDS["relabel"], arguments, output_dir / "dataset_info.json")
    return output_dir


def label_pairs_with_generator(runner: StageRunner, generator_dir: Path, generated_dataset: Path, output_dir: Path,
                               score_only: bool = False, **options) -> Path:
    """Label a generated set with its generator's segmentation pipeline (`dakter_hf.commands.relabel --labeller`):
    posterior soft labels (`num_samples` draws averaged) or, with `score_only`, the pairs unchanged and their
    `pair_quality` scores added."""
    arguments = ["--generated_dataset", generated_dataset, "--labeller", generator_dir, "--output_dir", output_dir,
                 *_flags({"score_only": score_only, **options})]
    runner.run(f"{'score' if score_only else 'relabel'}-{output_dir.name}", COMMANDS["relabel"], arguments,
               output_dir / "dataset_info.json")
    return output_dir


def _launcher(processes: int) -> list[str]:
    """`python` arguments that start a module as `processes` processes with `accelerate launch` (none for one): CPU
    processes with gloo, on a free port so that several launches on one machine do not collide."""
    if processes == 1:
        return []
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return ["-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", str(processes), "--num_machines",
            "1", "--mixed_precision", "no", "--dynamo_backend", "no", "--main_process_port", str(port)]


def _flags(options: Mapping[str, object]) -> list[str]:
    """Command-line flags of `options`: `True` gives a bare flag, `None` / `False` none, a list or tuple one value per
    item."""
    flags = []
    for key, value in options.items():
        if value is None or value is False:
            continue
        flags.append(f"--{key}")
        if isinstance(value, (list, tuple)):
            flags.extend(str(v) for v in value)
        elif value is not True:
            flags.append(str(value))
    return flags
