"""Baseline play: the family's non-learned policies on exactly the meta-policy's trials.

Baselines run in the driver on the inner env (no trial wrapper, no Ray), seeded like
:class:`~metaray.trial.TrialEnv` so trial ``i`` of a split is the same task and inner-env seed
for every policy.
"""

from __future__ import annotations

from typing import Any, Sequence

from metaray.config import TaskConfig
from metaray.statistics import adaptation_metrics
from metaray.tasks import Split, TaskSplit
from metaray.trial import TrialRecord, run_policy_trial


def evaluate_baselines(
    task: TaskConfig, names: Sequence[str] | None, trials: Sequence[tuple[Split, int]], split_seed: int
) -> dict[str, list[TrialRecord]]:
    """Play the family's baselines (all when ``names`` is None) on the given evaluation trials."""
    split = TaskSplit.from_config(task, split_seed)
    family = split.family
    factories = family.baselines(task.episodes_per_trial)
    unknown = sorted(set(names or ()) - set(factories))
    if unknown:
        raise ValueError(f"evaluation.baselines: family {task.family!r} has no baseline {unknown}; "
                         f"it has {sorted(factories)}")
    env = family.make_env()
    results = {}
    for name in names if names is not None else factories:
        policy = factories[name]()
        results[name] = [
            run_policy_trial(env, policy, split.task_at(s, i), split.trial_seed(s, i),
                             task.episodes_per_trial, s, i)
            for s, i in trials
        ]
    env.close()
    return results


def baseline_metrics(task: TaskConfig, names: Sequence[str] | None, trials: Sequence[tuple[Split, int]],
                     split_seed: int) -> dict[str, dict[str, Any]]:
    """:func:`~metaray.statistics.adaptation_metrics` of every baseline on ``trials``."""
    records = evaluate_baselines(task, names, trials, split_seed)
    return {name: adaptation_metrics(recs) for name, recs in records.items()}
