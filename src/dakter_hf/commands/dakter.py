"""`dakter`: one command for the whole DAKTer workflow, with a subcommand per step (as `accelerate` or `hf`).

    dakter train ...       train the joint image + soft-label diffusion generator  (examples/train_joint_diffusion.py)
    dakter generate ...    generate a dataset of synthetic pairs with it           (examples/generate.py)
    dakter calibrate ...   fit its soft-label temperature on real labelled pairs   (dakter-calibrate)
    dakter distill ...     train a student segmentation model on real + generated  (examples/distill.py)
    dakter evaluate ...    evaluate a saved student                                (examples/evaluate_student.py)
    dakter relabel ...     relabel (or score) generated pairs with a labeller      (control arm, levers b / e)
    dakter concatenate ... concatenate generated datasets (e.g. joint + mask-conditioned pairs)
    dakter app PIPELINE    a web app to look at a generator
    dakter env             versions and hardware for a bug report

Each subcommand takes exactly the arguments of the script it mirrors (`dakter SUBCOMMAND --help` lists them with
their defaults): the two share one parser in `dakter_hf.commands.<subcommand>`. Distributed runs go through
Accelerate as before, e.g. `accelerate launch examples/distill.py ...`.
"""

import importlib
import sys

from .. import __version__


#: Subcommand -> (module in `dakter_hf.commands` with `parse_args(argv)` and `main(argv)`, one-line description).
COMMANDS = {
    "train": ("train", "train the joint image + soft-label diffusion generator"),
    "generate": ("generate", "generate a dataset of synthetic image / soft-label pairs with a trained generator"),
    "calibrate": ("calibrate", "fit a generator's soft-label temperature on real labelled pairs (NLL) and save it"),
    "distill": ("distill", "train a student segmentation model on real and generated pairs"),
    "evaluate": ("evaluate", "evaluate a saved student on a labelled split"),
    "relabel": ("relabel", "relabel a generated dataset with a student's or a generator's soft labels, or score it"),
    "concatenate": ("concatenate", "concatenate generated datasets into one (e.g. joint and mask-conditioned pairs)"),
    "app": ("app", "serve a web app to sample a generator and download the pairs (needs dakter_hf[app])"),
    "env": ("env", "print the versions and hardware to paste into a bug report"),
}


def usage() -> str:
    """The text of `dakter --help`."""
    width = max(map(len, COMMANDS))
    lines = ["usage: dakter <command> [<args>]", "", "DAKTer: joint SAR image + soft-label diffusion and knowledge "
             "distillation.", "", "commands:"]
    lines += [f"  {name:<{width}}  {description}" for name, (_, description) in COMMANDS.items()]
    lines += ["", "`dakter <command> --help` lists the arguments of a command with their defaults."]
    return "\n".join(lines)


def load_command(name: str):
    """The module implementing subcommand `name`."""
    module, _ = COMMANDS[name]
    return importlib.import_module(f"{__package__}.{module}")


def main(argv: list[str] | None = None) -> int:
    """Run `dakter <command> ...`; returns the exit code."""
    argv = sys.argv[1:] if argv is None else list(argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(usage())
        return 0 if argv else 2
    if argv[0] == "--version":
        print(f"dakter_hf {__version__}")
        return 0
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"{usage()}\n\ndakter: error: unknown command {name!r} (choose from {', '.join(COMMANDS)})",
              file=sys.stderr)
        return 2
    command = load_command(name)
    program = sys.argv[0]
    sys.argv[0] = f"dakter {name}"  # parsers without an explicit `prog` show `usage: dakter <name> ...`
    try:
        code = command.main(rest)
    finally:
        sys.argv[0] = program
    # `distill` and `evaluate` return their results (a dict) for callers in Python: a finished run exits with 0.
    return code if isinstance(code, int) else 0


if __name__ == "__main__":
    sys.exit(main())
