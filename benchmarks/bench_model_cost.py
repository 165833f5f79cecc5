"""Training cost of JointUNet2DModel ("dual" and "concat") against a plain diffusers UNet2DModel.

One forward + backward pass (MSE loss on the outputs, gradients of all parameters) of each model on the same batch,
timed side by side. The plain UNet2DModel has the same widths, block types, layers and resolution, and denoises the
joint state (image + K label channels) as one input, so "concat" should cost about the same (target <= 1.1x) and
"dual", two such UNets plus 1x1 exchange convolutions, about twice as much (target <= 2.2x).

    python benchmarks/bench_model_cost.py --output benchmarks/results/model_cost.json
"""

import argparse

import torch
from diffusers import UNet2DModel

from dakter_hf import JointUNet2DModel

from timing_utils import (
    SMALL_UNET,
    add_common_args,
    apply_common_args,
    machine_info,
    summarize,
    time_side_by_side,
    write_result,
)


TARGETS = {"dual": 2.2, "concat": 1.1}


def build_models(sample_size: int, num_classes: int) -> dict[str, torch.nn.Module]:
    """The plain diffusers UNet (baseline) and one JointUNet2DModel per architecture, all of the small preset."""
    channels = 1 + num_classes
    models = {
        "plain_unet2d": UNet2DModel(sample_size=sample_size, in_channels=channels, out_channels=channels,
                                    **SMALL_UNET),
    }
    for architecture in TARGETS:
        models[architecture] = JointUNet2DModel(sample_size=sample_size, num_classes=num_classes,
                                                architecture=architecture, **SMALL_UNET)
    return models


def forward_backward(name: str, model: torch.nn.Module, state: torch.Tensor, timesteps: torch.Tensor):
    """One training step's compute (no optimizer step): forward, MSE against zeros, backward."""
    model.zero_grad(set_to_none=True)
    if name == "plain_unet2d":
        outputs = (model(state, timesteps).sample,)
    else:
        outputs = model(state[:, :1], state[:, 1:], timesteps, return_dict=False)
    loss = sum(output.float().pow(2).mean() for output in outputs)
    loss.backward()


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sample_size", type=int, default=64)
    parser.add_argument("--batch_size", type=int, default=8)
    parser.add_argument("--num_classes", type=int, default=2)
    add_common_args(parser)
    args = parser.parse_args()
    apply_common_args(args)

    models = build_models(args.sample_size, args.num_classes)
    for model in models.values():
        model.train()
    state = torch.randn(args.batch_size, 1 + args.num_classes, args.sample_size, args.sample_size)
    timesteps = torch.randint(0, 1000, (args.batch_size,))
    candidates = {name: (lambda n=name, m=model: forward_backward(n, m, state, timesteps))
                  for name, model in models.items()}
    wall, cpu = time_side_by_side(candidates, repeats=args.repeats, warmup=args.warmup)
    summary = {"wall": summarize(wall, baseline="plain_unet2d"), "cpu": summarize(cpu, baseline="plain_unet2d")}
    ratio = {name: summary["wall"][name]["ratio_to_plain_unet2d"] for name in TARGETS}
    targets = {name: {"target_ratio": limit, "ratio": ratio[name], "met": ratio[name] <= limit,
                      "cpu_time_ratio": summary["cpu"][name]["ratio_to_plain_unet2d"]}
               for name, limit in TARGETS.items()}
    write_result({
        "benchmark": "model_cost (forward + backward)",
        "config": {"sample_size": args.sample_size, "batch_size": args.batch_size, "num_classes": args.num_classes,
                   "repeats": args.repeats, **SMALL_UNET},
        "parameters_M": {name: sum(p.numel() for p in m.parameters()) / 1e6 for name, m in models.items()},
        "results": summary,
        "targets": targets,
        "machine": machine_info(),
    }, args.output)


if __name__ == "__main__":
    main()
