"""A reproduction's results: RESULTS.md, results.csv, summary.csv and a self-contained index.html.

Everything is read back from the run folders (``OUT/runs/<dataset>/<method>/seed<k>/eval/
metrics.json``) and the results folder's ``reproduce.json``, so the tables can be rewritten at any
time (``groupact reproduce --tables-only``) and say only what the files say. Each table cell is the
mean ± sample standard deviation over seeds; the ``seeds`` column says over how many.

Metrics keys starting with ``probe_`` or ``psnr_`` that the tables do not know by name get columns
of their own (the probe table and the reconstruction table), so a new evaluation metric shows up
without changing this file.
"""

from __future__ import annotations

import base64
import csv
import html
import io
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupact.io import atomic_copy, atomic_write_text, read_json_object
from groupact.reproduce.ledger import MANIFEST, duration, read_run_meta
from groupact.reproduce.plan import Plan
from groupact.runs import RunPaths

#: the figures of the reference method's seed-0 run that the HTML page embeds, per dataset
PAGE_FIGURES = ("reconstructions.png", "latent_maps.png", "swap.png")

KNOWN_PROBES = ("zi", "zv", "z")

#: how a metric is printed (format spec); others use 3 decimals
FORMATS = {"psnr": ".2f", "ssim": ".3f", "inv_error": ".3g", "equiv_error": ".3g",
           "homomorphism_error": ".3g", "mask_fraction": ".2f",
           "mask_fraction_first_epoch": ".2f", "mask_flips_during_training": ".1f",
           "mask_channels": ".0f"}

#: headers of the columns known by name
TITLES = {"psnr": "PSNR (dB)", "ssim": "SSIM", "dice": "Dice", "inv_error": "inv. error",
          "equiv_error": "equiv. error", "homomorphism_error": "hom. error",
          "mask_fraction": "variant fraction", "mask_fraction_first_epoch": "after epoch 1",
          "mask_flips_during_training": "flips", "mask_channels": "channels",
          "probe_chance": "chance", "psnr_autoencode": "autoencode PSNR",
          "psnr_wrong_g": "PSNR, wrong g", "psnr_from_mean_mse": "PSNR of mean MSE",
          "probe_zinv": "z_inv (T→T)", "probe_zinv_upright": "z_inv (U→T)",
          "probe_orbit": "orbit-pooled E (T→T)", "probe_orbit_upright": "orbit-pooled E (U→T)",
          "probe_orbit_random": "orbit-pooled random E (T→T)",
          "probe_orbit_random_upright": "orbit-pooled random E (U→T)",
          "orbit_pool_passes": "passes (orbit-pooled)"}


@dataclass
class RunRecord:
    """One evaluated run: where it sits in the plan, and its metrics."""

    dataset: str
    method: str
    kind: str
    seed: int
    probe_only: bool
    metrics: dict[str, Any]
    run_dir: Path
    seconds: float | None
    cpu_seconds: float | None = None


@dataclass
class Table:
    title: str
    note: str
    header: list[str]
    rows: list[list[str]]

    def markdown(self) -> str:
        lines = [f"### {self.title}", ""]
        if self.note:
            lines += [self.note, ""]
        lines.append("| " + " | ".join(self.header) + " |")
        lines.append("|" + "---|" * len(self.header))
        lines += ["| " + " | ".join(r) + " |" for r in self.rows]
        return "\n".join(lines) + "\n"

    def html(self) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in r) + "</tr>"
                       for r in self.rows)
        note = f"<p>{html.escape(self.note)}</p>" if self.note else ""
        return (f"<h3>{html.escape(self.title)}</h3>{note}<table><thead><tr>{head}</tr></thead>"
                f"<tbody>{body}</tbody></table>")


# --- reading --------------------------------------------------------------------------------------

def _number(v: Any) -> float | None:
    """A finite number, or None (missing, null, NaN, text, bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


def collect(out: Path, plan: Plan | None) -> list[RunRecord]:
    """Every evaluated run under ``out/runs``, in plan order (dataset, method, seed)."""

    records = []
    for path in sorted(Path(out).glob("runs/*/*/seed*/eval/metrics.json")):
        run_dir = path.parent.parent
        metrics = read_json_object(path)
        try:
            seed = int(run_dir.name[len("seed"):])
        except ValueError:
            continue
        if not metrics:
            continue
        dataset, method = run_dir.parent.parent.name, run_dir.parent.name
        meta = read_run_meta(run_dir)
        if plan is not None and method in plan.names():
            kind = "ablation" if plan.is_ablation(method) else "method"
            probe_only = plan.entry(method).probe_only
        else:
            kind, probe_only = meta.get("kind", "method"), bool(meta.get("probe_only", False))
        records.append(RunRecord(dataset, method, kind, seed, probe_only, metrics, run_dir,
                                 _number(meta.get("seconds")), _number(meta.get("cpu_seconds"))))
    d_order = list(plan.datasets) if plan else []
    m_order = plan.names() if plan else []

    def rank(order: list[str], name: str) -> tuple[int, str]:
        return (order.index(name), "") if name in order else (len(order), name)

    records.sort(key=lambda r: (rank(d_order, r.dataset), rank(m_order, r.method), r.seed))
    return records


def groups(records: list[RunRecord]) -> dict[tuple[str, str], list[RunRecord]]:
    """(dataset, method) → its runs, keeping the records' order."""
    out: dict[tuple[str, str], list[RunRecord]] = {}
    for r in records:
        out.setdefault((r.dataset, r.method), []).append(r)
    return out


def stats(runs: list[RunRecord], key: str) -> tuple[int, float | None, float | None]:
    """(count, mean, sample std) of a metric over runs; NaN/null values are left out."""
    values = [v for v in (_number(r.metrics.get(key)) for r in runs) if v is not None]
    if not values:
        return 0, None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return len(values), mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return len(values), mean, math.sqrt(var)


def cell(runs: list[RunRecord], key: str, fmt: str | None = None) -> str:
    n, mean, std = stats(runs, key)
    if mean is None:
        return "–"
    spec = fmt or FORMATS.get(key) or (".2f" if key.startswith("psnr") else ".3f")
    text = format(mean, spec)
    if std is not None:
        text += f" ± {format(std, spec)}"
    if n < len(runs):
        text += f" ({n} of {len(runs)})"
    return text


def extra_keys(records: list[RunRecord], prefix: str, known: set[str]) -> list[str]:
    """Numeric metrics starting with ``prefix`` the tables do not name: new columns, sorted so a
    key's ``_upright`` twin follows it."""
    keys = {k for r in records for k, v in r.metrics.items()
            if k.startswith(prefix) and k not in known and (_number(v) is not None or v is None)}
    return sorted(keys, key=lambda k: (k.removesuffix("_upright"), k.endswith("_upright")))


def _part(name: str) -> str:
    """``zi`` → ``z_i``, ``zinv`` → ``z_inv``: the latent parts as the docs write them."""
    return f"z_{name[1:]}" if name.startswith("z") and len(name) > 1 and "_" not in name else name


def title(key: str) -> str:
    if key in TITLES:
        return TITLES[key]
    if key.startswith("probe_"):
        base = key[len("probe_"):]
        if base.endswith("_upright"):
            return f"{_part(base.removesuffix('_upright'))} (U→T)"
        return f"{_part(base)} (T→T)"
    return key


# --- the tables -----------------------------------------------------------------------------------

def _label(plan: Plan | None, dataset: str) -> str:
    return plan.datasets[dataset].title if plan and dataset in plan.datasets else dataset


def _reference(plan: Plan | None, runs_by: dict, dataset: str) -> str | None:
    """The method whose pairs give the do-nothing row: the plan's first full method present."""
    names = [m for (d, m), rs in runs_by.items() if d == dataset and rs[0].kind == "method"
             and not rs[0].probe_only]
    return names[0] if names else None


def _rows(plan, runs_by, select, columns: list[str]) -> list[list[str]]:
    rows, last = [], None
    for (dataset, method), runs in runs_by.items():
        if not select(runs[0]):
            continue
        first = _label(plan, dataset) if dataset != last else ""
        last = dataset
        rows.append([first, method, str(len(runs))] + [cell(runs, k) for k in columns])
    return rows


def reconstruction_table(plan, records, runs_by) -> Table:
    extras = extra_keys(records, "psnr_", {"psnr_identity", "psnr_mean_target"})
    shapes = ["dice"] if any("dice" in r.metrics for r in records) else []
    cols = ["psnr", "ssim"] + shapes + extras
    rows, notes = [], []
    datasets = list(dict.fromkeys(r.dataset for r in records))
    for dataset in datasets:
        ref = _reference(plan, runs_by, dataset)
        methods = [(m, rs) for (d, m), rs in runs_by.items() if d == dataset
                   and rs[0].kind == "method" and not rs[0].probe_only]
        if not methods:
            continue
        label = _label(plan, dataset)
        if ref is not None:
            ref_runs = runs_by[(dataset, ref)]
            for answer, key in (("do nothing (x̂2 = x1)", "identity"),
                                ("mean target (x̂2 = mean x2)", "mean_target")):
                if not any(f"psnr_{key}" in r.metrics for r in ref_runs):
                    continue
                rows.append([label, answer, str(len(ref_runs)),
                             cell(ref_runs, f"psnr_{key}", ".2f"),
                             cell(ref_runs, f"ssim_{key}", ".3f")]
                            + [cell(ref_runs, f"dice_{key}", ".3f") for _ in shapes]
                            + ["–"] * len(extras))
                label = ""
            _, ref_id, _ = stats(ref_runs, "psnr_identity")
            for m, rs in methods:
                _, own, _ = stats(rs, "psnr_identity")
                if ref_id is not None and own is not None and abs(own - ref_id) > 0.005:
                    notes.append(f"{dataset}/{m} {own:.2f} dB")
        for m, rs in methods:
            rows.append([label, m, str(len(rs))] + [cell(rs, k) for k in cols])
            label = ""
    note = ("x̂2 = D(Φ_g(E(x1))) against x2 = T_g(x1) on the fixed test pairs (identity "
            "excluded). The do-nothing row answers x̂2 = x1, the mean-target row the mean of all "
            "test targets (an orientation-free blob), on the test pairs of the dataset's first "
            "method.")
    if notes:
        note += (" Methods that draw other pairs (Jin et al.'s (g1·x, g2·x)) have their own "
                 "do-nothing PSNR: " + ", ".join(notes) + ".")
    return Table("(a) Transformed reconstruction", note,
                 ["dataset", "method", "seeds"] + [title(k) for k in cols], rows)


def probe_columns(records: list[RunRecord]) -> list[str]:
    known = {f"probe_{p}{s}" for p in KNOWN_PROBES for s in ("", "_upright")} | {"probe_chance"}
    cols = []
    for p in KNOWN_PROBES:
        cols += [f"probe_{p}", f"probe_{p}_upright"]
    return cols + extra_keys(records, "probe_", known)


def _method_table(name: str, note: str, plan, runs_by, cols: list[str],
                  probe_only_too: bool = False) -> Table:
    """One row per dataset × method (ablations excluded) over ``cols``; the plain autoencoder
    (probe_only) only where the table is about the representation."""
    rows = _rows(plan, runs_by,
                 lambda r: r.kind == "method" and (probe_only_too or not r.probe_only), cols)
    return Table(name, note, ["dataset", "method", "seeds"] + [title(k) for k in cols], rows)


def probe_table(plan, records, runs_by) -> Table:
    return _method_table(
        "(b) Downstream classification (linear probes)",
        "Linear-probe test accuracy on z_i (invariant channels), z_v (variant channels), z and "
        "the invariant read-out z_inv (z_i plus the action's invariants of z_v). T→T: trained "
        "and tested on transformed images; U→T: trained on untransformed (upright) images, "
        "tested on transformed ones. chance: the majority class. '–': that part of the latent "
        "is empty (e.g. no invariant channel), or the baseline was not run (the quick budget "
        "leaves the orbit-pooled ones out on the 3D datasets). Orbit-pooled: the run's own "
        "encoder, and an untrained one of the same architecture, averaged over the group's "
        "finite subgroup in "
        "image space (E(T_h x) over all h): invariant by construction, at the cost of 'passes' "
        "encoder passes per image where the read-out needs one.",
        plan, runs_by, ["probe_chance"] + probe_columns(records)
        + (["orbit_pool_passes"] if any("orbit_pool_passes" in r.metrics for r in records)
           else []), probe_only_too=True)


def latent_table(plan, records, runs_by) -> Table:
    return _method_table(
        "(c) Latent errors",
        "Relative squared errors over the test pairs (0 = exact): inv. ‖z_i(x1) − "
        "z_i(x2)‖²/‖z_i(x2) − mean z_i(x2)‖² (centred: movement relative to how much z_i varies "
        "between images); equiv. ‖Φ_g z_v(x1) − z_v(x2)‖²/‖z_v(x2)‖²; hom. ‖Φ_aΦ_b z_v − "
        "Φ_ab z_v‖²/‖Φ_ab z_v‖².",
        plan, runs_by, ["inv_error", "equiv_error", "homomorphism_error"])


def mask_table(plan, records, runs_by) -> Table:
    return _method_table(
        "(d) Mask statistics",
        "Fraction of latent channels the mask makes variant (z_v) at the evaluated checkpoint "
        "and after the first epoch; channel flips between consecutive epochs. Fixed masks "
        "(manual) and all-variant masks do not move.",
        plan, runs_by, ["mask_fraction", "mask_fraction_first_epoch",
                        "mask_flips_during_training", "mask_channels"])


def ablation_table(plan, records, runs_by) -> Table | None:
    ablations = [(d, m) for (d, m), rs in runs_by.items() if rs[0].kind == "ablation"]
    if not ablations:
        return None
    probe_cols = ["probe_zi", "probe_zi_upright", "probe_z", "probe_z_upright"]
    known = {f"probe_{p}{s}" for p in KNOWN_PROBES for s in ("", "_upright")} | {"probe_chance"}
    cols = (["psnr", "ssim", "inv_error", "equiv_error", "mask_fraction"] + probe_cols
            + extra_keys(records, "probe_", known))
    rows = []
    for dataset in dict.fromkeys(d for d, _ in ablations):
        names = [m for d, m in ablations if d == dataset]
        refs = [plan.ablations[m].reference for m in names if plan and m in plan.ablations]
        ref = refs[0] if refs else _reference(plan, runs_by, dataset)
        label = _label(plan, dataset)
        for m in ([ref] if ref and (dataset, ref) in runs_by else []) + names:
            rs = runs_by[(dataset, m)]
            name = f"{m} (reference)" if m == ref else m
            rows.append([label, name, str(len(rs))] + [cell(rs, k) for k in cols])
            label = ""
    note = "Each ablation changes one thing of the reference method (see the legend)."
    return Table("(e) Ablations", note, ["dataset", "run", "seeds"] + [title(k) for k in cols],
                 rows)


def all_tables(plan: Plan | None, records: list[RunRecord]) -> list[Table]:
    runs_by = groups(records)
    tables = [reconstruction_table(plan, records, runs_by), probe_table(plan, records, runs_by),
              latent_table(plan, records, runs_by), mask_table(plan, records, runs_by)]
    abl = ablation_table(plan, records, runs_by)
    return tables + ([abl] if abl else [])


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
        f"{_duration(sum(cpu)) if cpu else 'unknown'}",
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
    timing = (f"- Wall time of the last invocation: {_duration(manifest.get('wall_seconds'))}, "
              f"finished {manifest.get('finished', 'unknown')}")
    return lines, timing


def legend(plan: Plan | None, records: list[RunRecord]) -> list[tuple[str, str]]:
    present = list(dict.fromkeys(r.method for r in records))
    if plan is None:
        return [(m, "") for m in present]
    return [(m, plan.entry(m).description) for m in plan.names() if m in present]


def page_figures(plan: Plan | None, records: list[RunRecord]) -> list[tuple[str, Path]]:
    """(dataset, figure path) of each dataset's reference-method seed-0 figures that exist."""
    runs_by = groups(records)
    out = []
    for dataset in dict.fromkeys(r.dataset for r in records):
        ref = _reference(plan, runs_by, dataset)
        if ref is None:
            continue
        seed0 = [r for r in runs_by[(dataset, ref)] if r.seed == 0]
        for r in seed0:
            for name in PAGE_FIGURES:
                p = RunPaths(r.run_dir).eval / "figures" / name
                if p.is_file():
                    out.append((dataset, p))
    return out


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
    figs = page_figures(plan, records)
    if figs:
        # run folders are not kept with the tables (results/runs is large): the page shows copies
        text += ["## Figures (reference method, seed 0)", ""]
        for dataset in dict.fromkeys(d for d, _ in figs):
            text += [f"### {_label(plan, dataset)}", ""]
            text += [f"![{dataset} {p.stem}]({figure_copy_name(dataset, p)})"
                     for d, p in figs if d == dataset] + [""]
    return "\n".join(text)


def figure_copy_name(dataset: str, fig: Path) -> str:
    """Where RESULTS.md's copy of a run's figure lives, relative to the results folder."""
    return f"figures/{dataset}-{fig.name}"


def copy_page_figures(plan: Plan | None, records: list[RunRecord], out: Path) -> list[Path]:
    """Copy the page's figures next to RESULTS.md so the page works without the run folders."""
    copies = []
    for dataset, fig in page_figures(plan, records):
        dst = out / figure_copy_name(dataset, fig)
        dst.parent.mkdir(parents=True, exist_ok=True)
        atomic_copy(fig, dst)
        copies.append(dst)
    return copies


CSS = ("body{font-family:system-ui,sans-serif;margin:2em;max-width:90em}"
       "table{border-collapse:collapse;margin:1em 0;font-size:90%}"
       "td,th{border:1px solid #ccc;padding:3px 8px;text-align:right}"
       "td:nth-child(-n+2),th:nth-child(-n+2){text-align:left}"
       "img{max-width:100%;border:1px solid #ddd;margin:4px 0}")


def results_html(plan, records, manifest) -> str:
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
        figs = page_figures(plan, records)
        if figs:
            parts.append("<h2>Figures (reference method, seed 0)</h2>")
            for dataset in dict.fromkeys(d for d, _ in figs):
                parts.append(f"<h3>{html.escape(_label(plan, dataset))}</h3>")
                for d, p in figs:
                    if d == dataset:
                        data = base64.b64encode(p.read_bytes()).decode("ascii")
                        parts.append(f"<p>{html.escape(p.name)}<br><img alt='{html.escape(p.name)}'"
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
    """One row per run: dataset, method, kind, seed, then every scalar metric (sorted keys)."""
    fixed = ["dataset", "method", "kind", "seed"]
    keys = sorted({k for r in records for k, v in r.metrics.items()
                   if v is None or isinstance(v, (int, float, str, bool))})
    # metrics.json's own "dataset" (the data's name, e.g. mnist5k) must not shadow the plan's
    rows: list[list[Any]] = [fixed + [f"eval_{k}" if k in fixed else k for k in keys]]
    for r in records:
        rows.append([r.dataset, r.method, r.kind, r.seed]
                    + [_csv_value(r.metrics.get(k)) for k in keys])
    return _csv(rows)


def summary_csv(records: list[RunRecord]) -> str:
    """Mean and sample std over seeds per dataset × method × numeric metric."""
    rows: list[list[Any]] = [["dataset", "method", "kind", "metric", "n", "mean", "std"]]
    for (dataset, method), runs in groups(records).items():
        keys = sorted({k for r in runs for k, v in r.metrics.items() if _number(v) is not None})
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
             out / "results.csv": results_csv(records),
             out / "summary.csv": summary_csv(records),
             out / "index.html": results_html(plan, records, manifest)}
    copies = copy_page_figures(plan, records, out)
    for path, text in files.items():
        atomic_write_text(path, text)
    return list(files) + copies
