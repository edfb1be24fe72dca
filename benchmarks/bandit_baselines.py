#!/usr/bin/env python
"""The classical policies of RL² Table 1 on the held-out trials of every bandit config, beside
the paper's numbers: what each row's meta-policy is measured against, before any training.

Each config's baselines play exactly the held-out trials its training run's final evaluation
plays (the config's seed and ``task.test_fraction``, ``evaluation.final_num_trials`` trials),
in this process, without Ray. The RL² column is left to the configs' run summaries.

How to run (about 5 minutes on 2 cores; the 100-pull rows take most of it)::

    python benchmarks/bandit_baselines.py

Results to expect: Gittins within about 0.1 of the paper's value in every row (n=10, k=5:
6.67; n=100, k=5: 79.2). Output: a table on stdout, ``benchmarks/results/bandit_baselines.md``
and ``.json`` (means with 95% CIs over trials).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from metaray.baselines import baseline_metrics  # noqa: E402
from metaray.config import load_config  # noqa: E402
from metaray.rollouts import evaluation_trials  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
#: (config, pulls n, arms k) of RL² Table 1's six rows.
ROWS = [("bandit", 10, 5), ("bandit_n10_k10", 10, 10), ("bandit_n10_k50", 10, 50),
        ("bandit_n100_k5", 100, 5), ("bandit_n100_k10", 100, 10), ("bandit_n100_k50", 100, 50)]
#: RL² Table 1 (Duan et al. 2016), the columns reproduced here.
PAPER = {
    (10, 5): {"random": 5.0, "gittins": 6.6, "thompson": 5.7, "ucb1": 6.7, "epsilon_greedy": 6.6, "greedy": 6.6, "rl2": 6.7},
    (10, 10): {"random": 5.0, "gittins": 6.6, "thompson": 5.5, "ucb1": 6.7, "epsilon_greedy": 6.6, "greedy": 6.6, "rl2": 6.7},
    (10, 50): {"random": 5.1, "gittins": 6.5, "thompson": 5.2, "ucb1": 6.6, "epsilon_greedy": 6.5, "greedy": 6.5, "rl2": 6.8},
    (100, 5): {"random": 49.9, "gittins": 78.3, "thompson": 74.7, "ucb1": 78.0, "epsilon_greedy": 75.4, "greedy": 74.8, "rl2": 78.7},
    (100, 10): {"random": 49.9, "gittins": 82.8, "thompson": 76.7, "ucb1": 82.4, "epsilon_greedy": 77.4, "greedy": 77.1, "rl2": 83.5},
    (100, 50): {"random": 49.8, "gittins": 85.2, "thompson": 64.5, "ucb1": 84.3, "epsilon_greedy": 78.3, "greedy": 78.0, "rl2": 84.9},
}
COLUMNS = ["random", "gittins", "thompson", "ucb1", "epsilon_greedy", "greedy"]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=RESULTS / "bandit_baselines")
    args = parser.parse_args(argv)

    rows = {}
    for name, pulls, arms in ROWS:
        cfg = load_config(ROOT / "configs" / f"{name}.yaml")
        assert cfg.task.episodes_per_trial == pulls and cfg.task.params["num_arms"] == arms, name
        trials = evaluation_trials("test", cfg.evaluation.final_num_trials)
        metrics = baseline_metrics(cfg.task, None, trials, cfg.seed)
        rows[name] = {"pulls": pulls, "arms": arms, "num_trials": len(trials),
                      "measured": {b: {"mean": m["trial_return_mean"], "ci95": m["trial_return_ci95"]}
                                   for b, m in metrics.items()},
                      "paper": PAPER[pulls, arms]}
        print(name, {b: round(m["trial_return_mean"], 3) for b, m in metrics.items()}, flush=True)

    lines = ["# RL² Table 1 baselines on each config's held-out trials", "",
             "`python benchmarks/bandit_baselines.py`: each cell is measured / paper (Duan et al. 2016, "
             "Table 1); measured = mean trial return on the config's `evaluation.final_num_trials` "
             "held-out trials, the ones its training run is evaluated on. Bayes-optimal is the exact DP "
             "(10-pull rows only). UCB1 is Auer et al.'s untuned mean + sqrt(2 ln t / n) after one pull of "
             "every arm (with 50 arms and 10 pulls it never gets past that first round); the paper tuned "
             "its baselines' settings, UCB1's exploration constant among them, hence its column's gap.", "",
             "| config | n, k | trials | " + " | ".join(COLUMNS) + " | bayes_optimal |",
             "|---|---|---|" + "---|" * (len(COLUMNS) + 1)]
    for name, row in rows.items():
        measured, paper = row["measured"], row["paper"]
        cells = [f"{measured[c]['mean']:.2f} / {paper[c]}" for c in COLUMNS]
        optimal = f"{measured['bayes_optimal']['mean']:.2f}" if "bayes_optimal" in measured else "-"
        lines.append(f"| `{name}` | {row['pulls']}, {row['arms']} | {row['num_trials']} | " + " | ".join(cells)
                     + f" | {optimal} |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps(rows, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
