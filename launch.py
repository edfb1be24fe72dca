#!/usr/bin/env python
"""Train and evaluate a meta-policy: ``python launch.py --config configs/bandit.yaml``.

Starts an embedded local Ray unless ``--address`` (or ``$RAY_ADDRESS``, which Ray sets inside
``ray job submit``) names a cluster; ``auto`` joins the cluster of the node it runs on.
Exit codes: 0 done, 2 bad input (config, paths, address; reported before Ray starts and
before any run folder is touched), 3 training stopped (a nan/inf return or loss, or every
env runner dead with no restart left).
A config with ``seeds: [0, 1, 2]`` trains one run per seed (Ray Tune) plus an aggregate report.

Evaluate a trained checkpoint (or a run folder's latest) against the family's baselines and
write a report folder (report.md, PNGs, summary.json)::

    python launch.py --eval-only --checkpoint runs/X/checkpoints/iter_000010 [--config C]
        [--split test|train] [--trials N] [--run-dir REPORT_DIR]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent
# Run from a plain checkout too: the library and the task families live beside this file.
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from metaray.cluster import resolve_address  # noqa: E402
from metaray.config import ConfigError, describe_options, load_config  # noqa: E402
from metaray.storage import (  # noqa: E402
    RunMirror, check_storage, download_run, is_uri, latest_checkpoint, resolve_checkpoint,
)
from metaray.validation import check_experiment  # noqa: E402


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
    parser.add_argument("--run-dir", type=Path, help="local run folder (default <storage>/<name>-<timestamp>; "
                                                     "with a URI storage or --resume URI, runs/<name>)")
    parser.add_argument("--resume", metavar="RUN_DIR_OR_URI",
                        help="continue a run from its latest checkpoint, with its saved config")
    parser.add_argument("--address", help="Ray cluster to join ('auto' on a cluster node); default: "
                                          "$RAY_ADDRESS (set inside `ray job submit`), else a local Ray")
    parser.add_argument("--num-cpus", type=int, help="CPUs of the embedded local Ray (default: all)")
    evaluation = parser.add_argument_group("evaluate a checkpoint")
    evaluation.add_argument("--eval-only", action="store_true",
                            help="evaluate --checkpoint instead of training; --run-dir is the report folder")
    evaluation.add_argument("--checkpoint", type=Path,
                            help="checkpoint folder, or a run folder (its latest checkpoint); --config "
                                 "defaults to that run's config.yaml")
    evaluation.add_argument("--split", choices=("test", "train"), default="test", help="trials to evaluate on")
    evaluation.add_argument("--trials", type=int, help="trials (default: evaluation.final_num_trials)")
    return parser.parse_args(argv)


def resume_target(location: str, run_dir: Path | None) -> tuple[Path, RunMirror | None]:
    """The local run folder to continue (a URI is first copied to ``run_dir``) and its mirror."""
    if is_uri(location):
        run_dir = run_dir or ROOT / "runs" / location.rstrip("/").rsplit("/", 1)[-1]
        download_run(location, run_dir)
        mirror = RunMirror(run_dir, location)
    else:
        run_dir, mirror = Path(location), None
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {location}: no such run folder")
    if not (run_dir / "config.yaml").is_file():
        raise ConfigError(f"--resume {location}: no config.yaml there, not a run folder")
    if latest_checkpoint(run_dir) is None:
        raise ConfigError(f"--resume {location}: no complete checkpoint under {run_dir / 'checkpoints'}; "
                          "start the run again without --resume")
    return run_dir, mirror


def new_run_target(name: str, storage: str, run_dir: Path | None) -> tuple[Path, RunMirror | None]:
    """A fresh local run folder for ``name`` and, for URI storage, its mirror."""
    check_storage(storage)
    folder = f"{name}-{time.strftime('%Y%m%d-%H%M%S')}"
    if is_uri(storage):
        run_dir = run_dir or ROOT / "runs" / folder
        mirror = RunMirror(run_dir, f"{storage.rstrip('/')}/{run_dir.name}")
    else:
        run_dir, mirror = run_dir or Path(storage) / folder, None
    if (run_dir / "config.yaml").exists():
        raise ConfigError(f"--run-dir {run_dir} already holds a run; continue it with --resume {run_dir} "
                          "or pick another folder")
    return run_dir, mirror


def evaluate_only(args: argparse.Namespace) -> int:
    """``--eval-only``: a report folder for one checkpoint, meta-policy and baselines side by side."""
    try:
        if args.checkpoint is None or not args.checkpoint.exists():
            raise ConfigError(f"--checkpoint {args.checkpoint}: no such checkpoint")
        checkpoint = resolve_checkpoint(args.checkpoint)
        cfg = load_config(args.config or checkpoint.parent.parent / "config.yaml", args.overrides)
        if args.trials is not None and args.trials <= 0:
            raise ConfigError(f"--trials must be > 0, got {args.trials}")
        num_trials = args.trials or cfg.evaluation.final_num_trials
        out_dir = args.run_dir or ROOT / "runs" / f"{cfg.name}-eval-{args.split}-{time.strftime('%Y%m%d-%H%M%S')}"
        address = resolve_address(args.address, args.num_cpus)
        check_experiment(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    from metaray.checkpoint_eval import evaluate_checkpoint
    from metaray.cluster import init_ray
    from metaray.report import headline

    init_ray(cfg, address, args.num_cpus)
    summary = evaluate_checkpoint(cfg, checkpoint, args.split, num_trials, out_dir)
    print(json.dumps(headline(summary), indent=2))
    print(f"report: {out_dir / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.eval_only:
        return evaluate_only(args)
    try:
        address = resolve_address(args.address, args.num_cpus)
        if args.resume is not None:
            run_dir, mirror = resume_target(args.resume, args.run_dir)
            cfg = load_config(run_dir / "config.yaml", args.overrides)
        else:
            if args.config is None:
                raise ConfigError("--config is required (or --resume RUN_DIR)")
            cfg = load_config(args.config, args.overrides)
            run_dir, mirror = new_run_target(cfg.name, args.storage, args.run_dir)
        check_experiment(cfg)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    from metaray.cluster import init_ray
    from metaray.train import TrainingError, train

    print(f"run folder: {run_dir}" + (f" (mirrored to {mirror.uri})" if mirror else ""), flush=True)
    init_ray(cfg, address, args.num_cpus)
    if cfg.seeds:
        from metaray.multi_seed import train_seeds
        from metaray.report import headline

        aggregate = train_seeds(cfg, run_dir, resume=args.resume is not None)
        print(json.dumps(headline(aggregate), indent=2))
        print(f"report: {run_dir / 'report' / 'report.md'}  |  tensorboard --logdir {run_dir}")
        return 0
    try:
        summary = train(cfg, run_dir, resume=args.resume is not None, mirror=mirror)
    except TrainingError as exc:
        print(f"training error: {exc}", file=sys.stderr)
        return 3
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
