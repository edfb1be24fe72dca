#!/usr/bin/env python
"""Train and evaluate a meta-policy: ``python launch.py --config configs/bandit.yaml``.

Starts an embedded local Ray unless ``--address`` names a cluster (``auto`` from a cluster
node or inside ``ray job submit``). Config errors exit with code 2 before Ray starts.
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

from metaray.config import ConfigError, describe_options, load_config  # noqa: E402


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="config keys (YAML or --set key=value):\n" + "\n".join(describe_options()),
    )
    parser.add_argument("--config", help="YAML experiment config (e.g. configs/bandit.yaml)")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a config key, e.g. --set training.lr=1e-3 (repeatable)")
    parser.add_argument("--run-dir", type=Path, help="run folder (default runs/<name>-<timestamp>)")
    parser.add_argument("--resume", type=Path, metavar="RUN_DIR",
                        help="continue a run from its latest checkpoint, with its saved config")
    parser.add_argument("--address", help="Ray cluster to join ('auto' on a cluster node); default: local Ray")
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


def evaluate_only(args: argparse.Namespace) -> int:
    """``--eval-only``: a report folder for one checkpoint, meta-policy and baselines side by side."""
    try:
        if args.checkpoint is None or not args.checkpoint.exists():
            raise ConfigError(f"--checkpoint {args.checkpoint}: no such checkpoint")
        from metaray.studies import resolve_checkpoint

        checkpoint = resolve_checkpoint(args.checkpoint)
        config = args.config or checkpoint.parent.parent / "config.yaml"
        cfg = load_config(config, args.overrides)
        num_trials = args.trials or cfg.evaluation.final_num_trials
        if num_trials <= 0:
            raise ConfigError(f"--trials must be > 0, got {num_trials}")
        out_dir = args.run_dir or ROOT / "runs" / f"{cfg.name}-eval-{args.split}-{time.strftime('%Y%m%d-%H%M%S')}"
        from metaray.algorithm import check_family
        from metaray.cluster import check_address

        check_family(cfg)
        check_address(args.address)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    from metaray.cluster import init_ray
    from metaray.report import headline
    from metaray.studies import evaluate_checkpoint

    init_ray(cfg.task.family, args.address, args.num_cpus)
    summary = evaluate_checkpoint(cfg, checkpoint, args.split, num_trials, out_dir)
    print(json.dumps(headline(summary), indent=2))
    print(f"report: {out_dir / 'report.md'}")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.eval_only:
        return evaluate_only(args)
    try:
        if args.resume is not None:
            if not (args.resume / "config.yaml").is_file():
                raise ConfigError(f"--resume {args.resume}: no config.yaml there, not a run folder")
            cfg = load_config(args.resume / "config.yaml", args.overrides)
            run_dir = args.resume
        else:
            if args.config is None:
                raise ConfigError("--config is required (or --resume RUN_DIR)")
            cfg = load_config(args.config, args.overrides)
            run_dir = args.run_dir or ROOT / "runs" / f"{cfg.name}-{time.strftime('%Y%m%d-%H%M%S')}"
            if (run_dir / "summary.json").exists():
                raise ConfigError(f"--run-dir {run_dir} holds a finished run; pick another folder")
        from metaray.algorithm import check_family
        from metaray.cluster import check_address

        check_family(cfg)
        check_address(args.address)
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2

    from metaray.cluster import init_ray
    from metaray.train import train

    print(f"run folder: {run_dir}", flush=True)
    init_ray(cfg.task.family, args.address, args.num_cpus)
    if cfg.seeds:
        from metaray.report import headline
        from metaray.studies import train_seeds

        aggregate = train_seeds(cfg, run_dir, resume=args.resume is not None)
        print(json.dumps(headline(aggregate), indent=2))
        print(f"report: {run_dir / 'report' / 'report.md'}  |  tensorboard --logdir {run_dir}")
        return 0
    summary = train(cfg, run_dir, resume=args.resume is not None)
    test = summary["eval"]["test"]
    print(json.dumps({
        "held_out_trial_return_mean": round(test["trial_return_mean"], 4),
        "held_out_num_trials": test["num_trials"],
        "train_split_trial_return_mean": round(summary["eval"]["train"]["trial_return_mean"], 4),
        "baselines": {k: round(v["trial_return_mean"], 4) for k, v in summary["baselines"].items()},
        "env_steps": summary["env_steps"],
        "wall_s": summary["wall_s"],
    }, indent=2))
    print(f"summary: {run_dir / 'summary.json'}  |  tensorboard --logdir {run_dir.parent}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
