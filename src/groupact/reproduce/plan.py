"""The reproduction plan: which datasets, methods, ablations and budgets `groupact reproduce` runs.

A plan is a YAML file (the bundled one is ``groupact/reproduce/plan.yaml``) checked as strictly as a
recipe: an unknown key is an error that names the nearest valid key, and every override is a
``key=value`` text exactly as ``groupact train --set`` takes it, so a run of the plan is always
reproducible by hand with one ``groupact train`` command.

A run's config is the dataset's recipe with overrides applied in this order (later ones win):

0. ``datasets.D.overrides`` — the plan's settings of the recipe itself (the 3D rows keep the
   paper's L_const, which the 3D recipes' defaults drop);
1. ``budgets.B.all`` then ``budgets.B.datasets[D]`` — how long and how big (epochs, data sizes,
   probe steps, a time-to-quality schedule);
2. the method's (or ablation's) ``overrides`` then ``per_dataset[D]`` — what the method IS, which
   includes its own optimiser when the method's paper fixes one (Jin et al.'s lr and batch), so a
   budget cannot silently retune a baseline;
3. ``budgets.B.methods[M][D]`` — a budget's explicit exception for one method on one dataset;
4. what the runner sets for every run: ``train.seed``, ``train.threads=1``,
   ``train.progress=false`` and ``eval.figures`` (the budget's ``figures`` policy).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from groupact.config import Config, check_ranges, load_config, read_text_file
from groupact.errors import ConfigError, did_you_mean
from groupact.strict import checked_name, load_yaml, parse_override, shown, unknown_key

#: bounds on a plan's size: a typo like ``seeds: 100000000`` is an error, not a hang
MAX_SEEDS = 1000
MAX_RUNS = 10_000

#: config keys the runner sets for every run; a plan that sets them would be silently overruled
RUNNER_KEYS = ("train.seed", "train.threads", "train.progress", "eval.figures")

#: ``figures`` policies of a budget: which seeds write eval/figures
FIGURE_POLICIES = ("all", "first_seed", "none")


@dataclass
class DatasetEntry:
    """A dataset of the plan: the recipe that defines it, the plan's own settings of that recipe
    (``overrides``, applied before everything else: e.g. the paper's loss where the recipe's
    default departs from it), and a title for the tables."""

    recipe: str
    title: str = ""
    overrides: list[str] = field(default_factory=list)


@dataclass
class MethodEntry:
    """A method (or an ablation): overrides on top of each dataset's recipe."""

    description: str = ""
    overrides: list[str] = field(default_factory=list)
    per_dataset: dict[str, list[str]] = field(default_factory=dict)
    #: representation-only baseline: it appears in the probe table only
    probe_only: bool = False
    #: the datasets it runs on (None: every dataset; ablations must say)
    datasets: list[str] | None = None
    #: the method an ablation changes (the reference row of its table)
    reference: str | None = None


@dataclass
class Budget:
    """How much compute: overrides for every dataset and per dataset, seeds, figures."""

    description: str = ""
    seeds: int = 3
    figures: str = "first_seed"
    all: list[str] = field(default_factory=list)
    datasets: dict[str, list[str]] = field(default_factory=dict)
    #: method (or ablation) name → dataset → overrides, applied after the method's own
    methods: dict[str, dict[str, list[str]]] = field(default_factory=dict)


@dataclass
class Plan:
    datasets: dict[str, DatasetEntry]
    methods: dict[str, MethodEntry]
    ablations: dict[str, MethodEntry]
    budgets: dict[str, Budget]
    source: str = "bundled plan"

    def entry(self, name: str) -> MethodEntry:
        """A method or an ablation by name."""
        if name in self.methods:
            return self.methods[name]
        if name in self.ablations:
            return self.ablations[name]
        raise ConfigError(f"unknown method '{name}'{_hint(name, self.names())}; the plan has "
                          f"methods {', '.join(self.methods)} and ablations "
                          f"{', '.join(self.ablations)}")

    def names(self) -> list[str]:
        return list(self.methods) + list(self.ablations)

    def is_ablation(self, name: str) -> bool:
        return name in self.ablations

    def datasets_of(self, name: str) -> list[str]:
        """The datasets a method or ablation runs on, in the plan's dataset order."""
        wanted = self.entry(name).datasets
        return [d for d in self.datasets if wanted is None or d in wanted]

    def budget(self, name: str) -> Budget:
        if name not in self.budgets:
            raise ConfigError(f"unknown budget '{name}'{_hint(name, list(self.budgets))}; "
                              f"choose one of: {', '.join(self.budgets)}")
        return self.budgets[name]

    def dataset(self, name: str) -> DatasetEntry:
        if name not in self.datasets:
            raise ConfigError(f"unknown dataset '{name}'{_hint(name, list(self.datasets))}; "
                              f"choose from: {', '.join(self.datasets)}")
        return self.datasets[name]

    def overrides(self, dataset: str, method: str, budget: str, seed: int) -> list[str]:
        """Every ``--set`` of one run, in the order they apply (see the module docstring)."""
        self.dataset(dataset)
        b, m = self.budget(budget), self.entry(method)
        if dataset not in self.datasets_of(method):
            raise ConfigError(f"'{method}' does not run on dataset '{dataset}' (it runs on "
                              f"{', '.join(self.datasets_of(method))})")
        out = list(self.datasets[dataset].overrides)
        out += list(b.all) + list(b.datasets.get(dataset, []))
        out += list(m.overrides) + list(m.per_dataset.get(dataset, []))
        out += list(b.methods.get(method, {}).get(dataset, []))
        figures = b.figures == "all" or (b.figures == "first_seed" and seed == 0)
        out += [f"train.seed={seed}", "train.threads=1", "train.progress=false",
                f"eval.figures={'true' if figures else 'false'}"]
        return out

    def config(self, dataset: str, method: str, budget: str, seed: int) -> Config:
        """The fully checked config of one run."""
        return load_config(self.dataset(dataset).recipe,
                           self.overrides(dataset, method, budget, seed))

    def check(self) -> None:
        """Resolve every run of every budget (seed 0) to a Config: a bad override fails here,
        with the run it belongs to named, instead of hours into a reproduction."""
        for budget in self.budgets:
            for name in self.names():
                for dataset in self.datasets_of(name):
                    try:
                        check_ranges(self.config(dataset, name, budget, 0))
                    except ConfigError as e:
                        raise ConfigError(f"{self.source}: {dataset}/{name} (budget {budget}): "
                                          f"{e}") from None


# --- strict reading ------------------------------------------------------------------------------

def _hint(name: str, valid: list[str]) -> str:
    return did_you_mean(name, valid)


def _mapping(value: Any, where: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ConfigError(f"plan key '{where}' must be a mapping; got {shown(value)}")
    return {str(k): v for k, v in value.items()}


def _keys(data: dict[str, Any], valid: list[str], where: str) -> None:
    """Refuse unknown keys, naming the nearest valid one (like the recipe loader)."""
    for key in data:
        if key not in valid:
            raise unknown_key(key, where, valid, what="plan key")


def _text(value: Any, where: str) -> str:
    if value is None:
        return ""
    if not isinstance(value, str):
        raise ConfigError(f"plan key '{where}' takes text; got {shown(value)}")
    return " ".join(value.split())


def _overrides(value: Any, where: str) -> list[str]:
    """A list of ``key=value`` texts, each parsed now so a malformed one fails at load time."""
    if value is None:
        return []
    if not isinstance(value, list):
        raise ConfigError(f"plan key '{where}' takes a list of key=value overrides, e.g. "
                          f"[train.epochs=5]; got {shown(value)}")
    out = []
    for i, item in enumerate(value):
        if not isinstance(item, str):
            raise ConfigError(f"plan key '{where}[{i}]' must be a key=value text; got "
                              f"{shown(item)}")
        try:
            parse_override(item)
        except ConfigError as e:
            raise ConfigError(f"plan key '{where}[{i}]': {e}") from None
        key = item.split("=", 1)[0].strip()
        if key in RUNNER_KEYS:
            raise ConfigError(f"plan key '{where}[{i}]' sets {key}, which the runner sets for "
                              "every run (seeds: --seeds / budget seeds; figures: the budget's "
                              "'figures' policy)")
        out.append(item.strip())
    return out


def _names(value: Any, valid: list[str], where: str, what: str) -> list[str]:
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise ConfigError(f"plan key '{where}' takes a list of {what} names; got {shown(value)}")
    for v in value:
        if v not in valid:
            raise ConfigError(f"plan key '{where}' names unknown {what} '{v}'{_hint(v, valid)}")
    return list(value)


def _per_dataset(value: Any, datasets: list[str], where: str) -> dict[str, list[str]]:
    data = _mapping(value, where)
    for name in data:
        if name not in datasets:
            raise ConfigError(f"plan key '{where}.{name}' names no dataset of the plan"
                              f"{_hint(name, datasets)}; datasets: {', '.join(datasets)}")
    return {name: _overrides(v, f"{where}.{name}") for name, v in data.items()}


def _method(value: Any, datasets: list[str], where: str, ablation: bool) -> MethodEntry:
    data = _mapping(value, where)
    valid = ["description", "overrides", "per_dataset", "probe_only", "datasets"]
    if ablation:
        valid.append("reference")
    _keys(data, valid, f"{where}.")
    probe_only = data.get("probe_only", False)
    if not isinstance(probe_only, bool):
        raise ConfigError(f"plan key '{where}.probe_only' takes true or false; got "
                          f"{shown(probe_only)}")
    runs_on = None
    if "datasets" in data:
        runs_on = _names(data["datasets"], datasets, f"{where}.datasets", "dataset")
    elif ablation:
        raise ConfigError(f"plan key '{where}' needs 'datasets': the datasets the ablation runs on")
    return MethodEntry(description=_text(data.get("description"), f"{where}.description"),
                       overrides=_overrides(data.get("overrides"), f"{where}.overrides"),
                       per_dataset=_per_dataset(data.get("per_dataset"), datasets,
                                                f"{where}.per_dataset"),
                       probe_only=probe_only, datasets=runs_on,
                       reference=_text(data.get("reference"), f"{where}.reference") or None)


def _budget(value: Any, datasets: list[str], runs: list[str], where: str) -> Budget:
    data = _mapping(value, where)
    _keys(data, ["description", "seeds", "figures", "all", "datasets", "methods"], f"{where}.")
    seeds = data.get("seeds", 3)
    if not isinstance(seeds, int) or isinstance(seeds, bool) or not 1 <= seeds <= MAX_SEEDS:
        raise ConfigError(f"plan key '{where}.seeds' takes a whole number from 1 to {MAX_SEEDS}; "
                          f"got {shown(seeds)}")
    figures = data.get("figures", "first_seed")
    if figures not in FIGURE_POLICIES:
        raise ConfigError(f"plan key '{where}.figures' is one of {', '.join(FIGURE_POLICIES)}; "
                          f"got {shown(figures)}")
    methods = _mapping(data.get("methods"), f"{where}.methods")
    for name in methods:
        if name not in runs:
            raise ConfigError(f"plan key '{where}.methods.{name}' names no method or ablation of "
                              f"the plan{_hint(name, runs)}")
    return Budget(description=_text(data.get("description"), f"{where}.description"),
                  seeds=seeds, figures=figures,
                  all=_overrides(data.get("all"), f"{where}.all"),
                  datasets=_per_dataset(data.get("datasets"), datasets, f"{where}.datasets"),
                  methods={name: _per_dataset(v, datasets, f"{where}.methods.{name}")
                           for name, v in methods.items()})


def _names_are_safe(data: dict[str, Any], source: str) -> None:
    """Every dataset, method, ablation and budget name of the plan is a plain name: they become
    folders under --out (OUT/runs/DATASET/METHOD, runs/reproduce-BUDGET), so '..' or '/' in one
    would train and write outside it."""
    for section, what in (("datasets", "dataset"), ("methods", "method"),
                          ("ablations", "ablation"), ("budgets", "budget")):
        for name in _mapping(data.get(section), section):
            try:
                checked_name(name, f"plan {what}")
            except ConfigError as e:
                raise ConfigError(f"{source}: {e}") from None


def parse_plan(data: Any, source: str = "plan") -> Plan:
    """A :class:`Plan` from the YAML's dict; every key and every override checked."""
    data = _mapping(data, "root")
    _keys(data, ["datasets", "methods", "ablations", "budgets"], "")
    raw_datasets = _mapping(data.get("datasets"), "datasets")
    if not raw_datasets:
        raise ConfigError(f"{source}: the plan lists no datasets")
    _names_are_safe(data, source)
    datasets = {}
    for name, entry in raw_datasets.items():
        where = f"datasets.{name}"
        if isinstance(entry, str):  # short form: name: recipe
            entry = {"recipe": entry}
        entry = _mapping(entry, where)
        _keys(entry, ["recipe", "title", "overrides"], f"{where}.")
        if not isinstance(entry.get("recipe"), str):
            raise ConfigError(f"plan key '{where}.recipe' must name a recipe (see `groupact info`)")
        datasets[name] = DatasetEntry(entry["recipe"], _text(entry.get("title"), f"{where}.title")
                                      or name, _overrides(entry.get("overrides"),
                                                          f"{where}.overrides"))
    names = list(datasets)
    methods = {n: _method(v, names, f"methods.{n}", False)
               for n, v in _mapping(data.get("methods"), "methods").items()}
    if not methods:
        raise ConfigError(f"{source}: the plan lists no methods")
    ablations = {n: _method(v, names, f"ablations.{n}", True)
                 for n, v in _mapping(data.get("ablations"), "ablations").items()}
    clash = sorted(set(methods) & set(ablations))
    if clash:
        raise ConfigError(f"plan: '{clash[0]}' is both a method and an ablation; rename one")
    for name, a in ablations.items():
        a.reference = a.reference or next(iter(methods))
        if a.reference not in methods:
            raise ConfigError(f"plan key 'ablations.{name}.reference' names no method"
                              f"{_hint(a.reference, list(methods))}")
    budgets = {n: _budget(v, names, list(methods) + list(ablations), f"budgets.{n}")
               for n, v in _mapping(data.get("budgets"), "budgets").items()}
    if not budgets:
        raise ConfigError(f"{source}: the plan lists no budgets")
    return Plan(datasets, methods, ablations, budgets, source)


def bundled_plan_text() -> str:
    return (resources.files("groupact") / "reproduce" / "plan.yaml").read_text(encoding="utf-8")


def load_plan(path: str | Path | None = None, check: bool = True) -> Plan:
    """The bundled plan, or a plan file; with ``check`` every run's config is resolved too."""
    if path is None:
        text, source = bundled_plan_text(), "bundled plan"
    else:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(f"plan file {p} does not exist")
        text, source = read_text_file(p, "plan file"), str(p)
    data = load_yaml(text, source)
    plan = parse_plan(data, source)
    if check:
        plan.check()
    return plan
