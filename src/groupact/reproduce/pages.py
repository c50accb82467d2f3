"""The results folder's pages: RESULTS.md, results.csv, summary.csv and a self-contained index.html
(its figures embedded), each written whole, from the tables of :mod:`.tables`."""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from pathlib import Path
from typing import Any, NamedTuple

from groupact.io import atomic_copy, atomic_write_text, read_json_object
from groupact.reproduce.ledger import MANIFEST, duration
from groupact.reproduce.plan import Plan
from groupact.runs import RunPaths
from groupact.reproduce.tables import (LEDGER, LEDGER_FIXED, PAGE_FIGURES, RunRecord, all_tables, as_number, collect,
                                      dataset_label, groups, reference_method, stats)


# --- header, legend, figures ----------------------------------------------------------------------

def read_manifest(out: Path) -> dict[str, Any]:
    return read_json_object(Path(out) / MANIFEST)


def _duration(seconds: float | None) -> str:
    return "unknown" if seconds is None else duration(seconds)


def header_lines(manifest: dict[str, Any], records: list[RunRecord]) -> tuple[list[str], str]:
    """Facts about how the results were made; the second item is the one line that changes
    from one invocation to the next (wall time and date)."""
    mach = manifest.get("machine") or {}
    seeds = sorted({r.seed for r in records})
    compute = [r.seconds for r in records if r.seconds is not None]
    cpu = [r.cpu_seconds for r in records if r.cpu_seconds]
    lines = [
        f"- Budget: **{manifest.get('budget', 'unknown')}**"
        + (f" — {manifest['budget_description']}" if manifest.get("budget_description") else ""),
        f"- Runs: {len(records)} evaluated, seeds {', '.join(map(str, seeds)) or '–'}; "
        f"compute, summed over the runs (one thread each): wall "
        f"{_duration(sum(compute)) if compute else 'unknown'}, CPU "
        f"{_duration(sum(cpu)) if cpu else 'unknown'}"
        + (f" (not counted: {len(records) - len(compute)} runs whose time is not recorded, "
           "e.g. rows carried from a ledger written before it kept the seconds)"
           if len(compute) < len(records) else ""),
        f"- Machine: {mach.get('platform', 'unknown')}, {mach.get('cpus', '?')} CPUs, Python "
        f"{mach.get('python', '?')}, torch {mach.get('torch', '?')}",
        f"- Command: `{manifest.get('command', 'unknown')}` (plan: {manifest.get('plan', '?')})",
    ]
    working = [i for i in manifest.get("invocations", []) if i.get("launched")]
    if working:
        parts = [_duration(i.get("wall_seconds")) for i in working]
        total = sum(float(i.get("wall_seconds") or 0) for i in working)
        lines.append(f"- Wall time of the {len(working)} invocation(s) that trained or evaluated "
                     f"runs: {' + '.join(parts)}" + (f" = {_duration(total)}"
                                                      if len(working) > 1 else ""))
    carried = [r for r in records if r.carried]
    if carried:
        groups_ = dict.fromkeys(f"{r.dataset}/{r.method}" for r in carried)
        lines.append(f"- Carried: {len(carried)} of the {len(records)} runs are read back from "
                     f"this folder's ledger ({LEDGER}, written by an earlier invocation), their "
                     f"run folders not being here: {', '.join(groups_)}")
    timing = (f"- Wall time of the last invocation: {_duration(manifest.get('wall_seconds'))}, "
              f"finished {manifest.get('finished', 'unknown')}")
    return lines, timing


def legend(plan: Plan | None, records: list[RunRecord]) -> list[tuple[str, str]]:
    present = list(dict.fromkeys(r.method for r in records))
    if plan is None:
        return [(m, "") for m in present]
    return [(m, plan.entry(m).description) for m in plan.names() if m in present]


class PageFigure(NamedTuple):
    """A figure the results page shows: the dataset, the figure's file name, and where to read it
    (a run's eval/figures, or the results folder's own copy for a carried run)."""
    dataset: str
    name: str
    source: Path

    @property
    def copy_name(self) -> str:
        """Where RESULTS.md's copy lives, relative to the results folder."""
        return f"figures/{self.dataset}-{self.name}"


def page_figures(plan: Plan | None, records: list[RunRecord], out: Path | None = None
                 ) -> list[PageFigure]:
    """Each dataset's reference-method seed-0 figures that exist: in the run folder, or (for a
    run carried from the ledger, whose folder is not here) the copy already in ``out``."""
    runs_by = groups(records)
    figs = []
    for dataset in dict.fromkeys(r.dataset for r in records):
        ref = reference_method(plan, runs_by, dataset)
        if ref is None:
            continue
        for r in (r for r in runs_by[(dataset, ref)] if r.seed == 0):
            for name in PAGE_FIGURES:
                fig = PageFigure(dataset, name, Path())
                if r.carried:
                    src = Path(out) / fig.copy_name if out is not None else None
                else:
                    src = RunPaths(r.run_dir).eval / "figures" / name
                if src is not None and src.is_file():
                    figs.append(fig._replace(source=src))
    return figs


# --- writing --------------------------------------------------------------------------------------

def results_markdown(plan, records, manifest, out: Path) -> str:
    lines, timing = header_lines(manifest, records)
    text = ["# Reproduction results", "",
            "Written by `groupact reproduce` (docs/REPRODUCE.md explains every column; the "
            "evaluation protocol is docs/PROTOCOL.md). Mean ± sample standard deviation over "
            "seeds.", ""] + lines + [timing, ""]
    if not records:
        return "\n".join(text + ["No evaluated runs yet.", ""])
    text += ["## Methods and ablations", ""]
    text += [f"- **{m}**: {d}" for m, d in legend(plan, records)] + [""]
    text += ["## Tables", ""]
    for t in all_tables(plan, records):
        text += [t.markdown()]
    figs = page_figures(plan, records, out)
    if figs:
        # run folders are not kept with the tables (results/runs is large): the page shows copies
        text += ["## Figures (reference method, seed 0)", ""]
        for dataset in dict.fromkeys(f.dataset for f in figs):
            text += [f"### {dataset_label(plan, dataset)}", ""]
            text += [f"![{dataset} {Path(f.name).stem}]({f.copy_name})"
                     for f in figs if f.dataset == dataset] + [""]
    return "\n".join(text)


def copy_page_figures(plan: Plan | None, records: list[RunRecord], out: Path) -> list[Path]:
    """Copy the page's figures next to RESULTS.md so the page works without the run folders."""
    copies = []
    for fig in page_figures(plan, records, out):
        dst = out / fig.copy_name
        if fig.source != dst:                 # a carried run's copy is already in place
            dst.parent.mkdir(parents=True, exist_ok=True)
            atomic_copy(fig.source, dst)
        copies.append(dst)
    return copies


CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:90em}"
       "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
       "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}"
       "img{max-width:100%;border:1px solid #ddd;margin:4px 0}")


def results_html(plan, records, manifest, out: Path | None = None) -> str:
    lines, timing = header_lines(manifest, records)
    parts = ["<!DOCTYPE html><html><head><meta charset='utf-8'><title>groupact reproduction"
             f"</title><style>{CSS}</style></head><body><h1>Reproduction results</h1>",
             "<p>Mean ± sample standard deviation over seeds; docs/REPRODUCE.md explains the "
             "columns and docs/PROTOCOL.md the evaluation protocol.</p><ul>"]
    parts += [f"<li>{html.escape(ln[2:]).replace('**', '')}</li>" for ln in lines + [timing]]
    parts.append("</ul>")
    if records:
        parts.append("<h2>Methods and ablations</h2><ul>")
        parts += [f"<li><b>{html.escape(m)}</b>: {html.escape(d)}</li>"
                  for m, d in legend(plan, records)]
        parts.append("</ul><h2>Tables</h2>")
        parts += [t.html() for t in all_tables(plan, records)]
        figs = page_figures(plan, records, out)
        if figs:
            parts.append("<h2>Figures (reference method, seed 0)</h2>")
            for dataset in dict.fromkeys(f.dataset for f in figs):
                parts.append(f"<h3>{html.escape(dataset_label(plan, dataset))}</h3>")
                for f in figs:
                    if f.dataset == dataset:
                        data = base64.b64encode(f.source.read_bytes()).decode("ascii")
                        parts.append(f"<p>{html.escape(f.name)}<br><img alt='{html.escape(f.name)}'"
                                     f" src='data:image/png;base64,{data}'></p>")
    else:
        parts.append("<p>No evaluated runs yet.</p>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _csv(rows: list[list[Any]]) -> str:
    buf = io.StringIO()
    csv.writer(buf, lineterminator="\n").writerows(rows)
    return buf.getvalue()


def _csv_value(v: Any) -> Any:
    if v is None:
        return ""
    if isinstance(v, float) and math.isnan(v):
        return "nan"
    return v


def results_csv(records: list[RunRecord]) -> str:
    """The ledger: one row per run, dataset, method, kind, seed, its wall and CPU seconds, then
    every scalar metric (sorted keys)."""
    fixed = list(LEDGER_FIXED)
    keys = sorted({k for r in records for k, v in r.metrics.items()
                   if v is None or isinstance(v, (int, float, str, bool))})
    # metrics.json's own "dataset" (the data's name, e.g. mnist5k) must not shadow the plan's
    rows: list[list[Any]] = [fixed + [f"eval_{k}" if k in fixed else k for k in keys]]
    for r in records:
        rows.append([r.dataset, r.method, r.kind, r.seed, _csv_value(r.seconds),
                     _csv_value(r.cpu_seconds)] + [_csv_value(r.metrics.get(k)) for k in keys])
    return _csv(rows)


def summary_csv(records: list[RunRecord]) -> str:
    """Mean and sample std over seeds per dataset × method × numeric metric."""
    rows: list[list[Any]] = [["dataset", "method", "kind", "metric", "n", "mean", "std"]]
    for (dataset, method), runs in groups(records).items():
        keys = sorted({k for r in runs for k, v in r.metrics.items() if as_number(v) is not None})
        for k in keys:
            n, mean, std = stats(runs, k)
            rows.append([dataset, method, runs[0].kind, k, n, repr(mean) if mean is not None
                         else "", repr(std) if std is not None else ""])
    return _csv(rows)


def write_tables(out: str | Path, plan: Plan | None) -> list[Path]:
    """Write RESULTS.md, results.csv, summary.csv and index.html into ``out``."""
    out = Path(out)
    records = collect(out, plan)
    manifest = read_manifest(out)
    files = {out / "RESULTS.md": results_markdown(plan, records, manifest, out),
             out / LEDGER: results_csv(records),
             out / "summary.csv": summary_csv(records),
             out / "index.html": results_html(plan, records, manifest, out)}
    copies = copy_page_figures(plan, records, out)
    for path, text in files.items():
        atomic_write_text(path, text)
    return list(files) + copies
