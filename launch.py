#!/usr/bin/env python
"""Train and evaluate a meta-policy: ``python launch.py --config configs/bandit.yaml``.

Starts an embedded local Ray unless ``--address`` (or ``$RAY_ADDRESS``, which Ray sets inside
``ray job submit``) names a cluster; ``auto`` joins the cluster of the node it runs on.
Exit codes: 0 done, 2 bad input (config, paths, address; reported before Ray starts and
before any run folder is touched; a checkpoint that does not load), 3 training stopped (a
nan/inf return or loss, the task family's code raising, or every env runner dead with no
restart left), 130 Ctrl-C (the first
finishes and checkpoints the iteration under way, then prints the ``--resume`` line; a second
stops at once).

Every launch gets a folder of its own: ``<storage>/<name>-<YYYYmmdd-HHMMSS>``, with ``-2``,
``-3``... when another launch took that name in the same second. A ``--run-dir`` that holds a
run or a report (config.yaml, summary.json, report.md) is refused (exit 2), for training and
for ``--eval-only`` alike: continue a run with ``--resume``, never by starting into its folder.
``--resume`` restores the newest checkpoint that loads, saying which newer ones it skipped and
why, and writes nothing into the run folder until that restore succeeded.
A config with ``seeds: [0, 1, 2]`` trains one run per seed (Ray Tune) plus an aggregate report.

Evaluate a trained checkpoint (or a run folder's latest) against the family's baselines and
write a report folder (report.md, PNGs, summary.json)::

    python launch.py --eval-only --checkpoint runs/X/checkpoints/iter_000010 [--config C]
        [--split test|train] [--trials N] [--run-dir NEW_REPORT_DIR]

The report goes to ``runs/<name>-eval-<split>-<YYYYmmdd-HHMMSS>`` unless ``--run-dir`` names a
folder without a run or report in it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# Run from a plain checkout too: the library and the task families live beside this file.
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from metaray.config import ConfigError, ExperimentConfig, describe_options  # noqa: E402
from metaray.storage import (  # noqa: E402
    CheckpointError, RunMirror, create_run_folder, is_uri, latest_checkpoint, save_config,
)
from metaray.validation import LaunchPlan, check_launch  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (YAML or --set key=value):\n" + "\n".join(describe_options()),
    )
    parser.add_argument("--config", help="YAML experiment config (e.g. configs/bandit.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set training.lr=1e-3 (repeatable)")
    parser.add_argument("--storage", default=str(ROOT / "runs"), metavar="PATH_OR_URI",
                        help="parent of run folders: a path all nodes reach, or a URI (s3://, gs://, "
                             "file://...) the run folder is mirrored to (default: runs/ beside launch.py)")
    parser.add_argument("--run-dir", type=Path, help="local run folder, new or without a run or report in it "
                                                     "(default <storage>/<name>-<timestamp>[-N]; with a URI "
                                                     "storage or --resume URI, under runs/)")
    parser.add_argument("--resume", metavar="RUN_DIR_OR_URI",
                        help="continue a run from its latest checkpoint, with its saved config")
    parser.add_argument("--address", help="Ray cluster to join ('auto' on a cluster node); default: "
                                          "$RAY_ADDRESS (set inside `ray job submit`), else a local Ray")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    evaluation = parser.add_argument_group("evaluate a checkpoint")
    evaluation.add_argument("--eval-only", action="store_true",
                            help="evaluate --checkpoint instead of training; --run-dir is a new report folder")
    evaluation.add_argument("--checkpoint", type=Path,
                            help="checkpoint folder, or a run folder (its latest checkpoint); --config "
                                 "defaults to that run's config.yaml")
    evaluation.add_argument("--split", choices=("test", "train"), default="test", help="trials to evaluate on")
    evaluation.add_argument("--trials", type=int, help="trials (default: evaluation.final_num_trials)")
    evaluation.add_argument("--probe", action="store_true",
                            help="--eval-only with the task-inference probe: how well the recurrent state "
                                 "decodes the task along the trial (sets evaluation.probe; docs/probing_memory.md)")
    return parser.parse_args(argv)


def new_run_target(cfg: ExperimentConfig, storage: str, run_dir: Path | None) -> tuple[Path, RunMirror | None]:
    """A new local run folder for ``cfg``, created with its config.yaml, and for URI storage its mirror.

    ``storage`` and ``run_dir`` are already checked (:func:`metaray.validation.check_launch`).
    The folder is this launch's alone: the default name gets a ``-2``, ``-3``... suffix when a
    launch in the same second took it, and a ``--run-dir`` that another launch claimed first
    (its config.yaml exists) is a ConfigError.
    """
    if run_dir is None:
        parent = ROOT / "runs" if is_uri(storage) else Path(storage)
        run_dir = create_run_folder(parent, f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}")
    save_config(cfg, run_dir, claim=True)
    mirror = RunMirror(run_dir, f"{storage.rstrip('/')}/{run_dir.name}") if is_uri(storage) else None
    return run_dir, mirror


def output_folder(args: argparse.Namespace, plan: LaunchPlan) -> tuple[Path, RunMirror | None]:
    """The folder this launch writes (a report folder for ``--eval-only``) and its mirror,
    created now that every check has passed."""
    if plan.checkpoint is not None:
        return plan.run_dir or create_run_folder(
            ROOT / "runs", f"{plan.cfg.name}-eval-{args.split}-{time.strftime('%Y%m%d-%H%M%S')}"), None
    if args.resume is not None:
        return plan.run_dir, plan.mirror
    return new_run_target(plan.cfg, args.storage, plan.run_dir)


def evaluate_only(args: argparse.Namespace, plan: LaunchPlan, out_dir: Path) -> int:
    """``--eval-only``: a report folder for one checkpoint, meta-policy and baselines side by side."""
    from metaray.checkpoint_eval import evaluate_checkpoint
    from metaray.cluster import init_ray
    from metaray.report import headline

    try:
        init_ray(plan.cfg, plan.address, args.num_cpus)
        summary = evaluate_checkpoint(plan.cfg, plan.checkpoint, args.split, plan.num_trials, out_dir)
    except (CheckpointError, KeyboardInterrupt) as exc:
        if args.run_dir is None:
            with contextlib.suppress(OSError):
                out_dir.rmdir()  # the report folder output_folder made, while still empty
        stopped = isinstance(exc, KeyboardInterrupt)
        print("interrupted: no report written" if stopped else f"checkpoint error: --checkpoint {exc}",
              file=sys.stderr)
        return 130 if stopped else 2
    print(json.dumps(headline(summary), indent=2))
    print(f"report: {out_dir / 'report.md'}")
    return 0


def interrupted(run_dir: Path, resume_from: str, seeds: bool) -> int:
    """Ctrl-C: one line on stderr saying how to continue; exit code 130 (128 + SIGINT), as shells use."""
    checkpoint = None if seeds else latest_checkpoint(run_dir)  # several seeds: checkpoints in seed_<s>/
    if checkpoint is None and not seeds:
        print(f"interrupted before the first checkpoint: nothing to resume in {run_dir}; start the run again",
              file=sys.stderr)
    else:
        print("interrupted: " + (f"checkpoint {checkpoint}; " if checkpoint else "")
              + f"continue with: python launch.py --resume {resume_from}", file=sys.stderr)
    return 130


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    try:
        plan = check_launch(args, local_runs=ROOT / "runs")
        run_dir, mirror = output_folder(args, plan)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    if plan.checkpoint is not None:
        return evaluate_only(args, plan, run_dir)
    cfg = plan.cfg

    from metaray.cluster import init_ray
    from metaray.train import TrainingError, train

    print(f"run folder: {run_dir}" + (f" (mirrored to {mirror.uri})" if mirror else ""), flush=True)
    try:
        init_ray(cfg, plan.address, args.num_cpus)
        if cfg.seeds:
            from metaray.multi_seed import train_seeds
            from metaray.report import headline

            aggregate = train_seeds(cfg, run_dir, resume=args.resume is not None)
            print(json.dumps(headline(aggregate), indent=2))
            print(f"report: {run_dir / 'report' / 'report.md'}  |  tensorboard --logdir {run_dir}")
            return 0
        summary = train(cfg, run_dir, resume=args.resume is not None, mirror=mirror)
    except TrainingError as exc:
        print(f"training error: {exc}", file=sys.stderr)
        return 3
    except CheckpointError as exc:
        print(f"checkpoint error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return interrupted(run_dir, args.resume or (mirror.uri if mirror else str(run_dir)), bool(cfg.seeds))
    test = summary["eval"]["test"]
    print(json.dumps({
        "held_out_trial_return_mean": round(test["trial_return_mean"], 4),
        "held_out_num_trials": test["num_trials"],
        "train_split_trial_return_mean": round(summary["eval"]["train"]["trial_return_mean"], 4),
        "baselines": {k: round(v["trial_return_mean"], 4) for k, v in summary["baselines"].items()},
        "env_steps": summary["env_steps"],
        "env_runner_restarts": summary["env_runner_restarts"],
        "wall_s": summary["wall_s"],
    }, indent=2))
    print(f"summary: {run_dir / 'summary.json'}  |  tensorboard --logdir {run_dir.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
