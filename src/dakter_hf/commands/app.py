"""`dakter app PIPELINE`: serve the Gradio app of a DAKTer pipeline (see `dakter_hf.app`).

    dakter app outputs/joint                 # http://127.0.0.1:7860
    dakter app org/dakter-sos --port 8080    # a Hub repository
"""

import argparse
import sys

from ..app import build_app, load_pipeline


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Parse the command line of `dakter app`."""
    parser = argparse.ArgumentParser(
        prog="dakter app", formatter_class=argparse.ArgumentDefaultsHelpFormatter,
        description="Serve a web app to sample a DAKTer pipeline (image | soft label | overlay) and download the "
                    "pairs. Needs the `app` extra: pip install \"dakter_hf[app]\".",
    )
    parser.add_argument("pipeline", help="Pipeline directory or Hub repository id.")
    parser.add_argument("--host", default="127.0.0.1",
                        help="Address to listen on (0.0.0.0 to serve other machines).")
    parser.add_argument("--port", type=int, default=7860, help="Port to listen on.")
    parser.add_argument("--device", default=None, help="Device of the pipeline (cpu, cuda, mps); None: the CPU.")
    parser.add_argument("--share", action="store_true", help="Also open a public Gradio share link.")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Run `dakter app` until interrupted; returns the exit code."""
    args = parse_args(argv)
    try:
        pipe = load_pipeline(args.pipeline, device=args.device)
    except OSError as error:
        print(f"dakter app: {error}", file=sys.stderr)
        return 2
    build_app(pipe, pipeline_name=args.pipeline).launch(server_name=args.host, server_port=args.port,
                                                         share=args.share)
    return 0


if __name__ == "__main__":
    sys.exit(main())
