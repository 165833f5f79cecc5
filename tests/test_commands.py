"""The `dakter` command: subcommands delegate to `dakter_hf.commands.<name>` with the same arguments as the example
scripts, `--help` lists defaults, `dakter env` reports versions."""

import importlib
import subprocess
import sys

import pytest

from dakter_hf.commands import dakter


def test_usage_and_unknown_command(capsys):
    assert dakter.main([]) == 2
    assert "train" in capsys.readouterr().out
    assert dakter.main(["--help"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in dakter.COMMANDS)
    assert dakter.main(["fly"]) == 2
    assert "unknown command 'fly'" in capsys.readouterr().err


@pytest.mark.parametrize("name", list(dakter.COMMANDS))
def test_subcommand_delegates_with_the_same_arguments(name, monkeypatch):
    module = importlib.import_module(f"dakter_hf.commands.{dakter.COMMANDS[name][0]}")
    seen = {}
    monkeypatch.setattr(module, "main", lambda argv=None: seen.setdefault("argv", argv) and 3)
    assert dakter.main([name, "--flag", "value"]) == 3
    assert seen["argv"] == ["--flag", "value"]


@pytest.mark.parametrize("name", ["distill", "evaluate"])
def test_a_command_returning_its_results_exits_with_zero(name, monkeypatch):
    # distill / evaluate return their metrics (a dict) to Python callers; `dakter <name>` must still exit with 0
    module = importlib.import_module(f"dakter_hf.commands.{dakter.COMMANDS[name][0]}")
    monkeypatch.setattr(module, "main", lambda argv=None: {"mean_iou": 0.5})
    assert dakter.main([name]) == 0
    monkeypatch.setattr(module, "main", lambda argv=None: None)
    assert dakter.main([name]) == 0


@pytest.mark.parametrize("name", list(dakter.COMMANDS))
def test_help_lists_defaults(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        dakter.main([name, "--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    assert out.startswith("usage: dakter")
    if name != "env":  # env takes no arguments
        assert "default" in out


def test_env_reports_versions():
    result = subprocess.run([sys.executable, "-m", "dakter_hf.commands.dakter", "env"], capture_output=True, text=True,
                            check=True)
    import torch

    assert f"torch version: {torch.__version__}" in result.stdout
    assert "dakter_hf version" in result.stdout and "Accelerator" in result.stdout
    from dakter_hf.precision import cpu_has_native_bf16, cpu_model

    assert f"- CPU: {cpu_model()}" in result.stdout
    expected = {True: "- CPU bf16 instructions: yes", False: "- CPU bf16 instructions: no", None: "unknown"}
    assert expected[cpu_has_native_bf16()] in result.stdout


def test_app_with_a_missing_pipeline_is_a_clear_error(tmp_path, capsys):
    assert dakter.main(["app", str(tmp_path / "no-such-pipeline")]) == 2
    assert "no-such-pipeline" in capsys.readouterr().err
