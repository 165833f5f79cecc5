"""Relabel a generated dataset with a student: the same images, the student's soft labels (the control arm that
measures what the generator's own labels are worth).

    dakter relabel --generated_dataset outputs/generated \\
        --student outputs/student-real/final --output_dir outputs/generated-relabelled

The copy keeps every row's image and seed and replaces `soft_label` (the student's softmax, upsampled to the stored
size, in the stored type) and `label` (its argmax); distil from it with `examples/distill.py --generated_dataset`.
"""

import argparse
import logging
import os

from ..distill.data import load_generated_dataset
from ..distill.relabel import relabel_to_disk
from .evaluate import load_checkpoint


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """Command-line options of the relabelling command."""
    parser = argparse.ArgumentParser(description="Relabel generated pairs with a student's soft labels.",
                                     formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    parser.add_argument("--generated_dataset", required=True, help="A generated dataset (`save_to_disk` directory).")
    parser.add_argument("--student", required=True,
                        help="The labelling model: a saved student directory (with its preprocessor_config.json).")
    parser.add_argument("--output_dir", required=True, help="Where the relabelled dataset goes (must not exist).")
    parser.add_argument("--batch_size", type=int, default=32, help="Images per forward pass.")
    parser.add_argument("--temperature", type=float, default=1.0, help="Softmax temperature of the new soft labels.")
    args = parser.parse_args(argv)
    if args.batch_size < 1:
        parser.error(f"--batch_size must be a positive integer, got {args.batch_size}.")
    if not args.temperature > 0:
        parser.error(f"--temperature must be > 0, got {args.temperature}.")
    if os.path.exists(args.output_dir):
        parser.error(f"--output_dir {args.output_dir} already exists; choose another directory.")
    return args


def main(argv: list[str] | None = None) -> int:
    """Relabel `--generated_dataset` with `--student` into `--output_dir`. Returns 0 (errors exit with a message)."""
    args = parse_args(argv)
    logging.basicConfig(format="%(asctime)s - %(levelname)s - %(name)s - %(message)s", level=logging.INFO)
    try:
        generated = load_generated_dataset(args.generated_dataset)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    model, image_processor = load_checkpoint(argparse.Namespace(
        model_name_or_path=args.student, revision=None, hub_token=None, resolution=None))
    try:
        relabel_to_disk(generated, model, image_processor, args.output_dir, batch_size=args.batch_size,
                        temperature=args.temperature)
    except ValueError as error:
        raise SystemExit(f"error: {error}") from error
    print(f"Relabelled {len(generated)} pairs into {args.output_dir}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
