"""Argument groups that more than one command takes with the same meaning."""

import argparse


def positive_int(value: str) -> int:
    """argparse `type` of a count that must be >= 1 (`--batch_size`, `--num_inference_steps`, ...)."""
    number = int(value)
    if number < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return number


def add_adamw_args(group: argparse._ArgumentGroup | argparse.ArgumentParser, weight_decay: float) -> None:
    """AdamW's hyper-parameters and the gradient-clipping norm (`--adam_*`, `--max_grad_norm`), as both training loops
    build `torch.optim.AdamW` and `backward_and_step` from them; `weight_decay` is the command's default."""
    group.add_argument("--adam_beta1", type=float, default=0.9, help="AdamW beta1.")
    group.add_argument("--adam_beta2", type=float, default=0.999, help="AdamW beta2.")
    group.add_argument("--adam_weight_decay", type=float, default=weight_decay, help="AdamW weight decay.")
    group.add_argument("--adam_epsilon", type=float, default=1e-8, help="AdamW epsilon.")
    group.add_argument("--max_grad_norm", type=float, default=1.0, help="Gradient clipping norm.")
