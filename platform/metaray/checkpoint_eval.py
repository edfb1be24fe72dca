"""``--eval-only``: evaluate a saved checkpoint against the family's baselines on the same
trials and write a report folder (see :mod:`metaray.report`). Ray must already be initialised.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from metaray.baselines import evaluate_baselines
from metaray.config import ExperimentConfig
from metaray.report import META_POLICY, checkpoint_summary, write_report
from metaray.rllib_config import build_algorithm_config
from metaray.rollouts import evaluation_trials, play_meta_policy
from metaray.tasks import Split


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: Path, split: Split, num_trials: int,
                        out_dir: Path) -> dict[str, Any]:
    """Evaluate a checkpoint's meta-policy and the family's baselines on the same trials.

    The algorithm is built from ``cfg`` (so its evaluation EnvRunners follow
    ``evaluation.num_env_runners``) and then restored; :func:`play_meta_policy` syncs the
    restored learner weights to the evaluation runners before playing.
    """
    algo = build_algorithm_config(cfg).build_algo()
    try:
        algo.restore_from_path(str(checkpoint.resolve()))
        trials = evaluation_trials(split, num_trials)
        records = {META_POLICY: play_meta_policy(algo, trials, cfg.evaluation.explore)}
    finally:
        algo.stop()
    records.update(evaluate_baselines(cfg.task, cfg.evaluation.baselines, trials, cfg.seed))
    header = {"name": cfg.name, "family": cfg.task.family, "checkpoint": str(checkpoint), "split": split,
              "seed": cfg.seed, "num_trials": num_trials, "explore": cfg.evaluation.explore}
    summary = checkpoint_summary(records, header)
    write_report(summary, out_dir)
    return summary
