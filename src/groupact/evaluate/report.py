"""Tables across runs: one Markdown table of the evaluation metrics of several run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from groupact.errors import CheckpointError
from groupact.evaluate.labels import number_format, title
from groupact.runs import RunPaths

#: the columns of `groupact report`, by metrics.json key (headers and formats: evaluate.labels)
COLUMNS = ["psnr", "psnr_identity", "psnr_mean_target", "psnr_wrong_g", "ssim", "ssim_identity",
           "equiv_error", "inv_error", "homomorphism_error", "mask_fraction", "probe_zi",
           "probe_zv", "probe_z", "probe_zi_upright", "probe_z_upright", "probe_zinv",
           "probe_zinv_upright"]


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


def _cell(v: Any, key: str) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    return format(v, number_format(key)) if isinstance(v, (int, float)) else str(v)


def metrics_table(run_dirs: list[str | Path]) -> str:
    """A Markdown table, one row per run: the run folder and its recipe (two runs of one recipe
    with other settings are told apart by their folders), data (stand-in or real), epochs,
    metrics."""
    head = ["run", "data", "group", "epochs (best)"] + [title(k) for k in COLUMNS]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for d in run_dirs:
        m = read_metrics(d)
        data = f"{m.get('dataset')}" + (" (stand-in)" if m.get("stand_in_data") else "")
        epochs = f"{m.get('epochs', '')} ({m.get('best_epoch', '?')})"
        recipe = m.get("recipe")
        cells = [f"{Path(d).as_posix()}" + (f" ({recipe})" if recipe else ""), data,
                 m.get("group", ""), epochs]
        cells += [_cell(m.get(k), k) for k in COLUMNS]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"
