"""Statistics of adaptation: per-trial metrics, bootstrap confidence intervals, IQM, regret.

Pure numpy; every function takes finished :class:`~metaray.trial.TrialRecord` objects or the
metric dicts they produce, so reports, TensorBoard logging and tests share one implementation.
"""

from __future__ import annotations

from typing import Any, Iterable, Mapping, Sequence

import numpy as np

from metaray.trial import TrialRecord

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


def best_baseline(baselines: Mapping[str, Mapping[str, Any]]) -> str:
    """Name of the baseline with the highest mean trial return (the regret reference)."""
    return max(baselines, key=lambda name: baselines[name]["trial_return_mean"])
