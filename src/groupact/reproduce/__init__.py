"""`groupact reproduce`: the paper's comparisons and ablations from one command.

- :mod:`~groupact.reproduce.plan` — the plan (datasets, methods, ablations, budgets), strictly read;
- :mod:`~groupact.reproduce.ledger` — one run of the plan and the bookkeeping files the runner
  writes and the tables read;
- :mod:`~groupact.reproduce.runner` — runs expanded into run folders, trained in parallel
  subprocesses, reused when finished, resumed when interrupted;
- :mod:`~groupact.reproduce.tables` — RESULTS.md, results.csv, summary.csv and index.html.
"""

from groupact.reproduce.plan import Plan, load_plan
from groupact.reproduce.ledger import RunSpec
from groupact.reproduce.runner import ReproduceResult, reproduce
from groupact.reproduce.tables import write_tables

__all__ = ["Plan", "ReproduceResult", "RunSpec", "load_plan", "reproduce", "write_tables"]
