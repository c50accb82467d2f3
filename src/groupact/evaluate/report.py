"""Tables across runs: one Markdown table of the evaluation metrics of several run folders."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

from groupact.errors import CheckpointError
from groupact.evaluate.labels import number_format, title
from groupact.io import read_jsonl
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
    for key, ok in METRIC_TYPES.items():
        if key in m and not ok(m[key]):
            raise CheckpointError(f"{path}: '{key}' is {_shown(m[key])}, not {KIND_NAMES[ok]}; "
                                  f"the file is damaged: run `groupact evaluate {run_dir}` again")
    return m


def _number(v: Any) -> bool:
    """A JSON number (bool is an int to Python, not a metric)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _number_or_null(v: Any) -> bool:
    return v is None or _number(v)


def _whole(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _text_or_null(v: Any) -> bool:
    return v is None or isinstance(v, str)


def _numbers(v: Any) -> bool:
    return isinstance(v, list) and all(_number(x) for x in v)


KIND_NAMES = {_number_or_null: "a number or null", _whole: "a whole number",
              _text_or_null: "text or null", _numbers: "a list of numbers", _number: "a number"}

#: the metrics.json keys a table prints, and what each must hold
METRIC_TYPES = {**{k: _number_or_null for k in COLUMNS}, "epochs": _whole, "best_epoch": _whole,
                "recipe": _text_or_null, "dataset": _text_or_null, "group": _text_or_null}


def _shown(v: Any) -> str:
    text = json.dumps(v)
    return text if len(text) <= 40 else text[:40] + "…"


def read_history(run_dir: str | Path) -> list[dict[str, Any]]:
    """A run's training log (metrics.jsonl), one record per epoch, with the types the figures and
    mask statistics rely on checked: a damaged log is one line, not a crash half way through an
    evaluation."""
    path = RunPaths(Path(run_dir)).metrics
    records = read_jsonl(path)
    masks = {len(r["mask"]) for r in records if isinstance(r.get("mask"), list)}
    for i, r in enumerate(records, 1):
        for key, v in r.items():
            ok = _whole if key in ("epoch", "step") else _numbers if key in ("mask", "mask_probs") \
                else _number_or_null if key.startswith(("train_", "val_")) or key in (
                    "lr", "mask_fraction", "seconds", "pairs_per_s") else None
            if ok is not None and not ok(v):
                raise CheckpointError(f"{path}, record {i}: '{key}' is {_shown(v)}, not "
                                      f"{KIND_NAMES[ok]}; the training log is damaged: restore "
                                      "it from a backup")
        if "epoch" not in r or ("mask" in r) != ("mask" in records[0]) or len(masks) > 1 \
                or ("mask" in r and "mask_fraction" not in r):
            raise CheckpointError(f"{path}, record {i}: the records differ in their keys (epoch, "
                                  "mask); the training log is damaged: restore it from a backup")
    return records


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
