"""Task-inference probe: how much of the task the meta-policy's memory holds, step by step.

At every step ``t`` of a trial, a linear (ridge) probe maps the recurrent state to the task's
features (:meth:`metaray.tasks.TaskFamily.task_features`). It is fitted on the trials of half
of the tasks and scored, as R² (the share of the features' variance across tasks that it
explains), on the other half. Two references come with it, on the same scored trials:

- the same probe on the states that the run's untrained initial network has on the very same
  trial inputs (what a random recurrent projection of the trial so far already gives away);
- the same probe on the step's input alone (previous action, reward, done flag: no memory);
- the R² of the Bayes posterior mean (:meth:`~metaray.tasks.TaskFamily.posterior_features`),
  the best any memory can do at that step, where the family declares it.

Each ridge fit picks its penalty by leave-one-out error on the fitting half (closed form).

Example: a state that encodes the task exactly is decoded (R² ≈ 1), noise is not (≈ 0).
    >>> rng = np.random.default_rng(0)
    >>> task = rng.normal(size=(400, 3))
    >>> exact = np.repeat((task @ rng.normal(size=(3, 8)))[:, None], 2, axis=1)  # [trials, steps, D]
    >>> noise = rng.normal(size=(400, 2, 8))
    >>> [round(float(r), 2) for r in probe_r2(exact, task)], [round(float(r), 1) for r in probe_r2(noise, task)]
    ([1.0, 1.0], [-0.0, -0.0])
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily, TaskSplit
from metaray.trial import TrialTrace

#: Ridge penalties tried for every fit (on standardised states).
RIDGE_PENALTIES = np.logspace(-3, 5, 9)


def r2_score(targets: np.ndarray, predictions: np.ndarray) -> float:
    """Share of the targets' variance (over samples, summed over features) that is explained.

    Example:
        >>> r2_score(np.array([[0.0], [2.0]]), np.array([[0.5], [1.5]]))
        0.75
    """
    residual = ((targets - predictions) ** 2).sum()
    total = ((targets - targets.mean(axis=0)) ** 2).sum()
    return float(1.0 - residual / total) if total > 0 else float("nan")


def ridge_predict(x_fit: np.ndarray, y_fit: np.ndarray, x_score: np.ndarray) -> np.ndarray:
    """Ridge regression fitted on (``x_fit``, ``y_fit``), penalty chosen by leave-one-out
    error, predicting ``y`` for ``x_score``."""
    mean, scale = x_fit.mean(axis=0), x_fit.std(axis=0) + 1e-8
    fit, score = (x_fit - mean) / scale, (x_score - mean) / scale
    y_mean = y_fit.mean(axis=0)
    u, s, vt = np.linalg.svd(fit, full_matrices=False)
    uy = u.T @ (y_fit - y_mean)

    def loo_error(penalty: float) -> float:
        shrink = s**2 / (s**2 + penalty)
        residual = (y_fit - y_mean) - u @ (shrink[:, None] * uy)
        leverage = (u**2) @ shrink
        return float(((residual / (1.0 - leverage)[:, None]) ** 2).sum())

    penalty = min(RIDGE_PENALTIES, key=loo_error)
    weights = vt.T @ ((s / (s**2 + penalty))[:, None] * uy)
    return score @ weights + y_mean


def probe_r2(states: np.ndarray, features: np.ndarray) -> np.ndarray:
    """R² per step of a probe fitted on the first half of the trials, scored on the second.

    ``states`` is ``[trials, steps, D]``; ``features`` is ``[trials, F]`` (one task per trial).
    """
    half = len(states) // 2
    return np.array([
        r2_score(features[half:], ridge_predict(states[:half, t], features[:half], states[half:, t]))
        for t in range(states.shape[1])
    ])


def posterior_r2(posterior: np.ndarray, features: np.ndarray) -> np.ndarray:
    """R² per step of the Bayes posterior mean (``[trials, steps, F]``) on the scored half."""
    half = len(features) // 2
    return np.array([r2_score(features[half:], posterior[half:, t]) for t in range(posterior.shape[1])])


def _inner_steps(family: TaskFamily, trace: TrialTrace, reward_scale: float) -> tuple[list, list, list]:
    """The inner env's observations, actions and raw rewards of a traced trial."""
    space = family.make_env().observation_space
    width = gym.spaces.flatdim(space)
    observations = [gym.spaces.unflatten(space, row[:width]) for row in trace.trial_obs]
    if isinstance(space, gym.spaces.Discrete):
        observations = [int(o) for o in observations]
    return observations, trace.actions.tolist(), (trace.rewards / reward_scale).tolist()


def probe_report(split: TaskSplit, reward_scale: float, trained: Sequence[TrialTrace],
                 untrained: Sequence[np.ndarray]) -> dict[str, Any]:
    """Decodability of every declared feature group along the trial: the trained memory, the
    untrained control (``untrained[i]``: an untrained network's states ``[T, D]`` on trial
    ``i``'s inputs) and, where declared, the Bayes ceiling. Steps past the shortest trial are
    left out."""
    family = split.family
    tasks = [split.task_at(t.split, t.index) for t in trained]
    declared = [family.task_features(task) for task in tasks]
    if declared[0] is None:
        raise ValueError(f"family {type(family).__name__} declares no task_features; see docs/probing_memory.md")
    length = min(len(t.memory) for t in trained)  # trials of one family have one length here
    groups: dict[str, dict[str, Any]] = {}
    posteriors = [family.posterior_features(*_inner_steps(family, t, reward_scale)) for t in trained]
    for name in declared[0]:
        features = np.stack([d[name] for d in declared])
        curves = {
            "probe": probe_r2(np.stack([t.memory[:length] for t in trained]), features),
            "untrained": probe_r2(np.stack([memory[:length] for memory in untrained]), features),
            "input_only": probe_r2(np.stack([t.trial_obs[:length] for t in trained]), features),
        }
        if posteriors[0] is not None:
            curves["bayes"] = posterior_r2(np.stack([p[name][:length] for p in posteriors]), features)
        groups[name] = {key: [round(float(v), 4) for v in curve] for key, curve in curves.items()}
        groups[name]["num_features"] = int(features.shape[1])
    return {
        "num_fit_trials": len(trained) // 2,
        "num_scored_trials": len(trained) - len(trained) // 2,
        "steps": length,
        "episode_starts": [s for s in episode_starts(trained[0]) if s < length],
        "groups": groups,
    }


def episode_starts(trace: TrialTrace) -> list[int]:
    """Steps of a traced trial at which an inner episode began (the input's done flag marks
    the first step after an episode ended)."""
    return [0] + [int(t) for t in np.flatnonzero(trace.trial_obs[1:, -1] > 0.5) + 1]


def summarize(report: Mapping[str, Any]) -> dict[str, dict[str, float]]:
    """Per group: mean R² over the trial, and at the last step, for each curve."""
    return {
        name: {f"{key}_{where}": float(np.mean(curve) if where == "mean" else curve[-1])
               for key, curve in group.items() if key != "num_features" for where in ("mean", "last")}
        for name, group in report["groups"].items()
    }
