"""Statistics of adaptation: per-trial metrics, confidence intervals, IQM, regret, probability of improvement.

Every interval is rliable's stratified percentile bootstrap, and every IQM, probability of
improvement and performance profile is rliable's estimator (Agarwal et al. 2021, "Deep RL at
the edge of the statistical precipice"), so a report's numbers are the ones a reader can
recompute with that library. The samples are trials (each a different task of the family) or
training seeds; in rliable's terms they are the runs of one task, so its stratified bootstrap
is a plain bootstrap over trials or seeds. Every function takes finished
:class:`~metaray.trial.TrialRecord` objects or the metric dicts they produce, so reports,
TensorBoard logging and tests share one implementation.
"""

from __future__ import annotations

import contextlib
from types import ModuleType
from typing import Any, Callable, Iterable, Iterator, Mapping, Sequence

import numpy as np
from rliable import metrics as rly_metrics

from metaray.trial import TrialRecord

#: Bootstrap resamples behind every confidence interval (percentile bootstrap, 95%).
BOOTSTRAP_RESAMPLES = 1000
#: How every interval is made, as reports state it.
CI_METHOD = "rliable stratified bootstrap, percentile, 95%"


def _rliable_library() -> ModuleType:
    """rliable's bootstrap module, imported on first use: its engine (arch) takes about 1.5 s
    to import, and the env runner processes that import this module never bootstrap."""
    from rliable import library

    return library


@contextlib.contextmanager
def _global_numpy_seed(seed: int) -> Iterator[None]:
    """rliable draws its resamples from NumPy's global RNG: seed it for one call, then put it back."""
    state = np.random.get_state()
    np.random.seed(seed)
    try:
        yield
    finally:
        np.random.set_state(state)


def bootstrap_ci95(scores: np.ndarray, statistic: Callable[[np.ndarray], Any], rng_seed: int = 0) -> np.ndarray:
    """95% CIs of ``statistic(scores)`` from rliable's stratified bootstrap: one [low, high] row per output.

    ``scores`` is (samples, columns) and rliable resamples every column's samples on its own
    (a column is a stratum), so a statistic of one column gets the interval of a plain
    bootstrap over that column's samples. Equal inputs and ``rng_seed`` give equal intervals.

    Example:
        >>> bootstrap_ci95(np.array([[1.0, 5.0], [1.0, 5.0]]), lambda s: s.mean(axis=0)).tolist()
        [[1.0, 1.0], [5.0, 5.0]]
    """
    rly = _rliable_library()
    with _global_numpy_seed(rng_seed):
        _, intervals = rly.get_interval_estimates({"scores": scores}, statistic, reps=BOOTSTRAP_RESAMPLES)
    return intervals["scores"].T


def sample_statistics(values: Sequence[float], rng_seed: int = 0) -> dict[str, Any]:
    """Mean and interquartile mean (rliable's IQM) of independent samples (tasks or seeds) with 95% CIs.

    Example:
        >>> stats = sample_statistics([1.0, 2.0, 3.0, 4.0])
        >>> stats["mean"], stats["iqm"]
        (2.5, 2.5)
    """
    values = np.asarray(values, dtype=np.float64)
    ci = bootstrap_ci95(values[:, None], lambda s: np.array([s.mean(), rly_metrics.aggregate_iqm(s)]), rng_seed)
    return {
        "n": len(values),
        "mean": float(values.mean()),
        "ci95": ci[0].tolist(),
        "iqm": float(rly_metrics.aggregate_iqm(values)),
        "iqm_ci95": ci[1].tolist(),
    }


def _sample_columns_statistic(scores: np.ndarray) -> np.ndarray:
    """IQM of column 0, then the mean of every column (see :func:`adaptation_metrics`)."""
    return np.concatenate([[rly_metrics.aggregate_iqm(scores[:, 0])], scores.mean(axis=0)])


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
    by_episode = returns.mean(axis=0)
    # One column per statistic: trial return, per-trial gain, each episode index (, success).
    columns = [trial_returns, returns[:, -1] - returns[:, 0], *returns.T]
    successes = None
    if records and records[0].episode_successes is not None:
        successes = np.array([r.episode_successes for r in records], dtype=np.float64)
        columns.append(successes.mean(axis=1))
    ci = bootstrap_ci95(np.column_stack(columns), _sample_columns_statistic, rng_seed)
    iqm_ci, trial_ci, gain_ci, episode_ci = ci[0], ci[1], ci[2], ci[3:3 + returns.shape[1]]
    metrics: dict[str, Any] = {
        "num_trials": len(records),
        "trial_return_mean": float(trial_returns.mean()),
        "trial_return_stderr": float(trial_returns.std(ddof=1) / np.sqrt(len(records))) if len(records) > 1 else 0.0,
        "trial_return_ci95": trial_ci.tolist(),
        "trial_return_iqm": float(rly_metrics.aggregate_iqm(trial_returns)),
        "trial_return_iqm_ci95": iqm_ci.tolist(),
        "return_by_episode": by_episode.tolist(),
        "return_by_episode_ci95": episode_ci.tolist(),
        "adaptation_gain": float(by_episode[-1] - by_episode[0]),
        "adaptation_gain_ci95": gain_ci.tolist(),
    }
    if successes is not None:
        metrics["success_by_episode"] = successes.mean(axis=0).tolist()
        metrics["success_rate"] = float(successes.mean())
        metrics["success_rate_ci95"] = ci[-1].tolist()
    return metrics


def paired_probability_of_improvement(ours: Sequence[float], theirs: Sequence[float],
                                      rng_seed: int = 0) -> dict[str, Any]:
    """P(ours > theirs) on the same trials (ties count half) with its 95% CI over trials.

    This is rliable's probability of improvement with every trial its own task (one run of
    each policy per task), i.e. the share of trials on which this policy did better.

    Example:
        >>> paired_probability_of_improvement([1.0, 2.0, 3.0, 4.0], [0.0, 2.0, 5.0, 1.0])["probability"]
        0.625
    """
    ours, theirs = np.asarray(ours, dtype=np.float64), np.asarray(theirs, dtype=np.float64)
    wins = (ours > theirs) + 0.5 * (ours == theirs)
    return {
        "probability": float(rly_metrics.probability_of_improvement(ours[None, :], theirs[None, :])),
        "ci95": bootstrap_ci95(wins[:, None], rly_metrics.aggregate_mean, rng_seed)[0].tolist(),
    }


def probability_of_improvement(ours: Sequence[float], theirs: Sequence[float], rng_seed: int = 0) -> dict[str, Any]:
    """rliable's P(X > Y) of independent runs (e.g. one mean per training seed), with its 95% CI.

    X and Y are this policy's and the other's runs: the Mann-Whitney U statistic over every
    (X, Y) pair, ties counting half; the CI resamples each side's runs on its own.

    Example:
        >>> probability_of_improvement([2.0, 3.0], [1.0, 2.5])["probability"]
        0.75
    """
    pair = [np.asarray(ours, dtype=np.float64)[:, None], np.asarray(theirs, dtype=np.float64)[:, None]]
    rly = _rliable_library()
    with _global_numpy_seed(rng_seed):
        points, intervals = rly.get_interval_estimates(
            {"pair": pair}, rly_metrics.probability_of_improvement, reps=BOOTSTRAP_RESAMPLES)
    return {"probability": float(points["pair"]), "ci95": intervals["pair"][:, 0].tolist()}


def paired_regret(records: Sequence[TrialRecord], reference: Sequence[TrialRecord], rng_seed: int = 0) -> dict[str, Any]:
    """Regret against a reference policy played on the very same trials.

    The per-trial difference (reference trial return minus this policy's) removes the
    task-to-task variance both share, so its CI is much tighter than comparing two means.
    ``probability_of_improvement`` is the share of trials this policy won (ties half).
    """
    ours = {(r.split, r.index): sum(r.episode_returns) for r in records}
    theirs = {(r.split, r.index): sum(r.episode_returns) for r in reference}
    if ours.keys() != theirs.keys():
        raise ValueError("paired regret needs both policies evaluated on the same trials")
    trials = sorted(ours)
    return {
        **sample_statistics([theirs[t] - ours[t] for t in trials], rng_seed),
        "probability_of_improvement": paired_probability_of_improvement(
            [ours[t] for t in trials], [theirs[t] for t in trials], rng_seed),
    }


def across_seeds(per_seed: Sequence[Mapping[str, Any]], rng_seed: int = 0) -> dict[str, Any]:
    """Combine one policy's :func:`adaptation_metrics` from several training seeds.

    Each seed is one sample: the mean, IQM and bootstrap CIs are across seeds, and so is
    the adaptation curve's band.
    """
    curves = np.array([m["return_by_episode"] for m in per_seed], dtype=np.float64)
    columns = [[m["trial_return_mean"] for m in per_seed], [m["adaptation_gain"] for m in per_seed], *curves.T]
    has_success = all("success_rate" in m for m in per_seed)
    if has_success:
        columns.append([m["success_rate"] for m in per_seed])
    scores = np.column_stack(columns)
    ci = bootstrap_ci95(scores, _sample_columns_statistic, rng_seed)
    means = scores.mean(axis=0)
    metrics = {
        "num_seeds": len(per_seed),
        "trial_return_mean": float(means[0]),
        "trial_return_ci95": ci[1].tolist(),
        "trial_return_iqm": float(rly_metrics.aggregate_iqm(scores[:, 0])),
        "trial_return_iqm_ci95": ci[0].tolist(),
        "return_by_episode": curves.mean(axis=0).tolist(),
        "return_by_episode_ci95": ci[3:3 + curves.shape[1]].tolist(),
        "adaptation_gain": float(means[1]),
        "adaptation_gain_ci95": ci[2].tolist(),
    }
    if has_success:
        metrics["success_rate"], metrics["success_rate_ci95"] = float(means[-1]), ci[-1].tolist()
    return metrics


def performance_profile(samples: Mapping[str, Sequence[float]], thresholds: Sequence[float],
                        rng_seed: int = 0) -> dict[str, Any]:
    """rliable's performance profile: per policy, the share of samples above each threshold, with 95% CIs.

    Example:
        >>> profile = performance_profile({"a": [1.0, 2.0, 3.0, 4.0]}, [0.0, 2.5])
        >>> profile["fraction_above"]["a"]
        [1.0, 0.5]
    """
    scores = {name: np.asarray(values, dtype=np.float64)[:, None] for name, values in samples.items()}
    rly = _rliable_library()
    with _global_numpy_seed(rng_seed):
        fractions, intervals = rly.create_performance_profile(scores, list(thresholds), reps=BOOTSTRAP_RESAMPLES)
    return {
        "thresholds": [float(t) for t in thresholds],
        "fraction_above": {name: np.asarray(f, dtype=np.float64).tolist() for name, f in fractions.items()},
        "fraction_above_ci95": {name: np.asarray(ci).T.tolist() for name, ci in intervals.items()},
    }


def best_baseline(baselines: Mapping[str, Mapping[str, Any]]) -> str:
    """Name of the baseline with the highest mean trial return on the evaluated trials.

    Chosen on the very trials it is then compared on, so it favours a lucky baseline: with
    few trials a weaker one can come out on top (greedy over Bayes-optimal on 300 bandit
    trials). Reports also give regret against the family's declared reference.
    """
    return max(baselines, key=lambda name: baselines[name]["trial_return_mean"])
