"""Serve the Gradio app of a DAKTer pipeline: `python examples/app.py PIPELINE` (the same as `dakter app PIPELINE`).

Needs the `app` extra: pip install "dakter_hf[app]".
"""

import sys

from dakter_hf.commands.app import main


if __name__ == "__main__":
    sys.exit(main())
