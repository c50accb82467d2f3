"""`groupact reproduce`: the plan, the runner (reuse, resume, refuse, interrupt) and the tables."""

import json
import os
import shutil
import signal
import sys
import threading

import pytest
import yaml

from groupact.build import model_from_config
from groupact.cli import main
from groupact.config import load_config
from groupact.errors import ConfigError, GroupactError
from groupact.losses import LOSSES, check_loss_fits_model
from groupact.reproduce.plan import bundled_plan_text, load_plan, parse_plan
from groupact.reproduce.ledger import RUN_LOG, RunSpec
from groupact.reproduce.runner import reproduce
from groupact.reproduce.specs import expand_plan
from groupact.reproduce.workers import run_all
from groupact.reproduce.pages import write_tables

#: the input shape each data kind gives a model (to build every planned model without data)
SHAPES = {"mnist5k": (1, 28, 28), "adrenal3d": (1, 28, 28, 28), "brain3d": (1, 32, 32, 32),
          "planes": (3, 64, 64)}

TINY = dict(budget="tiny", datasets=["rotmnist"], methods=["ald", "plain-ae"], seeds=1)


def _plan_data():
    return yaml.safe_load(bundled_plan_text())


# --- the plan -----------------------------------------------------------------------------------

def test_every_planned_run_resolves_and_builds():
    plan = load_plan()  # resolves every run of every budget to a checked Config
    assert list(plan.datasets) == ["rotmnist", "blocked", "brain3d", "adrenal3d", "planes"]
    assert list(plan.methods) == ["ald", "manual", "all-variant", "plain-ae"]
    for name in plan.names():
        for dataset in plan.datasets_of(name):
            cfg = plan.config(dataset, name, "full", 0)
            assert cfg.loss.kind in LOSSES
            model = model_from_config(cfg, SHAPES[cfg.data.kind])  # nets, mask, action fit
            check_loss_fits_model(cfg, model)       # and the loss's terms fit the model
    assert plan.methods["plain-ae"].probe_only
    manual = plan.config("rotmnist", "manual", "full", 0)
    assert (manual.model.net, manual.model.mask.kind, manual.loss.kind, manual.pairs.mode,
            manual.train.lr, manual.train.batch_size) == ("jin-mnist", "fixed", "symmetric",
                                                          "both", 1e-4, 256)


def test_no_ablation_repeats_its_reference():
    plan = load_plan()
    for name, entry in plan.ablations.items():
        for dataset in plan.datasets_of(name):
            ours = plan.config(dataset, name, "quick", 0).to_dict()
            ref = plan.config(dataset, entry.reference, "quick", 0).to_dict()
            assert ours != ref, f"{dataset}/{name} is the same run as {entry.reference}"


def test_budgets_and_runner_settings():
    plan = load_plan()
    quick = plan.config("rotmnist", "ald", "quick", 0)
    assert (quick.train.epochs, quick.train.schedule, quick.eval.probe_items) == (12, "onecycle",
                                                                                  1000)
    full = plan.config("rotmnist", "ald", "full", 2)
    assert (full.train.epochs, full.train.lr, full.train.seed) == (50, 1e-3, 2)
    assert full.train.threads == 1 and full.train.progress is False
    assert plan.config("rotmnist", "ald", "quick", 0).eval.figures            # seed 0 only
    assert not plan.config("rotmnist", "ald", "quick", 1).eval.figures
    runs = expand_plan(plan, "quick", __import__("pathlib").Path("r"))
    # 5 datasets × 4 methods, 9 ablations × 2 datasets, 4 × 1 (hand-split on planes),
    # inv-only on a third (brain3d)
    assert len(runs) == 3 * (5 * 4 + 2 * 9 + 4 + 1)
    hand = plan.config("planes", "hand-split", "quick", 0)
    ald = plan.config("planes", "ald", "quick", 0)
    assert hand.model.mask.kind == "fixed" and hand.model.mask.variant == list(range(16))
    assert (hand.model.net, hand.loss, hand.train) == (ald.model.net, ald.loss, ald.train)
    # the table's 3D rows keep the paper's L_const that the 3D recipes' defaults drop
    for dataset in ("brain3d", "adrenal3d"):
        assert load_config(plan.datasets[dataset].recipe).loss.const == 0.0
        assert plan.config(dataset, "ald", "quick", 0).loss.const == 1.0
        assert plan.config(dataset, "tau-0.3" if dataset == "adrenal3d" else "all-variant",
                           "quick", 0).loss.const == 1.0
        assert plan.config(dataset, "inv-only", "quick", 0).loss.const == 0.0
    assert runs[0].run_dir.as_posix() == "r/runs/rotmnist/ald/seed0"


@pytest.mark.parametrize("edit, needle", [
    (lambda d: d.__setitem__("method", d.pop("methods")), "did you mean 'methods'"),
    (lambda d: d["methods"]["ald"].__setitem__("overides", []), "'methods.ald.overrides'"),
    (lambda d: d["budgets"]["quick"].__setitem__("seed", 2), "'budgets.quick.seeds'"),
    (lambda d: d["ablations"]["inv-only"].__setitem__("datasets", ["rotmnst"]), "'rotmnist'"),
    (lambda d: d["methods"]["manual"]["per_dataset"].__setitem__("blockd", []), "'blocked'"),
    (lambda d: d["budgets"]["tiny"].__setitem__("figures", "some"), "first_seed"),
    (lambda d: d["methods"]["ald"].__setitem__("overrides", ["train.seed=3"]), "runner sets"),
    (lambda d: d["methods"]["ald"].__setitem__("overrides", ["train.epochs"]), "key=value"),
])
def test_unknown_or_bad_plan_keys_are_rejected(edit, needle):
    data = _plan_data()
    edit(data)
    with pytest.raises(ConfigError, match=None) as e:
        parse_plan(data).check()
    assert needle in str(e.value), str(e.value)


def test_a_bad_override_names_its_run(tmp_path):
    data = _plan_data()
    data["methods"]["all-variant"]["overrides"] = ["model.mask.knd=all"]
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError) as e:
        load_plan(path)
    assert "all-variant" in str(e.value) and "model.mask.kind" in str(e.value)


@pytest.mark.parametrize("argv, needle", [
    (["--budget", "quik"], "did you mean 'quick'"),
    (["--datasets", "rotmnst"], "did you mean 'rotmnist'"),
    (["--methods", "ald,manul"], "did you mean 'manual'"),
    (["--plan", "/nonexistent/plan.yaml"], "does not exist"),
])
def test_user_errors_are_one_line(argv, needle, tmp_path, capsys):
    code = main(["reproduce", "--dry-run", "--out", str(tmp_path)] + argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and err[0].startswith("groupact: error:"), err
    assert needle in err[0], err[0]


def test_the_default_results_folder_is_per_budget_under_runs(tmp_path, monkeypatch, capsys):
    """`groupact reproduce` in a checkout must not replace the committed results/."""
    monkeypatch.chdir(tmp_path)
    (tmp_path / "results").mkdir()
    (tmp_path / "results" / "RESULTS.md").write_text("committed")
    assert main(["reproduce", "--budget", "tiny", "--datasets", "rotmnist", "--methods", "ald",
                 "--no-ablations", "--dry-run"]) == 0
    out = capsys.readouterr().out
    assert "runs/reproduce-tiny/runs/rotmnist/ald/seed0" in out and "results/runs" not in out
    assert (tmp_path / "results" / "RESULTS.md").read_text() == "committed"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results"]   # dry: nothing written


# --- end to end on the tiny budget ----------------------------------------------------------------

def _strip_timing(text: str) -> str:
    return "\n".join(ln for ln in text.splitlines() if "Wall time of the last invocation" not in ln)


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    out = tmp_path_factory.mktemp("reproduce") / "results"
    lines = []
    result = reproduce(**TINY, jobs=2, out=out, say=lines.append)
    assert result.exit_code == 0, lines
    return out, result, lines


def _copy(tiny_out, tmp_path):
    out = tmp_path / "results"
    shutil.copytree(tiny_out, out)
    return out


def test_tiny_reproduction_writes_the_tables(tiny):
    out, result, lines = tiny
    assert [r.label for r in result.launched] == ["rotmnist/ald/seed0", "rotmnist/plain-ae/seed0"]
    assert any(ln.startswith("[2/2] ") and "all done" in ln for ln in lines), lines
    text = (out / "RESULTS.md").read_text()
    recon = text.split("### (a)")[1].split("### (b)")[0]
    probes = text.split("### (b)")[1].split("### (c)")[0]
    assert "do nothing" in recon and "| ald | 1 |" in recon and "plain-ae" not in recon
    assert "plain-ae" in probes and "z_inv (U→T)" in probes   # new probe_ keys get columns
    assert "Budget: **tiny**" in text and "torch" in text
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,method,kind,seed,") and len(rows) == 3
    assert "eval_dataset" in rows[0]                       # metrics' own data name, renamed
    assert "rotmnist,ald,method,psnr," in (out / "summary.csv").read_text()
    page = (out / "index.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "<table>" in page and "src='http" not in page
    log = (out / "runs/rotmnist/ald/seed0" / RUN_LOG).read_text()
    assert "--set train.threads=1" in log and "wrote" in log


def test_rerun_trains_nothing_and_rewrites_the_same_tables(tiny, tmp_path):
    out = _copy(tiny[0], tmp_path)
    ckpts = sorted(out.glob("runs/*/*/seed*/checkpoints/*.pt"))
    stamps = [p.stat().st_mtime_ns for p in ckpts]
    before = {n: (out / n).read_text() for n in ("RESULTS.md", "index.html", "results.csv",
                                                 "summary.csv")}
    lines = []
    result = reproduce(**TINY, jobs=2, out=out, say=lines.append)
    assert result.launched == [] and result.exit_code == 0
    assert "2 finished and reused" in lines[0]
    assert [p.stat().st_mtime_ns for p in ckpts] == stamps
    for name, text in before.items():
        assert _strip_timing((out / name).read_text()) == _strip_timing(text), name
    # the wall time of the invocation that trained survives the one that did nothing
    trained = [ln for ln in before["RESULTS.md"].splitlines() if "that trained" in ln]
    assert len(trained) == 1 and trained[0] in (out / "RESULTS.md").read_text()


def test_a_run_with_a_checkpoint_but_no_evaluation_is_resumed(tiny, tmp_path):
    out = _copy(tiny[0], tmp_path)
    run = out / "runs/rotmnist/ald/seed0"
    psnr = json.loads((run / "eval/metrics.json").read_text())["psnr"]
    shutil.rmtree(run / "eval")
    last = run / "checkpoints/last.pt"
    stamp, log_before = last.stat().st_mtime_ns, (run / "metrics.jsonl").read_text()
    result = reproduce(**TINY, jobs=2, out=out, say=lambda s: None)
    assert [(r.label, r.action) for r in result.launched] == [("rotmnist/ald/seed0", "resume")]
    assert last.stat().st_mtime_ns == stamp                      # no step trained again
    assert (run / "metrics.jsonl").read_text() == log_before     # no epoch logged again
    assert json.loads((run / "eval/metrics.json").read_text())["psnr"] == psnr
    assert "resume" in (run / RUN_LOG).read_text().split("===")[-1]


def test_a_changed_config_is_refused(tiny, tmp_path, capsys):
    out = _copy(tiny[0], tmp_path)
    data = _plan_data()
    data["budgets"]["tiny"]["all"] = [o.replace("train.epochs=1", "train.epochs=2")
                                      for o in data["budgets"]["tiny"]["all"]]
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(data))
    with pytest.raises(GroupactError, match="--overwrite-changed") as e:
        reproduce(**TINY, out=out, plan_path=plan, say=lambda s: None)
    assert "train.epochs" in str(e.value)
    argv = ["reproduce", "--budget", "tiny", "--datasets", "rotmnist", "--methods",
            "ald,plain-ae", "--out", str(out), "--plan", str(plan)]
    assert main(argv) == 2
    assert "--overwrite-changed" in capsys.readouterr().err
    lines = []
    reproduce(**TINY, out=out, plan_path=plan, overwrite_changed=True, dry_run=True,
              say=lines.append)
    assert "2 new" in lines[0] and (out / "runs/rotmnist/ald/seed0/eval").is_dir()  # dry: kept
    (out / "runs/rotmnist/ald/seed0/my_notes.txt").write_text("mine")  # not ours to delete
    with pytest.raises(GroupactError, match="my_notes.txt"):
        reproduce(**TINY, out=out, plan_path=plan, overwrite_changed=True, say=lambda s: None)
    assert (out / "runs/rotmnist/ald/seed0/my_notes.txt").is_file()
    assert (out / "runs/rotmnist/plain-ae/seed0/eval").is_dir()  # and no other run was deleted


def test_tables_only(tiny, tmp_path, capsys):
    out = _copy(tiny[0], tmp_path)
    (out / "RESULTS.md").unlink()
    assert main(["reproduce", "--tables-only", "--out", str(out)]) == 0
    assert "### (b)" in (out / "RESULTS.md").read_text()


# --- the tables on made-up metrics ----------------------------------------------------------------

def _fake_run(out, dataset, method, seed, **metrics):
    d = out / "runs" / dataset / method / f"seed{seed}" / "eval"
    d.mkdir(parents=True)
    base = {"psnr": 20.0, "ssim": 0.5, "psnr_identity": 9.0, "ssim_identity": 0.2,
            "probe_z": 0.5, "probe_z_upright": 0.3, "probe_zi": None, "probe_chance": 0.11,
            "mask_fraction": 1.0, "inv_error": float("nan"), "mask_variant_channels": [0, 1]}
    (d / "metrics.json").write_text(json.dumps({**base, **metrics}))
    return d


def test_tables_generic_columns_ablations_and_figures(tmp_path):
    out = tmp_path / "results"
    for seed in range(2):
        _fake_run(out, "rotmnist", "ald", seed, probe_newpart=0.7, probe_newpart_upright=0.6,
                  psnr_extra=5.0)
    _fake_run(out, "rotmnist", "inv-only", 0, psnr=13.0)
    figs = out / "runs/rotmnist/ald/seed0/eval/figures"
    figs.mkdir()
    (figs / "swap.png").write_bytes(b"\x89PNG fake")
    write_tables(out, load_plan(check=False))
    text = (out / "RESULTS.md").read_text()
    assert "newpart (T→T)" in text and "newpart (U→T)" in text   # new probe_ keys
    assert "psnr_extra" in text.split("### (b)")[0]                    # new psnr_ keys
    ablations = text.split("### (e)")[1]
    assert "ald (reference)" in ablations and "| inv-only | 1 | 13.00 |" in ablations
    assert "](figures/rotmnist-swap.png)" in text          # a copy that lives with the tables
    assert (out / "figures" / "rotmnist-swap.png").read_bytes() == b"\x89PNG fake"
    assert "data:image/png;base64," in (out / "index.html").read_text()
    assert "rotmnist,ald,method,psnr,2,20.0,0.0" in (out / "summary.csv").read_text()


def test_the_planes_split_measures_are_columns_of_the_reconstruction_table(tmp_path):
    out = tmp_path / "results"
    for seed, cost in enumerate((1.0, 2.0)):
        _fake_run(out, "planes", "ald", seed, wrong_g_cost=cost, swap_psnr=22.0,
                  object_share_zv=0.99, background_share_zi=0.98)
    _fake_run(out, "rotmnist", "ald", 0)                     # no such keys: no such cells
    write_tables(out, load_plan(check=False))
    table = (out / "RESULTS.md").read_text().split("### (b)")[0]
    header = next(line for line in table.splitlines() if line.startswith("| dataset"))
    for name in ("wrong-g cost (dB)", "swap PSNR", "object from z_v", "background from z_i"):
        assert name in header
    planes = next(line for line in table.splitlines() if "| ald | 2 |" in line)
    assert "1.50 ± 0.71" in planes and "22.00 ± 0.00" in planes and "0.990 ± 0.000" in planes


def test_mean_and_std_are_over_seeds(tmp_path):
    out = tmp_path / "results"
    for seed, psnr in enumerate((10.0, 11.0, 12.0)):
        _fake_run(out, "blocked", "ald", seed, psnr=psnr)
    write_tables(out, load_plan(check=False))
    assert "| ald | 3 | 11.00 ± 1.00 |" in (out / "RESULTS.md").read_text()


def test_rows_of_runs_not_here_are_carried_from_the_ledger_and_said_so(tmp_path):
    out = tmp_path / "results"
    plan = load_plan(check=False)
    for seed in range(2):
        _fake_run(out, "rotmnist", "ald", seed, psnr=20.0 + seed, probes_solver="sklearn")
    figs = out / "runs/rotmnist/ald/seed0/eval/figures"
    figs.mkdir()
    (figs / "swap.png").write_bytes(b"\x89PNG one")
    _fake_run(out, "blocked", "ald", 0, psnr=15.0)              # an old evaluation: L-BFGS probe
    write_tables(out, plan)
    ledger = (out / "results.csv").read_text()
    # the run folders go (a fresh clone has only the tables); one rotmnist run is trained again
    shutil.rmtree(out / "runs")
    _fake_run(out, "rotmnist", "ald", 1, psnr=30.0, probes_solver="sklearn")
    (out / "runs/blocked/ald/seed1").mkdir(parents=True)        # there, but never evaluated
    # a row the plan does not have is not carried
    (out / "results.csv").write_text(ledger + "rotmnist,no-such-method,method,0,,," + "\n")
    write_tables(out, plan)
    text = (out / "RESULTS.md").read_text()
    assert "Carried: 2 of the 3 runs" in text and "rotmnist/ald, blocked/ald" in text
    assert "| ald | 2 | 25.00 ± 7.07 |" in text                 # carried seed 0 (20) + new seed 1 (30)
    assert "no-such-method" not in text
    probes = text.split("### (b)")[1].split("### (c)")[0]
    assert "sklearn, C on val |" in probes and "L-BFGS, fixed steps |" in probes
    assert "](figures/rotmnist-swap.png)" in text               # the copy from before stays shown
    assert (out / "figures/rotmnist-swap.png").read_bytes() == b"\x89PNG one"
    rows = (out / "results.csv").read_text().splitlines()
    assert rows[0].startswith("dataset,method,kind,seed,seconds,cpu_seconds,inv_error,")
    assert len(rows) == 4                                       # carried again next time
    # the values come back as they were written: nan, text, numbers
    again = [r for r in __import__("csv").DictReader(rows) if r["method"] == "ald"]
    assert {r["inv_error"] for r in again} == {"nan"}
    # a fresh clone of a results folder has the ledger and no runs: the tables can still be made
    shutil.rmtree(out / "runs")
    assert main(["reproduce", "--tables-only", "--out", str(out)]) == 0
    assert "Carried: 3 of the 3 runs" in (out / "RESULTS.md").read_text()


# --- failures and Ctrl-C, with stand-in workers ------------------------------------------------

WORKER = r"""
import json, pathlib, signal, sys, time
run, mode = pathlib.Path(sys.argv[1]), sys.argv[2]
if mode == "fail":
    print("groupact: error: boom"); sys.exit(2)
if mode == "wait":
    signal.signal(signal.SIGINT, lambda *a: sys.exit(130))
    print("ready", flush=True)
    time.sleep(30); sys.exit(0)
(run / "eval").mkdir(parents=True, exist_ok=True)
(run / "eval" / "metrics.json").write_text(json.dumps({"psnr": 20.0, "psnr_identity": 9.0}))
"""


def _specs(tmp_path, modes):
    return [RunSpec("rotmnist", "ald", "method", i, "rotmnist-c4", [f"mode={m}"],
                    tmp_path / "runs" / "rotmnist" / "ald" / f"seed{i}")
            for i, m in enumerate(modes)]


@pytest.fixture
def fake_worker(tmp_path, monkeypatch):
    script = tmp_path / "worker.py"
    script.write_text(WORKER)
    monkeypatch.setattr(RunSpec, "command", lambda self: [sys.executable, str(script),
                                                          str(self.run_dir),
                                                          self.overrides[0][5:]])
    monkeypatch.setattr("groupact.reproduce.workers.run_config",
                        lambda spec: __import__("groupact.config").config.load_config(
                            "rotmnist-c4"))


def test_a_failed_run_is_reported_and_the_rest_continue(tmp_path, fake_worker):
    lines = []
    result = run_all(_specs(tmp_path, ["fail", "ok", "ok"]), "tiny", 2, lines.append, poll=0.02)
    assert [o.status for o in sorted(result.outcomes, key=lambda o: o.spec.seed)] == \
        ["failed", "done", "done"]
    assert result.exit_code == 1
    assert any("FAILED (exit 2): boom" in ln for ln in lines), lines


def test_ctrl_c_is_forwarded_and_stops_launching(tmp_path, fake_worker):
    specs = _specs(tmp_path, ["wait", "wait", "ok"])
    lines = []

    def interrupt():  # once both workers are up, Ctrl-C the runner (this process)
        for _ in range(500):
            logs = [s.run_dir / RUN_LOG for s in specs[:2]]
            if all(p.is_file() and "ready" in p.read_text() for p in logs):
                break
            threading.Event().wait(0.02)
        os.kill(os.getpid(), signal.SIGINT)

    threading.Thread(target=interrupt, daemon=True).start()
    result = run_all(specs, "tiny", 2, lines.append, poll=0.02)
    assert result.interrupted and result.exit_code == 130
    assert [s.label for s in result.launched] == [s.label for s in specs[:2]]  # 3rd never began
    assert [o.status for o in result.outcomes] == ["interrupted", "interrupted"]
    assert any(ln.startswith("stopping:") for ln in lines)


def test_reevaluate_evaluates_finished_runs_again_without_training(tiny, tmp_path):
    out = _copy(tiny[0], tmp_path)
    run = out / "runs/rotmnist/ald/seed0"
    last = run / "checkpoints/last.pt"
    stamp = last.stat().st_mtime_ns
    metrics = run / "eval/metrics.json"
    psnr = json.loads(metrics.read_text())["psnr"]
    metrics.write_text(json.dumps({"psnr": psnr}))                # an old evaluation, fewer keys
    result = reproduce(**{**TINY, "methods": ["ald"]}, out=out, reevaluate=True,
                       say=lambda s: None)
    assert [(r.label, r.action) for r in result.launched] == [("rotmnist/ald/seed0",
                                                               "reevaluate")]
    assert last.stat().st_mtime_ns == stamp
    again = json.loads(metrics.read_text())
    assert again["psnr"] == psnr and "probe_z" in again


def test_tables_only_without_runs_is_a_user_error(tmp_path, capsys):
    assert main(["reproduce", "--tables-only", "--out", str(tmp_path / "nothing")]) == 2
    assert "holds no runs" in capsys.readouterr().err
