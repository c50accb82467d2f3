"""`bash run main`'s job (train rotmnist-c4-fast, then evaluate it) alone and beside busy processes.

The job runs as `bash run main` runs it (`python -m groupact.cli train rotmnist-c4-fast`, into a
scratch folder), with groupact's default thread policy: no --threads, no OMP_NUM_THREADS. First
alone, then beside N processes that each keep one core busy with numpy matmuls (one BLAS thread
each, started a few seconds before the job). Alternating rounds (alone, loaded, alone, ...) so a
drift in the machine's other work hits both alike; the median of each is reported with the
ratio. Writes benchmarks/results/under_load.json. Usage::

    python benchmarks/under_load.py                 # 2 busy processes, 1 round each
    python benchmarks/under_load.py --rounds 2 --busy 2
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

SPIN = "import numpy as np\na = np.random.rand(600, 600)\nwhile True:\n    a = a @ a; a /= a.max()\n"


def busy_processes(n: int) -> list[subprocess.Popen]:
    """N processes that each keep one core busy (numpy matmuls on one BLAS thread)."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return [subprocess.Popen([sys.executable, "-c", SPIN], env=env) for _ in range(n)]


def run_job(scratch: Path, tag: str) -> dict:
    """Time one train + evaluate of rotmnist-c4-fast; its log's thread choice is kept too."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")}
    env["PYTHONPATH"] = str(ROOT / "src")
    t0, c0 = time.perf_counter(), os.times()
    p = subprocess.run([sys.executable, "-m", "groupact.cli", "train", "rotmnist-c4-fast",
                        "--run-dir", str(scratch / tag), "--set", "train.progress=false"],
                       env=env, capture_output=True, text=True)
    wall, c1 = time.perf_counter() - t0, os.times()
    if p.returncode != 0:
        raise SystemExit(f"the job failed ({p.returncode}):\n{p.stderr[-2000:]}")
    return {"wall_s": round(wall, 1),
            "cpu_s": round((c1.children_user - c0.children_user)
                           + (c1.children_system - c0.children_system), 1),
            "last_line": p.stdout.strip().splitlines()[-1]}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--busy", type=int, default=2, help="competing busy processes")
    ap.add_argument("--rounds", type=int, default=1)
    ap.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "under_load.json"))
    args = ap.parse_args()
    alone, loaded = [], []
    with tempfile.TemporaryDirectory() as tmp:
        for r in range(args.rounds):
            load_before = os.getloadavg()[0]
            alone.append({**run_job(Path(tmp), f"alone-{r}"), "load_before": load_before})
            print(f"round {r + 1}: alone {alone[-1]['wall_s']} s", flush=True)
            procs = busy_processes(args.busy)
            try:
                time.sleep(5)
                load_before = os.getloadavg()[0]
                loaded.append({**run_job(Path(tmp), f"loaded-{r}"), "load_before": load_before})
            finally:
                for p in procs:
                    p.kill()
                    p.wait()
            print(f"round {r + 1}: beside {args.busy} busy processes {loaded[-1]['wall_s']} s",
                  flush=True)
            time.sleep(5)
    a = statistics.median(x["wall_s"] for x in alone)
    b = statistics.median(x["wall_s"] for x in loaded)
    out = {"machine": {"cpus": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)),
                       "processor": platform.processor() or platform.machine(),
                       "python": platform.python_version()},
           "job": "groupact train rotmnist-c4-fast (12 epochs) + evaluate (probes, figures)",
           "busy_processes": args.busy, "alone": alone, "loaded": loaded,
           "alone_median_s": a, "loaded_median_s": b, "slowdown": round(b / a, 2)}
    Path(args.out).write_text(json.dumps(out, indent=1) + "\n")
    print(f"alone {a:.1f} s, beside {args.busy} busy processes {b:.1f} s: {b / a:.2f}x slower; "
          f"wrote {args.out}")


if __name__ == "__main__":
    main()
