"""The invariant read-out's orbit average over the 24 cube turns (SO(3) latents): trilinear
resampling vs SO3.act_image's exact voxel moves, timed side by side, interleaved, in one process.

The read-out (``probe_zinv``) acts with all 24 cube turns on every latent of every probe split;
on the 3D recipes' 32 × 14³ latents that was the evaluation's largest single cost. Results go to
benchmarks/results/orbit_average.json.

    python benchmarks/orbit_average.py [--batch 32] [--channels 32] [--side 14] [--repeats 5]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import torch

from groupact.groups.rotations3d import SO3, rotate_volumes


def orbit_mean(z: torch.Tensor, elements: torch.Tensor, act) -> tuple[float, torch.Tensor]:
    """Seconds for the orbit mean of z under ``act`` over ``elements``, and the mean."""
    start = time.perf_counter()
    total = torch.zeros_like(z)
    for e in elements:
        total += act(z, e.expand(z.shape[0], 3, 3))
    return time.perf_counter() - start, total / len(elements)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--batch", type=int, default=32)
    ap.add_argument("--channels", type=int, default=32)
    ap.add_argument("--side", type=int, default=14)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=str(Path(__file__).parent / "results" / "orbit_average.json"))
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    so3 = SO3()
    elements = so3.averaging_elements()
    z = torch.rand(args.batch, args.channels, args.side, args.side, args.side,
                   generator=torch.Generator().manual_seed(0))
    times: dict[str, list[float]] = {"trilinear": [], "exact": []}
    for _ in range(args.repeats):           # interleaved: both see the same machine load
        t, tri = orbit_mean(z, elements, rotate_volumes)
        times["trilinear"].append(t)
        t, exact = orbit_mean(z, elements, so3.act_image)
        times["exact"].append(t)
    median = {k: sorted(v)[len(v) // 2] for k, v in times.items()}
    result = {"latent": [args.batch, args.channels, args.side, args.side, args.side],
              "threads": args.threads, "seconds": times, "median_seconds": median,
              "speedup": median["trilinear"] / median["exact"],
              "max_abs_difference": float((tri - exact).abs().max())}
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"orbit mean over 24 cube turns of {tuple(z.shape)}: trilinear "
          f"{median['trilinear']:.2f} s, exact {median['exact']:.2f} s "
          f"({result['speedup']:.1f}x); largest difference {result['max_abs_difference']:.1e}")


if __name__ == "__main__":
    main()
