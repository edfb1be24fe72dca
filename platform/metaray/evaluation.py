"""Adaptation evaluation on fixed, paired trials of the held-out and training splits.

Evaluation trial ``i`` of a split is always the same task with the same inner-env seed
(:meth:`metaray.tasks.TaskSplit.task_at` and ``trial_seed``), so the meta-policy, every
baseline and every later checkpoint are compared on exactly the same trials. The trials are
dealt out to the evaluation EnvRunners (one queue per vectorised env) and sampled with RLlib's
own ``EnvRunner.sample``; the trial env records each finished trial's per-episode returns.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

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


def foreach_sampling_env_runner(env_runner_group, func):
    """Call ``func`` on the runners that sample: the remote ones, or the local one if none."""
    local_only = env_runner_group.num_remote_env_runners() == 0
    return env_runner_group.foreach_env_runner(func, local_env_runner=local_only)


def run_trials_on_env_runners(eval_group, trials: Sequence[tuple[str, int]], explore: bool) -> list[TrialRecord]:
    """Deal ``trials`` out to an EnvRunnerGroup's runners and collect their records in order."""
    num_shares = max(1, eval_group.num_remote_env_runners())
    trials = list(trials)

    def play_share(env_runner):
        share = trials[max(env_runner.worker_index - 1, 0) :: num_shares]
        return _sample_assigned_trials(env_runner, share, explore)

    shares = foreach_sampling_env_runner(eval_group, play_share)
    if len(shares) != num_shares:
        raise RuntimeError(f"evaluation got results from {len(shares)} of {num_shares} env runners")
    records = {(r.split, r.index): r for share in shares for r in share}
    return [records[t] for t in trials]


#: Bootstrap resamples behind every confidence interval (percentile bootstrap, 95%).
BOOTSTRAP_RESAMPLES = 1000


def interquartile_mean(values: np.ndarray, axis: int = -1) -> np.ndarray:
    """Mean of the middle 50% (a quarter trimmed from each end), robust to outlier tasks.

    Example:
        >>> float(interquartile_mean(np.array([0.0, 1.0, 2.0, 3.0, 100.0, -100.0, 1.5, 2.5])))
        1.75
    """
    values = np.sort(values, axis=axis)
    n = values.shape[axis]
    cut = n // 4
    return np.take(values, np.arange(cut, n - cut), axis=axis).mean(axis=axis)


def _bootstrap_rows(n: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(n, size=(BOOTSTRAP_RESAMPLES, n))


def _resampled_means(values: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Means of ``values`` (samples along axis 0) under each resample, without materialising them."""
    n = len(values)
    counts = np.bincount((rows + n * np.arange(len(rows))[:, None]).ravel(), minlength=rows.size)
    return counts.reshape(rows.shape) @ values / n


def _ci95(samples: np.ndarray) -> list:
    """Percentile interval over the first axis (resamples); nested lists for vector statistics."""
    return np.stack([np.percentile(samples, 2.5, axis=0), np.percentile(samples, 97.5, axis=0)], axis=-1).tolist()


def sample_statistics(values: Sequence[float], rng_seed: int = 0) -> dict[str, Any]:
    """Mean and interquartile mean of independent samples (tasks or seeds) with bootstrap 95% CIs.

    Example:
        >>> stats = sample_statistics([1.0, 2.0, 3.0, 4.0])
        >>> stats["mean"], stats["iqm"]
        (2.5, 2.5)
    """
    values = np.asarray(values, dtype=np.float64)
    resampled = values[_bootstrap_rows(len(values), np.random.default_rng(rng_seed))]
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "ci95": _ci95(resampled.mean(axis=1)),
        "iqm": float(interquartile_mean(values)),
        "iqm_ci95": _ci95(interquartile_mean(resampled, axis=1)),
    }


def adaptation_metrics(records: Iterable[TrialRecord], rng_seed: int = 0) -> dict[str, Any]:
    """Per-split adaptation summary of finished trials (each trial is a different task).

    Returns the mean trial return with its standard error, interquartile mean (IQM) and 95%
    bootstrap confidence intervals of both across trials; the mean return of the i-th episode
    of a trial for every i (the adaptation curve) with a per-index CI band; the adaptation
    gain (last episode minus first) with its CI and, where the family defines success, the
    success rate overall and per episode index.
    """
    records = list(records)
    returns = np.array([r.episode_returns for r in records], dtype=np.float64)
    trial_returns = returns.sum(axis=1)
    resample = _bootstrap_rows(len(records), np.random.default_rng(rng_seed))
    by_episode = returns.mean(axis=0)
    boot_by_episode = _resampled_means(returns, resample)
    boot_trial = boot_by_episode.sum(axis=1)
    metrics: dict[str, Any] = {
        "num_trials": len(records),
        "trial_return_mean": float(trial_returns.mean()),
        "trial_return_stderr": float(trial_returns.std(ddof=1) / np.sqrt(len(records))) if len(records) > 1 else 0.0,
        "trial_return_ci95": _ci95(boot_trial),
        "trial_return_iqm": float(interquartile_mean(trial_returns)),
        "trial_return_iqm_ci95": _ci95(interquartile_mean(trial_returns[resample], axis=1)),
        "return_by_episode": by_episode.tolist(),
        "return_by_episode_ci95": _ci95(boot_by_episode),
        "adaptation_gain": float(by_episode[-1] - by_episode[0]),
        "adaptation_gain_ci95": _ci95(boot_by_episode[:, -1] - boot_by_episode[:, 0]),
    }
    if records and records[0].episode_successes is not None:
        successes = np.array([r.episode_successes for r in records], dtype=np.float64)
        metrics["success_by_episode"] = successes.mean(axis=0).tolist()
        metrics["success_rate"] = float(successes.mean())
        metrics["success_rate_ci95"] = _ci95(_resampled_means(successes, resample).mean(axis=1))
    return metrics


def paired_regret(records: Sequence[TrialRecord], reference: Sequence[TrialRecord], rng_seed: int = 0) -> dict[str, Any]:
    """Regret against a reference policy played on the very same trials.

    The per-trial difference (reference trial return minus this policy's) removes the
    task-to-task variance both share, so its CI is much tighter than comparing two means.
    """
    ours = {(r.split, r.index): sum(r.episode_returns) for r in records}
    theirs = {(r.split, r.index): sum(r.episode_returns) for r in reference}
    if ours.keys() != theirs.keys():
        raise ValueError("paired regret needs both policies evaluated on the same trials")
    return sample_statistics([theirs[t] - ours[t] for t in sorted(ours)], rng_seed)


def across_seeds(per_seed: Sequence[Mapping[str, Any]], rng_seed: int = 0) -> dict[str, Any]:
    """Combine one policy's :func:`adaptation_metrics` from several training seeds.

    Each seed is one sample: the mean, IQM and bootstrap CIs are across seeds, and so is
    the adaptation curve's band.
    """
    means = sample_statistics([m["trial_return_mean"] for m in per_seed], rng_seed)
    gains = sample_statistics([m["adaptation_gain"] for m in per_seed], rng_seed)
    curves = np.array([m["return_by_episode"] for m in per_seed], dtype=np.float64)
    resample = _bootstrap_rows(len(per_seed), np.random.default_rng(rng_seed))
    metrics = {
        "num_seeds": len(per_seed),
        "trial_return_mean": means["mean"],
        "trial_return_ci95": means["ci95"],
        "trial_return_iqm": means["iqm"],
        "trial_return_iqm_ci95": means["iqm_ci95"],
        "return_by_episode": curves.mean(axis=0).tolist(),
        "return_by_episode_ci95": _ci95(_resampled_means(curves, resample)),
        "adaptation_gain": gains["mean"],
        "adaptation_gain_ci95": gains["ci95"],
    }
    if all("success_rate" in m for m in per_seed):
        successes = sample_statistics([m["success_rate"] for m in per_seed], rng_seed)
        metrics["success_rate"], metrics["success_rate_ci95"] = successes["mean"], successes["ci95"]
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


def best_baseline(baselines: Mapping[str, Mapping[str, Any]]) -> str:
    """Name of the baseline with the highest mean trial return (the regret reference)."""
    return max(baselines, key=lambda name: baselines[name]["trial_return_mean"])


def play_meta_policy(algo, trials: Sequence[tuple[Split, int]], explore: bool) -> list[TrialRecord]:
    """Play the learner's current weights on the given trials with the evaluation EnvRunners."""
    eval_group = algo.eval_env_runner_group
    eval_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    return run_trials_on_env_runners(eval_group, trials, explore)


def evaluate_meta_policy(algo, num_trials: int, explore: bool) -> dict[str, dict[str, Any]]:
    """Evaluate the learner's current weights on ``num_trials`` trials of each split."""
    trials = [t for split in SPLITS[::-1] for t in evaluation_trials(split, num_trials)]
    records = play_meta_policy(algo, trials, explore)
    return {
        split: adaptation_metrics([r for r in records if r.split == split])
        for split in ("test", "train")
    }
