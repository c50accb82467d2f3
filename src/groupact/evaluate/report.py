"""Tables across runs: one Markdown table of the evaluation metrics of several run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from groupact.errors import CheckpointError
from groupact.runs import RunPaths

COLUMNS: list[tuple[str, str, int]] = [
    ("psnr", "PSNR", 2), ("psnr_identity", "PSNR do-nothing", 2),
    ("psnr_mean_target", "PSNR mean target", 2),
    ("psnr_wrong_g", "PSNR told a wrong g", 2), ("ssim", "SSIM", 3),
    ("ssim_identity", "SSIM do-nothing", 3), ("equiv_error", "equiv. err", 4),
    ("inv_error", "inv. err", 4), ("homomorphism_error", "hom. err", 5),
    ("mask_fraction", "mask variant", 2), ("probe_zi", "probe z_i", 3),
    ("probe_zv", "probe z_v", 3), ("probe_z", "probe z", 3),
    ("probe_zi_upright", "probe z_i (upright→turned)", 3),
    ("probe_z_upright", "probe z (upright→turned)", 3),
    ("probe_zinv", "probe inv. read-out", 3),
    ("probe_zinv_upright", "probe inv. read-out (upright→turned)", 3),
]


def read_metrics(run_dir: str | Path) -> dict[str, Any]:
    path = RunPaths(Path(run_dir)).eval / "metrics.json"
    if not path.is_file():
        raise CheckpointError(f"{run_dir} has no eval/metrics.json; run `groupact evaluate "
                              f"{run_dir}` first")
    try:
        m = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CheckpointError(f"{path} is unreadable ({type(e).__name__}); run `groupact "
                              f"evaluate {run_dir}` again") from None
    if not isinstance(m, dict):
        raise CheckpointError(f"{path} is not a metrics object; run `groupact evaluate "
                              f"{run_dir}` again")
    return m


def _cell(v: Any, digits: int) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return f"{v:.{digits}f}" if isinstance(v, (int, float)) else str(v)


def metrics_table(run_dirs: list[str | Path]) -> str:
    """A Markdown table, one row per run: the run folder and its recipe (two runs of one recipe
    with other settings are told apart by their folders), data (stand-in or real), epochs,
    metrics."""
    head = ["run", "data", "group", "epochs (best)"] + [c[1] for c in COLUMNS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in run_dirs:
        m = read_metrics(d)
        data = f"{m.get('dataset')}" + (" (stand-in)" if m.get("stand_in_data") else "")
        epochs = f"{m.get('epochs', '')} ({m.get('best_epoch', '?')})"
        recipe = m.get("recipe")
        cells = [f"{Path(d).as_posix()}" + (f" ({recipe})" if recipe else ""), data,
                 m.get("group", ""), epochs]
        cells += [_cell(m.get(k), digits) for k, _, digits in COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
