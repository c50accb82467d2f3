"""A reproduction's results as tables: the run records read back from the run folders, and the
reconstruction, probe, latent, mask and ablation tables (written out by :mod:`.pages`).

Everything is read back from the run folders (``OUT/runs/<dataset>/<method>/seed<k>/eval/
metrics.json``) and the results folder's ``reproduce.json``, so the tables can be rewritten at any
time (``groupact reproduce --tables-only``) and say only what the files say. A planned run whose
folder is not here but which has a row in the results folder's own ``results.csv`` (the ledger
the last invocation wrote: run folders are too big to keep with the tables) is *carried*: its row
is read back from the ledger, and the page says which runs were carried. Each table cell is the
mean ± sample standard deviation over seeds; the ``seeds`` column says over how many.

Metrics keys starting with ``probe_`` or ``psnr_`` that the tables do not know by name get columns
of their own (the probe table and the reconstruction table), so a new evaluation metric shows up
without changing this file.
"""

from __future__ import annotations

import csv
import html
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from groupact.evaluate.labels import PROBE_SOLVERS, number_format, title
from groupact.io import read_json_object
from groupact.reproduce.ledger import read_run_meta
from groupact.reproduce.plan import Plan

#: the figures of the reference method's seed-0 run that the HTML page embeds, per dataset
PAGE_FIGURES = ("reconstructions.png", "latent_maps.png", "swap.png")

KNOWN_PROBES = ("zi", "zv", "z")

#: what the split does to the pictures, where a run's evaluation measures it (planes): how much the
#: model gets from g, the swap against the rendered truth, and where each drawing comes from
SPLIT_KEYS = ("wrong_g_cost", "swap_psnr", "object_share_zv", "background_share_zi")

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
    #: read back from the ledger (OUT/results.csv): the run's folder is not in OUT/runs
    carried: bool = False


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

def as_number(v: Any) -> float | None:
    """A finite number, or None (missing, null, NaN, text, bool)."""
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        return None
    return float(v) if math.isfinite(v) else None


#: the ledger of a results folder: one row per evaluated run (written by pages.results_csv)
LEDGER = "results.csv"
#: its leading columns; a metric named like one of them is written as eval_<name>
LEDGER_FIXED = ("dataset", "method", "kind", "seed", "seconds", "cpu_seconds")


def ledger_value(text: str) -> Any:
    """A results.csv cell back as the metric it was: '' is absent (None), then bool, int, float
    (nan included), else the text."""
    if text == "":
        return None
    if text in ("True", "False"):
        return text == "True"
    for kind in (int, float):
        try:
            return kind(text)
        except ValueError:
            pass
    return text


def plan_kind(plan: Plan, method: str) -> tuple[str, bool]:
    """(kind, probe_only) of a method or ablation the plan names."""
    return ("ablation" if plan.is_ablation(method) else "method"), plan.entry(method).probe_only


def carried_records(out: Path, plan: Plan | None, present: set[tuple[str, str, int]]
                    ) -> list[RunRecord]:
    """The ledger's rows for runs of the plan whose folders are not under ``out/runs``."""
    ledger = Path(out) / LEDGER
    if plan is None or not ledger.is_file():
        return []
    records = []
    with open(ledger, newline="", encoding="utf-8") as f:
        for row in csv.DictReader(f):
            try:
                dataset, method, seed = row["dataset"], row["method"], int(row["seed"])
            except (KeyError, ValueError):
                continue
            if (dataset, method, seed) in present or method not in plan.names() \
                    or dataset not in plan.datasets_of(method):
                continue
            run_dir = Path(out) / "runs" / dataset / method / f"seed{seed}"
            if run_dir.exists():         # a run folder that did not evaluate: not hidden by a row
                continue
            metrics = {}
            for key, text in row.items():
                if key in LEDGER_FIXED or key is None:
                    continue
                value = ledger_value(text)
                if value is not None:
                    metrics[key[len("eval_"):] if key.startswith("eval_") and
                            key[len("eval_"):] in LEDGER_FIXED else key] = value
            kind, probe_only = plan_kind(plan, method)
            records.append(RunRecord(dataset, method, kind, seed, probe_only,
                                     metrics, run_dir, as_number(ledger_value(row.get("seconds", ""))),
                                     as_number(ledger_value(row.get("cpu_seconds", ""))),
                                     carried=True))
    return records


def collect(out: Path, plan: Plan | None) -> list[RunRecord]:
    """Every evaluated run under ``out/runs``, then the ledger's rows of planned runs whose
    folders are not here (``carried``), in plan order (dataset, method, seed)."""

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
            kind, probe_only = plan_kind(plan, method)
        else:
            kind, probe_only = meta.get("kind", "method"), bool(meta.get("probe_only", False))
        records.append(RunRecord(dataset, method, kind, seed, probe_only, metrics, run_dir,
                                 as_number(meta.get("seconds")), as_number(meta.get("cpu_seconds"))))
    records += carried_records(out, plan, {(r.dataset, r.method, r.seed) for r in records})
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
    values = [v for v in (as_number(r.metrics.get(key)) for r in runs) if v is not None]
    if not values:
        return 0, None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return len(values), mean, None
    var = sum((v - mean) ** 2 for v in values) / (len(values) - 1)
    return len(values), mean, math.sqrt(var)


def probe_fit(runs: list[RunRecord]) -> str:
    """Which probe the runs' probe columns come from (a row can mix old and new evaluations)."""
    names = [PROBE_SOLVERS.get(r.metrics.get("probes_solver", "lbfgs"), "?") for r in runs
             if any(k.startswith("probe_") for k in r.metrics)]
    counts = {n: names.count(n) for n in dict.fromkeys(names)}
    if not counts:
        return "–"
    if len(counts) == 1:
        return next(iter(counts))
    return "; ".join(f"{n} ({k} of {len(runs)})" for n, k in counts.items())


def cell(runs: list[RunRecord], key: str, fmt: str | None = None) -> str:
    if key == "probes_solver":
        return probe_fit(runs)
    n, mean, std = stats(runs, key)
    if mean is None:
        return "–"
    spec = fmt or number_format(key)
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
            if k.startswith(prefix) and k not in known and (as_number(v) is not None or v is None)}
    return sorted(keys, key=lambda k: (k.removesuffix("_upright"), k.endswith("_upright")))


# --- the tables -----------------------------------------------------------------------------------

def dataset_label(plan: Plan | None, dataset: str) -> str:
    return plan.datasets[dataset].title if plan and dataset in plan.datasets else dataset


def reference_method(plan: Plan | None, runs_by: dict, dataset: str) -> str | None:
    """The method whose pairs give the do-nothing row: the plan's first full method present."""
    names = [m for (d, m), rs in runs_by.items() if d == dataset and rs[0].kind == "method"
             and not rs[0].probe_only]
    return names[0] if names else None


def _rows(plan, runs_by, select, columns: list[str]) -> list[list[str]]:
    rows, last = [], None
    for (dataset, method), runs in runs_by.items():
        if not select(runs[0]):
            continue
        first = dataset_label(plan, dataset) if dataset != last else ""
        last = dataset
        rows.append([first, method, str(len(runs))] + [cell(runs, k) for k in columns])
    return rows


def reconstruction_table(plan, records, runs_by) -> Table:
    extras = extra_keys(records, "psnr_", {"psnr_identity", "psnr_mean_target"})
    extras += [k for k in SPLIT_KEYS if any(k in r.metrics for r in records)]
    shapes = ["dice"] if any("dice" in r.metrics for r in records) else []
    cols = ["psnr", "ssim"] + shapes + extras
    rows, notes = [], []
    datasets = list(dict.fromkeys(r.dataset for r in records))
    for dataset in datasets:
        ref = reference_method(plan, runs_by, dataset)
        methods = [(m, rs) for (d, m), rs in runs_by.items() if d == dataset
                   and rs[0].kind == "method" and not rs[0].probe_only]
        if not methods:
            continue
        label = dataset_label(plan, dataset)
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
        "encoder passes per image where the read-out needs one. probe fit: scikit-learn's "
        "LogisticRegression fitted to convergence for each C of eval.probe_c, kept at the best "
        "validation accuracy (groupact 0.4 on), or the earlier fixed-step L-BFGS probe at one "
        "L2 weight (a row evaluated before 0.4, e.g. carried from the ledger).",
        plan, runs_by, ["probes_solver", "probe_chance"] + probe_columns(records)
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
    cols = (["psnr", "ssim", "inv_error", "equiv_error", "mask_fraction", "probes_solver"]
            + probe_cols + extra_keys(records, "probe_", known))
    rows = []
    for dataset in dict.fromkeys(d for d, _ in ablations):
        names = [m for d, m in ablations if d == dataset]
        refs = [plan.ablations[m].reference for m in names if plan and m in plan.ablations]
        ref = refs[0] if refs else reference_method(plan, runs_by, dataset)
        label = dataset_label(plan, dataset)
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
