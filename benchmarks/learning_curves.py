#!/usr/bin/env python
"""Periodic held-out returns of several run folders side by side, by env steps and by seconds:
which setting reaches a held-out return first, read from the runs' own TensorBoard events.

Each run is ``NAME=RUN_DIR``; its curve is the ``eval_test/trial_return_mean`` series (one point
per periodic evaluation) with the seconds since the run's first training iteration was logged
(so start-up and the pauses of a stopped and resumed run are left out, evaluation time is in). A run's final evaluation is its
``summary.json``, absent when the run was stopped before it. Seconds are only comparable between runs that had the machine to themselves
or shared it alike.

A run is a run folder or ``FILE.json@N``, the N-th run (from 0) of an earlier ``OUT.json``, so
a committed curve can stand beside new runs after its folder is gone. With ``--target``, runs named
``GROUP/SEED`` also get a table, one row per group: the env steps and seconds each seed took to its
first periodic held-out return at or above the group's target (``--target GROUP=VALUE``, or one
``--target VALUE`` for all), and their median with seeds that never reached it counted as slower
than every seed that did.

How to run (seconds; the runs must exist)::

    python benchmarks/learning_curves.py --run main=runs/tabular_mdp_n10-A --run fast=runs/tabular_mdp_n10-B \\
        --out benchmarks/results/learner_throughput/learning_curves
    python benchmarks/learning_curves.py --target 105 --run R2D2/0=runs/A --run R2D2/1=runs/B \\
        --run PPO/0=benchmarks/results/tabular_mdp_n10_r2d2/learning_curves.json@1 --out OUT

Output: the tables on stdout, ``OUT.md`` and ``OUT.json``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
import sys
from pathlib import Path

from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

HELD_OUT = "eval_test/trial_return_mean"
FIRST_ITERATION = "perf/iteration"


def curve(run_dir: Path) -> dict:
    """The run's periodic held-out returns with their env steps and seconds, and its summary.

    A run continued with ``--resume`` has one event file per process: each process's seconds
    count from its own first iteration and go on from where the previous one stopped, so the
    time between a stop and its resume is left out, and steps a process redid replace the old ones.
    """
    points: list[dict] = []
    elapsed = 0.0
    for events_file in sorted(run_dir.glob("events.out.tfevents.*")):
        events = EventAccumulator(str(events_file), size_guidance={"scalars": 0, "images": 1, "histograms": 1})
        events.Reload()
        if FIRST_ITERATION not in events.Tags()["scalars"]:
            continue
        iterations = events.Scalars(FIRST_ITERATION)
        held_out = events.Scalars(HELD_OUT) if HELD_OUT in events.Tags()["scalars"] else []
        start = iterations[0].wall_time
        points = [p for p in points if p["env_steps"] < iterations[0].step]
        points += [{"env_steps": e.step, "seconds": round(elapsed + e.wall_time - start, 1),
                    "held_out": round(e.value, 3)} for e in held_out]
        elapsed += max(e.wall_time for e in [*iterations, *held_out]) - start
    summary_file = run_dir / "summary.json"
    if not summary_file.is_file():  # stopped (Ctrl-C) before its final evaluation
        return {"periodic": points, "final": None}
    summary = json.loads(summary_file.read_text())
    test = summary["eval"]["test"]
    final = {"env_steps": summary["env_steps"], "wall_s": summary["wall_s"],
             "held_out": round(test["trial_return_mean"], 3), "ci95": test["trial_return_ci95"],
             "num_trials": test["num_trials"]}
    return {"periodic": points, "final": final}


def load(source: str) -> dict:
    """A run's curve from its folder, or from ``FILE.json@N``: run N of an earlier output."""
    path, at, index = source.rpartition("@")
    if at and path.endswith(".json"):
        return list(json.loads(Path(path).read_text()).values())[int(index)]
    return curve(Path(source))


def time_to_target(runs: dict[str, dict], targets: dict[str, float]) -> list[str]:
    """Per ``GROUP`` of runs named ``GROUP/SEED``: env steps and seconds to the first periodic
    held-out return >= its target (``targets[GROUP]``, else ``targets[""]``), per seed and as the
    median (a seed that never got there counts as slower than all that did, so the median says
    "not reached" when most did not)."""
    groups: dict[str, list[tuple[str, dict]]] = {}
    for name, run in runs.items():
        group, _, seed = name.rpartition("/")
        groups.setdefault(group or name, []).append((seed, run))
    lines = ["| learner | target | seeds reaching it | env steps to it, per seed | seconds to it, per seed "
             "| median env steps | median seconds | final held-out, per seed |",
             "|---|---|---|---|---|---|---|---|"]
    for group, seeds in groups.items():
        target = targets.get(group, targets.get(""))
        hits, steps, seconds, finals = [], [], [], []
        for seed, run in seeds:
            hit = next((p for p in run["periodic"] if p["held_out"] >= target), None)
            best = max((p["held_out"] for p in run["periodic"]), default=math.nan)
            hits.append(hit)
            steps.append(f"{seed}: {hit['env_steps'] / 1e3:.0f} k" if hit else f"{seed}: not reached (best {best:.1f})")
            seconds.append(f"{seed}: {hit['seconds']:.0f}" if hit else f"{seed}: -")
            finals.append(f"{seed}: {run['final']['held_out']:.2f}" if run["final"] else f"{seed}: -")
        median = {key: statistics.median_low([hit[key] if hit else math.inf for hit in hits])
                  for key in ("env_steps", "seconds")}
        medians = (f"{median['env_steps'] / 1e3:.0f} k | {median['seconds']:.0f}" if median["seconds"] < math.inf
                   else "not reached | not reached")
        lines.append(f"| {group} | {target:g} | {sum(hit is not None for hit in hits)} of {len(hits)} | "
                     f"{', '.join(steps)} | {', '.join(seconds)} | {medians} | {', '.join(finals)} |")
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", action="append", required=True,
                        help="NAME=RUN_DIR or NAME=FILE.json@N (split at the last =); NAME=GROUP/SEED for --target")
    parser.add_argument("--target", action="append", default=[],
                        help="VALUE or GROUP=VALUE: the held-out return whose first crossing a group's seeds are timed to")
    parser.add_argument("--out", type=Path, required=True, help="output path without suffix")
    args = parser.parse_args(argv)

    runs = {name: load(source) for name, _, source in (r.rpartition("=") for r in args.run)}
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
    if args.target:
        targets = {group: float(value) for group, _, value in (t.rpartition("=") for t in args.target)}
        lines = [*time_to_target(runs, targets), "", *lines]
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(runs, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
