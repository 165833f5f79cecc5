"""How every command reports a user error: one line on stderr and exit code 2, a traceback only when debugging.

`@command_line_errors` wraps a command's `main(argv=None)`: a [`DAKTerError`] (bad input, busy output directory,
diverged run; `dakter_hf.data.DataError` is one) becomes `<prog>: error: <message>` and `SystemExit(2)`, as
argparse does for a bad flag. With `--debug` on the command line or `DAKTER_DEBUG=1` the exception propagates
with its full traceback. Other exceptions are bugs and always keep their traceback.
"""

import functools
import os
import sys

from ..errors import DAKTerError


DEBUG_FLAG = "--debug"
DEBUG_HELP = "Show the full traceback of an error instead of its one-line message (or set DAKTER_DEBUG=1)."


def debugging(argv: list[str] | None = None) -> bool:
    """Whether errors should keep their traceback: `--debug` in `argv` (default `sys.argv`) or `DAKTER_DEBUG=1`."""
    argv = sys.argv[1:] if argv is None else argv
    return DEBUG_FLAG in argv or os.environ.get("DAKTER_DEBUG", "").strip().lower() in ("1", "true", "yes")


def command_line_errors(main):
    """Decorate a command's `main(argv=None)` so that a [`DAKTerError`] ends it with one line and exit code 2."""

    @functools.wraps(main)
    def wrapper(argv: list[str] | None = None, *args, **kwargs):
        try:
            return main(argv, *args, **kwargs)
        except DAKTerError as error:
            if debugging(argv):
                raise
            prog = os.path.basename(sys.argv[0]) or "dakter_hf"
            message = " ".join(str(error).split())  # one line, whatever the message holds
            print(f"{prog}: error: {message} (run with {DEBUG_FLAG} for the traceback)", file=sys.stderr)
            raise SystemExit(2) from None

    return wrapper
