"""Run the stages of `dakter_hf.experiments.StageRunner` in the test process instead of one fresh interpreter each.

A stage normally starts `python -m dakter_hf.commands.<name> ...`, and every such process imports torch, diffusers,
transformers, datasets and accelerate again (`python -m dakter_hf.commands.distill --help` alone took 17.9 s of CPU
on the 2026-12-05 machine), against seconds or less for the toy work the tests give it. `InProcessStages` calls the
same command's `main(argv)` in this process instead, with what a fresh process would have: a fresh Accelerate state,
the stage's `OMP_NUM_THREADS` as torch's thread count, `sys.argv[0]` naming the module, the command's stdout / stderr
(prints, warnings, progress bars, tracebacks) appended to the stage's log after its `$ command` line, and the exit
code `python -m` would give.

What still runs as a real subprocess: commands named in `subprocess_commands` (so that a test keeps one real
end-to-end run of a command that no other test launches), multi-process stages (`accelerate launch`), scripts, and
any stage started outside the main thread (`StageRunner.run_concurrently` with `jobs > 1`: in-process stages side by
side would share torch's and Accelerate's global state). Tests of the stage mechanics themselves
(`test_dakter_loop.py`) and of `--jobs` keep real subprocesses throughout.

Logging as in a fresh process: while a command runs, the root logger has none of the session's handlers, so the
command's `logging.basicConfig` installs its own handler on the stage's log; afterwards that handler is removed and the
session's handlers and level come back (a handler left on the closed log would fail on every later record).
"""

from __future__ import annotations

import contextlib
import importlib
import logging
import sys
import threading
import traceback
from collections.abc import Iterable, Mapping, Sequence
from typing import TextIO

import pytest

from dakter_hf.experiments.stages import StageRunner


COMMAND_PREFIX = "dakter_hf.commands."


class InProcessStages:
    """Replaces `StageRunner._execute` (with `monkeypatch`) to run `dakter_hf.commands.*` stages in-process.

    Args:
        monkeypatch (`pytest.MonkeyPatch`): undoes the replacement at the end of the test.
        subprocess_commands (`Iterable[str]`): command names (`"calibrate"`, `"relabel"`, ...) that keep running as
            real subprocesses.

    Attributes:
        in_process (`list[str]`): the command names of the stages run in-process, in order.
        subprocesses (`list[str]`): the programs (module or script) of the stages run as subprocesses, in order.
    """

    def __init__(self, monkeypatch: pytest.MonkeyPatch, subprocess_commands: Iterable[str] = ()):
        unknown = {f"{COMMAND_PREFIX}{name}" for name in subprocess_commands} - set(_known_command_modules())
        if unknown:
            raise ValueError(f"`subprocess_commands` names no command of dakter_hf.commands: {sorted(unknown)}")
        self.subprocess_commands = frozenset(subprocess_commands)
        self.in_process: list[str] = []
        self.subprocesses: list[str] = []
        self._real_execute = StageRunner._execute
        monkeypatch.setattr(StageRunner, "_execute", staticmethod(self._execute))

    def _execute(self, command: Sequence[str], log: TextIO, env: Mapping[str, str]) -> int:
        module_name = command[2] if len(command) > 2 and command[1] == "-m" else None
        name = module_name[len(COMMAND_PREFIX):] if module_name and module_name.startswith(COMMAND_PREFIX) else None
        concurrent = threading.current_thread() is not threading.main_thread()
        if name is None or name in self.subprocess_commands or concurrent:
            self.subprocesses.append(module_name or command[1])
            return self._real_execute(command, log, env)
        self.in_process.append(name)
        return run_command_in_process(importlib.import_module(module_name), list(command[3:]), log,
                                      env.get("OMP_NUM_THREADS"))


def run_command_in_process(module, argv: list[str], log: TextIO, num_threads: str | None = None) -> int:
    """Call `module.main(argv)` as `python -m <module> <argv>` would run it, output appended to `log`; returns the
    exit code: 0, the code of a `SystemExit` (argparse and `command_line_errors` exit with 2), or 1 after an
    exception, whose traceback is written to `log`."""
    import torch
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
    previous_threads, previous_argv0 = torch.get_num_threads(), sys.argv[0]
    root = logging.getLogger()
    previous_handlers, previous_level = root.handlers[:], root.level
    if num_threads:
        torch.set_num_threads(int(num_threads))
    sys.argv[0] = module.__file__
    for handler in previous_handlers:
        root.removeHandler(handler)
    try:
        with contextlib.redirect_stdout(log), contextlib.redirect_stderr(log):
            try:
                result = module.main(argv)
            except SystemExit as exit_:
                if exit_.code is None or isinstance(exit_.code, int):
                    return exit_.code or 0
                print(exit_.code, file=log)  # what the interpreter does with `sys.exit("message")`
                return 1
            except Exception:
                traceback.print_exc(file=log)
                return 1
            # `python -m` ignores what `main` returns, except the commands ending in `sys.exit(main())`.
            return result if isinstance(result, int) else 0
    finally:
        for handler in root.handlers[:]:
            root.removeHandler(handler)
            handler.close()
        for handler in previous_handlers:
            root.addHandler(handler)
        root.setLevel(previous_level)
        log.flush()
        sys.argv[0] = previous_argv0
        torch.set_num_threads(previous_threads)
        AcceleratorState._reset_state(reset_partial_state=True)


def _known_command_modules() -> list[str]:
    import pkgutil

    import dakter_hf.commands

    return [f"{COMMAND_PREFIX}{m.name}" for m in pkgutil.iter_modules(dakter_hf.commands.__path__)]
