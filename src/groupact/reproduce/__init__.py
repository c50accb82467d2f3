"""`groupact reproduce`: the paper's comparisons and ablations from one command.

- :mod:`~groupact.reproduce.plan` — the plan (datasets, methods, ablations, budgets), strictly read;
- :mod:`~groupact.reproduce.ledger` — one run of the plan and the bookkeeping files the runner
  writes and the tables read;
- :mod:`~groupact.reproduce.specs` — the plan expanded into run folders, and what exists of each
  (new, to resume, finished and reused, or changed and refused);
- :mod:`~groupact.reproduce.workers` — the runs trained in parallel subprocesses, with progress
  and forwarded Ctrl-C;
- :mod:`~groupact.reproduce.runner` — the command: lock, inspect, run, manifest, tables;
- :mod:`~groupact.reproduce.tables` — the run records and the tables;
- :mod:`~groupact.reproduce.pages` — RESULTS.md, results.csv, summary.csv and index.html.
"""

from groupact.reproduce.plan import Plan, load_plan
from groupact.reproduce.ledger import RunSpec
from groupact.reproduce.runner import ReproduceResult, reproduce
from groupact.reproduce.pages import write_tables

__all__ = ["Plan", "ReproduceResult", "RunSpec", "load_plan", "reproduce", "write_tables"]
