"""Benchmark of dataset generation (`dakter_hf.generation.generate_to_disk`, the path of `dakter-generate`).

1. Throughput: pairs per second at 64x64 for several samplers with the same model, measured side by side in one
   run (end to end: sampling, soft-label encoding, shard writes, assembly and card; no preview).
2. Disk: bytes per pair of the saved dataset (Arrow, `datasets.load_from_disk` format) and of its Parquet export
   (what `push_to_hub` uploads) for `uint8`, `float16` and `float32` soft labels.

The model is an *untrained* `JointUNet2DModel` of the trainer's `small` preset (`dakter_hf.training.
JOINT_UNET_PRESETS`): the speed of a trained model of the same size is the same, but its images compress differently,
so only the soft-label part of the disk numbers carries over exactly.

    python benchmarks/bench_generation.py --num_threads 1
"""

import argparse
import json
import os
import platform
import tempfile
import time
from datetime import datetime, timezone

import datasets
import torch
from diffusers import DDPMScheduler

from dakter_hf import DAKTerPipeline, JointUNet2DModel
from dakter_hf.generation import SOFT_LABEL_DTYPES, generate_to_disk, set_scheduler
from dakter_hf.training import joint_unet_config


SAMPLER_NAMES = {"ddpm": "DDPM", "ddim": "DDIM", "dpmsolver": "DPM-Solver++", "euler": "Euler", "unipc": "UniPC"}


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--resolution", type=int, default=64)
    parser.add_argument("--num_classes", type=int, default=2)
    parser.add_argument("--model_size", default="small")
    parser.add_argument("--samplers", nargs="+", default=["ddpm:1000:2", "ddim:50:8", "dpmsolver:20:16"],
                        help="name:steps:num_samples per sampler (DDPM-1000 is slow on CPU: keep it to few samples).")
    parser.add_argument("--batch_size", type=int, default=1, help="Same batch size for every sampler.")
    parser.add_argument("--size_sampler", default="dpmsolver:20:16",
                        help="name:steps:num_samples of the runs measuring bytes per pair.")
    parser.add_argument("--num_threads", type=int, default=None, help="torch intra-op threads (default: torch's).")
    parser.add_argument("--output_json", default=None, help="Also write the results here.")
    return parser.parse_args(argv)


def make_pipeline(args) -> DAKTerPipeline:
    """A randomly initialised pipeline of the requested size (seed 0): timing does not need trained weights."""
    torch.manual_seed(0)
    config = joint_unet_config(args.model_size, resolution=args.resolution, num_classes=args.num_classes,
                               label_scale=0.53)
    unet = JointUNet2DModel(**config).eval()
    return DAKTerPipeline(unet=unet, scheduler=DDPMScheduler(num_train_timesteps=1000))


def parse_sampler(spec: str) -> tuple[str, int, int]:
    """`"name:steps:num_samples"` (as given to `--samplers`) -> `(name, steps, num_samples)`."""
    name, steps, num_samples = spec.split(":")
    return name, int(steps), int(num_samples)


def directory_bytes(path: str, suffix: str) -> int:
    """Total size of the files in `path` whose names end with `suffix`."""
    return sum(os.path.getsize(os.path.join(path, f)) for f in os.listdir(path) if f.endswith(suffix))


def main(argv=None) -> dict:
    args = parse_args(argv)
    if args.num_threads:
        torch.set_num_threads(args.num_threads)
    datasets.disable_progress_bars()
    pipe = make_pipeline(args)
    num_parameters = sum(p.numel() for p in pipe.unet.parameters())
    results = {
        "date": datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": f"{os.cpu_count()}-core CPU ({platform.machine()}), torch {torch.__version__}, "
                   f"{torch.get_num_threads()} intra-op thread(s)",
        "load_average_at_start": os.getloadavg(),
        "model": f"untrained JointUNet2DModel, preset {args.model_size!r}, {num_parameters / 1e6:.2f}M parameters, "
                 f"{args.resolution}x{args.resolution}, K={args.num_classes}",
        "throughput": [],
        "disk": [],
    }
    with tempfile.TemporaryDirectory() as tmp:
        for spec in args.samplers:
            name, steps, num_samples = parse_sampler(spec)
            set_scheduler(pipe, name)
            start = time.perf_counter()
            generate_to_disk(pipe, os.path.join(tmp, f"{name}-{steps}"), num_samples, batch_size=args.batch_size,
                             num_inference_steps=steps, preview_rows=0)
            seconds = time.perf_counter() - start
            row = {"sampler": f"{SAMPLER_NAMES[name]}-{steps}", "num_samples": num_samples,
                   "batch_size": args.batch_size, "seconds": round(seconds, 2),
                   "pairs_per_second": num_samples / seconds, "seconds_per_pair": seconds / num_samples}
            results["throughput"].append(row)
            print(json.dumps(row), flush=True)

        name, steps, num_samples = parse_sampler(args.size_sampler)
        set_scheduler(pipe, name)
        for dtype in SOFT_LABEL_DTYPES:
            out = generate_to_disk(pipe, os.path.join(tmp, dtype), num_samples, batch_size=args.batch_size,
                                   num_inference_steps=steps, soft_label_dtype=dtype, preview_rows=0)
            parquet = os.path.join(tmp, f"{dtype}.parquet")
            out.dataset.to_parquet(parquet)
            soft_bytes = out.dataset.data.table.column("soft_label").nbytes
            row = {"soft_label_dtype": dtype, "num_samples": num_samples,
                   "arrow_bytes_per_pair": directory_bytes(out.output_dir, ".arrow") / num_samples,
                   "soft_label_bytes_per_pair": soft_bytes / num_samples,
                   "parquet_bytes_per_pair": os.path.getsize(parquet) / num_samples}
            results["disk"].append(row)
            print(json.dumps(row), flush=True)
    results["load_average_at_end"] = os.getloadavg()
    print(json.dumps(results, indent=2))
    if args.output_json:
        with open(args.output_json, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()
