#!/usr/bin/env python
"""Train and evaluate a meta-policy: ``python launch.py --config configs/bandit.yaml``.

Starts an embedded local Ray unless ``--address`` names a cluster (``auto`` from a cluster
node or inside ``ray job submit``). Config errors exit with code 2 before Ray starts.
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
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
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
