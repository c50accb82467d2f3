"""The `groupact` command: train, evaluate, transform, align, features, export, demo, report,
reproduce, info.

User mistakes (GroupactError) print one line on stderr and exit with status 2; anything else is a
bug and keeps its traceback. (About 400 lines because it is the whole command table: each
command's parser and a short handler that calls the module doing the work.)
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

import groupact
from groupact.config import config_yaml, load_config, read_recipe, recipe_names
from groupact.data import DATASETS
from groupact.demo import DemoApp, is_loopback, make_server, url_of
from groupact.distributed import init_from_env, launched_by_torchrun
from groupact.errors import GroupactError
from groupact.evaluate.evaluate import check_eval_extras, evaluate_run
from groupact.evaluate.report import metrics_table
from groupact.groups import GROUPS
from groupact.io import atomic_write_text
from groupact.latent import ACTIONS, MASKS
from groupact.nets import NETS, resolved_net_name
from groupact.reproduce.plan import load_plan
from groupact.reproduce.runner import reproduce
from groupact.reproduce.pages import write_tables
from groupact.reproduce.tables import LEDGER
from groupact.runs import RUNS_ROOT, export_run, latest_run_dir, new_run_dir
from groupact.threads import use_threads
from groupact.train import resume_config, signal_name, train_run
from groupact.transform import READOUTS, align_files, features_file, transform_file

EXIT_USER_ERROR = 2
#: --trust-code's help: a run folder's own net is code, run only with the user's consent
TRUST_HELP = ("load a run whose model.net names code outside groupact (FILE.py:FACTORY or "
              "MODULE:FACTORY): that code runs; use only on runs you trust")


class _Parser(argparse.ArgumentParser):
    """argparse with the tool's one-line error (usage goes to --help, not to every mistake)."""

    def error(self, message: str):
        self.exit(EXIT_USER_ERROR, f"groupact: error: {' '.join(message.split())}; see "
                                   f"`{self.prog} --help`\n")


def _threads_option(p: argparse.ArgumentParser) -> None:
    """``--threads N``: one size for torch's and the BLAS/OpenMP pools (default: the free cores)."""
    p.add_argument("--threads", type=int, metavar="N",
                   help="threads for torch, BLAS and scikit-learn together (default: the "
                        "physical cores not busy with other work when the command starts; "
                        "OMP_NUM_THREADS when set)")


def _parser() -> argparse.ArgumentParser:
    p = _Parser(
        prog="groupact",
        description="Learn how a group acts on an autoencoder's latent space, with the latent "
                    "split into a moved part z_v and a fixed part z_i.")
    p.add_argument("--version", action="version", version=f"groupact {groupact.__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    t = sub.add_parser("train", help="train a recipe into a run folder (then evaluate it)",
                       description="Train a recipe (a bundled name from `groupact info`, or a "
                                   "YAML file) and evaluate the best checkpoint.")
    t.add_argument("recipe", nargs="?",
                   help="recipe name (e.g. rotmnist-c4) or path to a .yaml file (optional with "
                        "--resume: the run's own config.yaml is used)")
    t.add_argument("--run-dir", help="output folder (default: runs/RECIPE, or runs/RECIPE-2, "
                                     "-3, … when taken; --resume: the newest of them)")
    t.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set train.epochs=5 (repeatable)")
    t.add_argument("--resume", action="store_true",
                   help="continue the run in --run-dir exactly where it stopped, with its own "
                        "config (--set may change only train.epochs and how it runs)")
    t.add_argument("--overwrite", action="store_true",
                   help="replace an existing run (only a folder groupact wrote; the old run is "
                        "kept until the new one has its first checkpoint)")
    t.add_argument("--no-eval", action="store_true", help="skip the evaluation after training")
    t.add_argument("--trust-code", action="store_true",
                   help=TRUST_HELP + " (--resume; not needed when the recipe or --set names "
                                     "the same net)")

    e = sub.add_parser("evaluate", help="evaluate a run folder with the fixed protocol",
                       description="Write RUN_DIR/eval/metrics.json, summary.md and figures.")
    e.add_argument("run_dir")
    e.add_argument("--out", help="output folder (default: RUN_DIR/eval)")
    e.add_argument("--no-figures", action="store_true")
    e.add_argument("--no-probes", action="store_true",
                   help="skip the linear probes (the image metrics take seconds; the probes take "
                        "minutes on 3D latents); writes RUN_DIR/eval-quick unless --out")
    e.add_argument("--pairs", type=int, metavar="N",
                   help="evaluate on N test pairs (default: one per test image); writes "
                        "RUN_DIR/eval-quick unless --out")
    e.add_argument("--heldout", metavar="NAMES",
                   help="brain3d runs on the generated population: test on deformed copies of "
                        "these other real brains instead (comma-separated: colin27, itk-t1; "
                        "`apt-get install mricron-data insighttoolkit5-examples`); writes "
                        "RUN_DIR/eval-heldout unless --out")
    e.add_argument("--device", default="cpu")
    e.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _threads_option(e)

    x = sub.add_parser("transform", help="transform an image through the latent space",
                       description="Write D(Φ_g(E(x))) for an input image; with --orbit N, a "
                                   "strip of N elements spread over the group.")
    x.add_argument("run_dir")
    x.add_argument("--input", required=True, help="image file (PNG/JPEG) or .npy array")
    x.add_argument("--g", help="group element: degrees for rotations (e.g. 90: a quarter turn "
                               "counter-clockwise as the image is shown), 'dy,dx' for shifts, "
                               "'ad,ah,aw,deg' for SO(3) (axis in depth, height, width "
                               "order), 'a,b' for contrast")
    x.add_argument("--orbit", type=int, metavar="N", help="write an orbit strip of N elements")
    x.add_argument("--scale", type=int, metavar="S",
                   help="PNG output: scale up S× by pixel repetition (default: to at least "
                        "112 pixels a side); .npy output is never scaled")
    x.add_argument("--output", required=True, help="output PNG")
    x.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _threads_option(x)

    al = sub.add_parser("align", help="estimate the group element between two images",
                        description="Estimate ĝ with T_ĝ(INPUT) ≈ TARGET through the run's latent "
                                    "(one encoder pass per image, a search over latent actions) "
                                    "and print it in the --g syntax of `groupact transform`, "
                                    "with its score (the relative latent residual on the variant "
                                    "channels: 0 = exact) and the runner-up of another basin; "
                                    "'ambiguous' when the runner-up scores within 1.5× of ĝ.")
    al.add_argument("run_dir")
    al.add_argument("--input", required=True, help="the image to move (PNG/JPEG or .npy)")
    al.add_argument("--target", required=True, help="the image to move it onto, same size")
    al.add_argument("--output", help="write T_ĝ(INPUT), the group's action on the input's "
                                     "pixels (.png or .npy)")
    al.add_argument("--scale", type=int, metavar="S",
                    help="PNG output: scale up S× (default: to at least 112 pixels a side)")
    al.add_argument("--polish", action="store_true",
                    help="continuous groups (SO(2), SO(3)): refine the latent's estimate locally "
                         "on the pixels (the latent finds the basin, the pixels the last "
                         "fraction of a degree); the score is then the images' relative residual")
    al.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _threads_option(al)

    r = sub.add_parser("report", help="one Markdown table of several evaluated runs",
                       description="Tabulate RUN_DIR/eval/metrics.json of each run folder.")
    r.add_argument("run_dirs", nargs="+")
    r.add_argument("--output", help="write the table to this file (default: print it)")

    q = sub.add_parser("reproduce", help="train, evaluate and tabulate the paper's comparisons",
                       description="Expand the reproduction plan (datasets × methods × seeds, "
                                   "plus ablations) into run folders under OUT/runs, train what "
                                   "is missing (reusing finished runs, resuming interrupted "
                                   "ones) and write OUT/RESULTS.md, results.csv, summary.csv "
                                   "and index.html. See docs/REPRODUCE.md.")
    q.add_argument("--budget", default="quick",
                   help="quick (short schedules: about 5 hours on 2 CPU cores, 3 with "
                        "--no-ablations; docs/REPRODUCE.md), full (the recipes' own settings) "
                        "or tiny (seconds a run, for checks); default quick")
    q.add_argument("--datasets", help="comma-separated dataset names (default: all)")
    q.add_argument("--methods", help="comma-separated method and/or ablation names (default: "
                                     "every method, plus the ablations)")
    q.add_argument("--no-ablations", action="store_true", help="skip the ablations")
    q.add_argument("--seeds", type=int, help="seeds 0..N-1 (default: the budget's)")
    q.add_argument("--jobs", type=int, help="runs in parallel, one thread each "
                                            "(default: min(2, CPU count))")
    q.add_argument("--out", help="results folder (default: runs/reproduce-BUDGET, so a run in "
                                 "a checkout never replaces the committed results/; pass "
                                 "--out results to refresh them)")
    q.add_argument("--plan", help="a plan YAML file instead of the bundled one")
    q.add_argument("--overwrite-changed", action="store_true",
                   help="retrain runs whose saved config differs from the plan's (deletes them)")
    q.add_argument("--reevaluate", action="store_true",
                   help="evaluate finished runs again (e.g. for new metrics) instead of reusing "
                        "their eval/metrics.json; trains nothing")
    q.add_argument("--dry-run", action="store_true",
                   help="list the runs and what would happen to each; run nothing")
    q.add_argument("--tables-only", action="store_true",
                   help="only rewrite the tables from the runs already in OUT")

    f = sub.add_parser("features", help="features of images for a downstream classifier",
                       description="Encode images and write (N, F) float32 features as .npy: by "
                                   "default the run's model.readout, the invariant read-out "
                                   "(z_i plus the action's invariants of z_v), which the group "
                                   "does not change.")
    f.add_argument("run_dir")
    f.add_argument("--input", required=True,
                   help="an image file, or a .npy of N images (N, C, H, W), (N, H, W, C) or "
                        "(N, H, W)")
    f.add_argument("--output", required=True, help="output .npy")
    f.add_argument("--readout", choices=list(READOUTS),
                   help="which features (default: the run's model.readout)")
    f.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _threads_option(f)

    xp = sub.add_parser("export", help="a small copy of a trained run for sharing (weights only)",
                        description="Copy RUN_DIR's config, data provenance, log and best weights "
                                    "(no optimiser state: about a third of the checkpoint) to "
                                    "OUT_DIR, with a SHA256SUMS file; `evaluate` and `transform` "
                                    "accept the copy, `train --resume` does not.")
    xp.add_argument("run_dir")
    xp.add_argument("out_dir")
    xp.add_argument("--trust-code", action="store_true", help=TRUST_HELP)

    dm = sub.add_parser("demo", help="an interactive local page: turn images through a run",
                        description="Serve a page (on this machine, offline) where you pick, "
                                    "upload or draw an image, move g with sliders and see "
                                    "D(Φ_g E x) beside T_g x, play the orbit, swap z_v/z_i "
                                    "with a second image and see the latent and the mask. "
                                    "Volumes show three slices and a whole-volume view. "
                                    "Ctrl-C stops it.")
    dm.add_argument("run_dir")
    dm.add_argument("--examples", metavar="FILE",
                    help="example images: an image file or an (N, …) .npy (default: the first "
                         "16 of the run's test split, loaded as training loads it)")
    dm.add_argument("--host", default="127.0.0.1",
                    help="address to listen on (default 127.0.0.1: this machine only; another "
                         "address serves the page to the network, to whoever has the printed "
                         "address with its token)")
    dm.add_argument("--port", type=int, default=8765, help="port (default 8765; 0: any free)")
    dm.add_argument("--open", action="store_true", help="open the page in a web browser")
    dm.add_argument("--trust-code", action="store_true", help=TRUST_HELP)
    _threads_option(dm)

    i = sub.add_parser("info", help="list recipes, datasets, groups, networks and actions; "
                                    "with a recipe, its description and resolved config",
                       description="Without RECIPE: what can be trained and with what. With "
                                   "RECIPE (a bundled name or a YAML file): its whole "
                                   "description and the config `groupact train RECIPE [--set "
                                   "…]` would use, as YAML.")
    i.add_argument("recipe", nargs="?")
    i.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="show the config with these overrides applied (as train would)")
    return p


def cmd_train(args) -> int:
    """Train (or resume) a run; under ``torchrun``, one data-parallel rank of it."""
    comm = init_from_env()
    try:
        return _train(args, comm)
    finally:
        comm.close()


def _train(args, comm) -> int:
    if args.resume:
        if args.run_dir is None and args.recipe is None:
            raise GroupactError("--resume needs --run-dir RUN_DIR (or the recipe, for runs/RECIPE)")
        run_dir = (Path(args.run_dir) if args.run_dir
                   else latest_run_dir(load_config(args.recipe).name))
        cfg = comm.run_on_main(lambda: resume_config(run_dir, args.recipe, args.overrides,
                                                     trust_code=args.trust_code))
    else:
        if args.recipe is None:
            raise GroupactError("give a recipe to train (see `groupact info`), or --resume "
                                "--run-dir RUN_DIR to continue a run")
        cfg = load_config(args.recipe, args.overrides)
        cfg = dataclasses.replace(cfg, model=dataclasses.replace(
            cfg.model, net=resolved_net_name(cfg.model.net)))   # a user file, found from anywhere
        if args.run_dir:
            run_dir = Path(args.run_dir)
        else:   # a new folder per run (the same one with --overwrite); broadcast from rank 0
            run_dir = comm.run_on_main(lambda: new_run_dir(cfg.name, overwrite=args.overwrite))
            if comm.is_main:
                print(f"run folder: {run_dir}", file=sys.stderr)
    if not args.no_eval:
        check_eval_extras(cfg.eval)
    trainer = train_run(cfg, run_dir, resume=args.resume, overwrite=args.overwrite, comm=comm)
    if trainer.stopped_by is not None:
        if comm.is_main:
            print(f"groupact: stopped by {signal_name(trainer.stopped_by)}; checkpoint saved; "
                  f"resume with: groupact train --resume --run-dir {run_dir}", file=sys.stderr)
        return 128 + trainer.stopped_by
    if not args.no_eval and comm.is_main:   # its net: named here, or trusted by --resume's check
        m = evaluate_run(run_dir, trust_code=True)
        print(f"{cfg.name}: test PSNR {m['psnr']:.2f} dB (do nothing {m['psnr_identity']:.2f}), "
              f"SSIM {m['ssim']:.3f}; mask {m['mask_fraction']:.2f} variant; "
              f"report {run_dir / 'eval' / 'summary.md'}")
    return 0


def cmd_evaluate(args) -> int:
    heldout = [n.strip() for n in args.heldout.split(",") if n.strip()] if args.heldout else None
    m = evaluate_run(args.run_dir, args.out, device=args.device,
                     figures_on=False if args.no_figures else None, heldout=heldout,
                     probes_on=False if args.no_probes else None, n_pairs=args.pairs,
                     trust_code=args.trust_code)
    print(f"test PSNR {m['psnr']:.2f} dB (do nothing {m['psnr_identity']:.2f}), "
          f"SSIM {m['ssim']:.3f}")
    return 0


def cmd_transform(args) -> int:
    if (args.g is None) == (args.orbit is None):
        raise GroupactError("give exactly one of --g VALUE or --orbit N")
    transform_file(args.run_dir, args.input, args.output, g=args.g, orbit=args.orbit,
                   scale=args.scale, trust_code=args.trust_code)
    print(f"wrote {args.output}")
    return 0


def cmd_align(args) -> int:
    est, group = align_files(args.run_dir, args.input, args.target, args.output,
                             scale=args.scale, trust_code=args.trust_code, polish=args.polish)
    second = ("none (a unique optimum)" if not math.isfinite(float(est.runner_up_score[0]))
              else f"{group.to_text(est.runner_up)[0]} score {float(est.runner_up_score[0]):.4g}")
    print(f"g: {group.to_text(est.g)[0]}")
    print(f"score: {float(est.score[0]):.4g}")
    print(f"runner-up: {second}")
    print(f"ambiguous: {'yes' if bool(est.ambiguous[0]) else 'no'}")
    if args.output:
        print(f"wrote {args.output}")
    return 0


def cmd_features(args) -> int:
    feats = features_file(args.run_dir, args.input, args.output, args.readout,
                          trust_code=args.trust_code)
    print(f"wrote {args.output}: {feats.shape[0]} × {feats.shape[1]} features")
    return 0


def cmd_demo(args) -> int:
    if not 0 <= args.port <= 65535:
        raise GroupactError(f"--port takes 0 to 65535; got {args.port}")
    app = DemoApp.from_run_dir(args.run_dir, args.examples, trust_code=args.trust_code)
    server = make_server(app, args.host, args.port)
    url = url_of(server)
    if not is_loopback(args.host):
        print(f"groupact: warning: --host {args.host} serves the page beyond this machine; "
              "anyone who can reach it and has the address below (its token) can use it",
              file=sys.stderr, flush=True)
    print(f"groupact demo: {args.run_dir} at {url} (Ctrl-C stops it)", flush=True)
    if args.open:
        import webbrowser
        webbrowser.open(url)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        print("groupact demo: stopped", file=sys.stderr)
    finally:
        server.server_close()
    return 0


def cmd_export(args) -> int:
    out = export_run(args.run_dir, Path(args.out_dir), trust_code=args.trust_code)
    sums = out / "SHA256SUMS"
    size = sum(p.stat().st_size for p in out.rglob("*") if p.is_file())
    print(f"exported {args.run_dir} to {out} ({size / 1e6:.2f} MB); checksums in {sums}")
    return 0


def _first_sentence(text: str, limit: int = 230) -> str:
    """A description's first sentence, at most ``limit`` characters (cut at a word, with '…')."""
    text = " ".join(text.split())
    end = text.find(". ")
    first = text[:end + 1] if end > 0 else text
    if len(first) <= limit:
        return first
    return first[:first.rfind(" ", 0, limit)].rstrip(",;:") + " …"


def cmd_info(args) -> int:
    import textwrap

    if args.recipe:
        cfg = load_config(args.recipe, args.overrides)
        print(f"{cfg.name}:")
        print(textwrap.fill(" ".join(cfg.description.split()), 100, initial_indent="  ",
                            subsequent_indent="  "))
        print()
        print(config_yaml(cfg), end="")
        return 0
    if args.overrides:
        raise GroupactError("--set needs a recipe: groupact info RECIPE --set KEY=VALUE")
    print("recipes (groupact train NAME; groupact info NAME for the whole description and "
          "config):")
    for name in recipe_names():
        desc = _first_sentence(str(read_recipe(name).get("description", "")))
        print(textwrap.fill(desc, 100, initial_indent=f"  {name:22s} ",
                            subsequent_indent=" " * 25))
    for title, registry in (("datasets", DATASETS), ("groups", GROUPS), ("networks", NETS),
                            ("latent actions", ACTIONS), ("masks", MASKS)):
        print(f"{title} ({registry.key}):")
        for k, d in registry.describe():
            keys = [f"{registry.params_prefix}.{p}" for p in registry.entry(k).params]
            print(f"  {k:22s} {d}" + (f" [{', '.join(keys)}]" if keys else ""))
    return 0


def cmd_report(args) -> int:
    table = metrics_table(args.run_dirs)
    if args.output:
        atomic_write_text(Path(args.output), table)
    else:
        print(table, end="")
    return 0


def _names(text: str | None) -> list[str] | None:
    return None if text is None else [n.strip() for n in text.split(",") if n.strip()]


def cmd_reproduce(args) -> int:
    import shlex

    if args.out is None:
        args.out = str(RUNS_ROOT / f"reproduce-{args.budget}")
    if args.tables_only:
        if not (Path(args.out) / "runs").is_dir() and not (Path(args.out) / LEDGER).is_file():
            raise GroupactError(f"{args.out} holds no runs ({args.out}/runs) and no ledger "
                                f"({args.out}/{LEDGER}); run `groupact reproduce` first, or point "
                                "--out at its results folder")
        paths = write_tables(Path(args.out), load_plan(args.plan))
        print(f"wrote {', '.join(str(p) for p in paths)}")
        return 0
    command = "groupact " + " ".join(shlex.quote(a) for a in getattr(args, "argv", []))
    result = reproduce(budget=args.budget, datasets=_names(args.datasets),
                       methods=_names(args.methods), ablations=not args.no_ablations,
                       seeds=args.seeds, jobs=args.jobs, out=args.out, plan_path=args.plan,
                       overwrite_changed=args.overwrite_changed, dry_run=args.dry_run,
                       reevaluate=args.reevaluate, command=command)
    return result.exit_code


COMMANDS = {"train": cmd_train, "evaluate": cmd_evaluate, "transform": cmd_transform,
            "align": cmd_align,
            "report": cmd_report, "reproduce": cmd_reproduce, "features": cmd_features,
            "export": cmd_export, "demo": cmd_demo, "info": cmd_info}


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # recorded by `reproduce`
    try:
        _choose_threads(getattr(args, "threads", None))
        code = COMMANDS[args.command](args)
    except GroupactError as e:
        if os.environ.get("RANK", "0") == "0":  # under torchrun, rank 0 speaks for all ranks
            print(f"groupact: error: {' '.join(str(e).split())}", file=sys.stderr)
        code = EXIT_USER_ERROR
    except BrokenPipeError:  # the reader of stdout left (`groupact info | head`): not an error
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # so the interpreter's final flush stays quiet
        code = 0
    except OSError as e:  # a path the checks above did not foresee: still one line, no traceback
        where = f" ({e.filename})" if e.filename else ""
        print(f"groupact: error: {e.strerror or type(e).__name__}{where}; check the path, its "
              "permissions and free space", file=sys.stderr)
        code = EXIT_USER_ERROR
    except KeyboardInterrupt:
        print("groupact: interrupted", file=sys.stderr)
        code = 130
    if args.command == "train":
        if launched_by_torchrun():
            _leave_now(code)
    return code


def _choose_threads(threads: int | None) -> None:
    """Size every thread pool once, before any work: torch, OpenBLAS and scikit-learn left at
    their defaults each start one per core and fight over the cores (train: train.threads,
    when set, resizes them in the trainer)."""
    if threads is not None and threads < 1:
        raise GroupactError(f"--threads takes 1 or more; got {threads}")
    use_threads(threads)


def _leave_now(code: int) -> None:
    """End a torchrun worker without the interpreter's teardown.

    Every file is written (atomically, fsync'd) and the process group is destroyed by now; what
    is left is finalisation, where gloo's C++ threads sometimes outlive the objects they use and
    abort the process ("terminate called without an active exception", SIGABRT) after a run that
    succeeded. Seen in CI under load even after the exit barrier; a hard exit skips it.
    """
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


if __name__ == "__main__":
    sys.exit(main())
