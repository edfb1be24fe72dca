#!/usr/bin/env python
"""Periodic held-out returns of several run folders side by side, by env steps and by seconds:
which setting reaches a held-out return first, read from the runs' own TensorBoard events.

Each run is ``NAME=RUN_DIR``; its curve is the ``eval_test/trial_return_mean`` series (one point
per periodic evaluation) with the seconds since the run's first training iteration was logged
(so start-up is left out, evaluation time is in). A run's final evaluation is its
``summary.json``, absent when the run was stopped before it. Seconds are only comparable between runs that had the machine to themselves
or shared it alike.

How to run (seconds; the runs must exist)::

    python benchmarks/learning_curves.py --run main=runs/tabular_mdp_n10-A --run fast=runs/tabular_mdp_n10-B \\
        --out benchmarks/results/learner_throughput/learning_curves

Output: a table on stdout, ``OUT.md`` and ``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HELD_OUT = "eval_test/trial_return_mean"
FIRST_ITERATION = "perf/iteration"


def curve(run_dir: Path) -> dict:
    """The run's periodic held-out returns with their env steps and seconds, and its summary."""
    events = EventAccumulator(str(run_dir), size_guidance={"scalars": 0, "images": 1, "histograms": 1})
    events.Reload()
    start = events.Scalars(FIRST_ITERATION)[0].wall_time
    points = [{"env_steps": e.step, "seconds": round(e.wall_time - start, 1), "held_out": round(e.value, 3)}
              for e in events.Scalars(HELD_OUT)]
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():  # stopped (Ctrl-C) before its final evaluation
        return {"periodic": points, "final": None}
    summary = json.loads(summary_file.read_text())
    test = summary["eval"]["test"]
    final = {"env_steps": summary["env_steps"], "wall_s": summary["wall_s"],
             "held_out": round(test["trial_return_mean"], 3), "ci95": test["trial_return_ci95"],
             "num_trials": test["num_trials"]}
    return {"periodic": points, "final": final}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True, help="NAME=RUN_DIR (split at the last =)")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = parser.parse_args(argv)

    runs = {name: curve(Path(path)) for name, _, path in (r.rpartition("=") for r in args.run)}
    lines = ["| run | periodic held-out: return at env steps (seconds) | final held-out (trials) | env steps | wall s |",
             "|---|---|---|---|---|"]
    for name, run in runs.items():
        periodic = ", ".join(f"{p['held_out']:.1f} at {p['env_steps'] / 1e3:.0f} k ({p['seconds']:.0f} s)"
                             for p in run["periodic"])
        final = run["final"]
        if final is None:
            lines.append(f"| {name} | {periodic} | stopped before it | | |")
            continue
        lines.append(f"| {name} | {periodic} | {final['held_out']:.2f} [{final['ci95'][0]:.2f}, "
                     f"{final['ci95'][1]:.2f}] ({final['num_trials']}) | {final['env_steps']} | {final['wall_s']:.0f} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
