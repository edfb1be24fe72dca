"""Adaptation evaluation on fixed, paired trials of the held-out and training splits.

Evaluation trial ``i`` of a split is always the same task with the same inner-env seed
(:meth:`metaray.tasks.TaskSplit.task_at` and ``trial_seed``), so the meta-policy, every
baseline and every later checkpoint are compared on exactly the same trials. The trials are
dealt out to the evaluation EnvRunners (one queue per vectorised env) and sampled with RLlib's
own ``EnvRunner.sample``; the trial env records each finished trial's per-episode returns.
"""

from __future__ import annotations

from typing import Any, Iterable, Sequence

import numpy as np

from metaray.tasks import SPLITS, Split, TaskSplit, load_family
from metaray.trial import TRIAL_INFO_KEY, TrialRecord, run_policy_trial

#: Key of the adaptation report in RLlib's evaluation results.
ADAPTATION_KEY = "adaptation"


def evaluation_trials(split: Split, num_trials: int) -> list[tuple[Split, int]]:
    return [(split, i) for i in range(num_trials)]


def _sample_assigned_trials(env_runner, trials: Sequence[tuple[str, int]], explore: bool) -> list[TrialRecord]:
    """Runs on one EnvRunner: plays its share of trials, returns their records."""
    num_envs = env_runner.num_envs
    env_runner.env.unwrapped.set_attr("trial_queue", [list(trials[j::num_envs]) for j in range(num_envs)])
    wanted = set(trials)
    records: dict[tuple[str, int], TrialRecord] = {}
    while len(records) < len(wanted):
        episodes = env_runner.sample(num_episodes=len(wanted) - len(records), explore=explore)
        for episode in episodes:
            if not episode.is_done:
                continue
            record: TrialRecord = episode.get_infos(-1)[TRIAL_INFO_KEY]
            if (record.split, record.index) in wanted:
                records[(record.split, record.index)] = record
    env_runner.env.unwrapped.set_attr("trial_queue", [[] for _ in range(num_envs)])
    return [records[t] for t in trials]


def run_trials_on_env_runners(eval_group, trials: Sequence[tuple[str, int]], explore: bool) -> list[TrialRecord]:
    """Deal ``trials`` out to an EnvRunnerGroup's runners and collect their records in order."""
    num_remote = eval_group.num_remote_env_runners()
    num_shares = max(1, num_remote)
    trials = list(trials)

    def play_share(env_runner):
        share = trials[max(env_runner.worker_index - 1, 0) :: num_shares]
        return _sample_assigned_trials(env_runner, share, explore)

    shares = eval_group.foreach_env_runner(play_share, local_env_runner=num_remote == 0)
    if len(shares) != num_shares:
        raise RuntimeError(f"evaluation got results from {len(shares)} of {num_shares} env runners")
    records = {(r.split, r.index): r for share in shares for r in share}
    return [records[t] for t in trials]


def adaptation_metrics(records: Iterable[TrialRecord], rng_seed: int = 0) -> dict[str, Any]:
    """Per-split adaptation summary of finished trials.

    Returns the mean trial return with its standard error and a 95% bootstrap confidence
    interval across trials, the mean return of the i-th episode of a trial for every i (the
    adaptation curve), the adaptation gain (last episode minus first) and, where the family
    defines success, the success rate per episode index.
    """
    records = list(records)
    returns = np.array([r.episode_returns for r in records], dtype=np.float64)
    trial_returns = returns.sum(axis=1)
    rng = np.random.default_rng(rng_seed)
    boot = rng.choice(trial_returns, size=(1000, len(trial_returns))).mean(axis=1)
    by_episode = returns.mean(axis=0)
    metrics: dict[str, Any] = {
        "num_trials": len(records),
        "trial_return_mean": float(trial_returns.mean()),
        "trial_return_stderr": float(trial_returns.std(ddof=1) / np.sqrt(len(records))) if len(records) > 1 else 0.0,
        "trial_return_ci95": [float(np.percentile(boot, 2.5)), float(np.percentile(boot, 97.5))],
        "return_by_episode": by_episode.tolist(),
        "adaptation_gain": float(by_episode[-1] - by_episode[0]),
    }
    if records and records[0].episode_successes is not None:
        successes = np.array([r.episode_successes for r in records], dtype=np.float64)
        metrics["success_by_episode"] = successes.mean(axis=0).tolist()
        metrics["success_rate"] = float(successes.mean())
    return metrics


def evaluate_baselines(
    task: Any, names: Sequence[str] | None, trials: Sequence[tuple[Split, int]], split_seed: int
) -> dict[str, list[TrialRecord]]:
    """Play the family's baselines on exactly the given evaluation trials (driver-side)."""
    family = load_family(task.family, task.params)
    split = TaskSplit(family, task.test_fraction, split_seed)
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


def evaluate_meta_policy(algo, num_trials: int, explore: bool) -> dict[str, dict[str, Any]]:
    """Evaluate the learner's current weights on ``num_trials`` trials of each split."""
    eval_group = algo.eval_env_runner_group
    eval_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    trials = [t for split in SPLITS[::-1] for t in evaluation_trials(split, num_trials)]
    records = run_trials_on_env_runners(eval_group, trials, explore)
    return {
        split: adaptation_metrics([r for r in records if r.split == split])
        for split in ("test", "train")
    }
