"""Task-inference probe: how much of the task the meta-policy's memory holds, step by step.

At every step ``t`` of a trial, a linear probe maps the recurrent state to the task's features
(:meth:`metaray.tasks.TaskFamily.task_features`). It is fitted on the trials of half of the
tasks and scored on the other half: a ridge regression scored by R² (the share of the
features' variance across tasks that it explains), or, for a group the family declares
discrete (:attr:`~metaray.tasks.TaskFamily.discrete_features`: one class label per task), a
multinomial logistic regression scored by accuracy. References, on the same scored trials:

- the same probe on the states that the run's untrained initial network has on the very same
  trial inputs (what a random recurrent projection of the trial so far already gives away);
- the same probe on the step's input alone (previous action, reward, done flag: no memory);
- the R² of the Bayes posterior mean (:meth:`~metaray.tasks.TaskFamily.posterior_features`),
  or the accuracy of its most probable class, the best any memory can do at that step, where
  the family declares it;
- for a discrete group, chance: always guessing the fitting half's most frequent class (the
  floor, as R² 0 is for a regression).

Each ridge fit picks its penalty by leave-one-out error on the fitting half (closed form), each
logistic fit by 5-fold cross-validated accuracy on the fitting half.

Example: a state that encodes the task exactly is decoded (R² ≈ 1), noise is not (≈ 0).
    >>> rng = np.random.default_rng(0)
    >>> task = rng.normal(size=(400, 3))
    >>> exact = np.repeat((task @ rng.normal(size=(3, 8)))[:, None], 2, axis=1)  # [trials, steps, D]
    >>> noise = rng.normal(size=(400, 2, 8))
    >>> [round(float(r), 2) for r in probe_r2(exact, task)], [round(float(r), 1) for r in probe_r2(noise, task)]
    ([1.0, 1.0], [-0.0, -0.0])

A discrete feature (one of 4 classes): the exact state is read every time, noise at chance.
    >>> labels = rng.integers(4, size=400)
    >>> exact = np.repeat(np.eye(4)[labels][:, None], 2, axis=1) + rng.normal(0, 0.1, size=(400, 2, 4))
    >>> probe_accuracy(exact, labels).tolist(), probe_accuracy(rng.normal(size=(400, 2, 4)), labels) < 0.35
    ([1.0, 1.0], array([ True,  True]))
"""

from __future__ import annotations

from typing import Any, Mapping, Sequence

import gymnasium as gym
import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import GridSearchCV, KFold
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from threadpoolctl import threadpool_limits

from metaray.tasks import TaskFamily, TaskSplit
from metaray.trial import TrialTrace

#: Ridge penalties tried for every fit (on standardised states).
RIDGE_PENALTIES = np.logspace(-3, 5, 9)
#: Inverse penalties (C) tried for every logistic fit (on standardised states).
LOGISTIC_CS = np.logspace(-3, 2, 6)
#: The curves a feature group may have, in the order reports show them.
CURVES = ("probe", "untrained", "input_only", "bayes", "chance")
#: How reports and figures name each metric.
METRIC_NAMES = {"r2": "R²", "accuracy": "accuracy"}


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
    with threadpool_limits(1):  # see probe_accuracy
        return np.array([
            r2_score(features[half:], ridge_predict(states[:half, t], features[:half], states[half:, t]))
            for t in range(states.shape[1])
        ])


def posterior_r2(posterior: np.ndarray, features: np.ndarray) -> np.ndarray:
    """R² per step of the Bayes posterior mean (``[trials, steps, F]``) on the scored half."""
    half = len(features) // 2
    return np.array([r2_score(features[half:], posterior[half:, t]) for t in range(posterior.shape[1])])


def logistic_predict(x_fit: np.ndarray, labels_fit: np.ndarray, x_score: np.ndarray) -> np.ndarray:
    """Multinomial logistic regression fitted on (``x_fit``, ``labels_fit``), inverse penalty
    chosen by 5-fold cross-validated accuracy (ties: the stronger penalty), predicting the
    class of each row of ``x_score``."""
    if len(np.unique(labels_fit)) == 1:  # nothing to tell apart, and LogisticRegression refuses it
        return np.full(len(x_score), labels_fit[0])
    model = make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    search = GridSearchCV(model, {"logisticregression__C": LOGISTIC_CS}, cv=KFold(5, shuffle=True, random_state=0))
    return search.fit(x_fit, labels_fit).predict(x_score)


def probe_accuracy(states: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy per step of a logistic probe fitted on the first half of the trials, scored on
    the second. ``states`` is ``[trials, steps, D]``; ``labels`` is ``[trials]`` (class labels)."""
    half = len(states) // 2
    # Many small fits: on busy cores one BLAS thread is many times faster than several handing off.
    with threadpool_limits(1):
        return np.array([
            np.mean(logistic_predict(states[:half, t], labels[:half], states[half:, t]) == labels[half:])
            for t in range(states.shape[1])
        ])


def posterior_accuracy(posterior: np.ndarray, labels: np.ndarray) -> np.ndarray:
    """Accuracy per step of the most probable class under the Bayes posterior
    (``[trials, steps, classes]``, column ``k``: the probability of label ``k``) on the scored half."""
    half = len(labels) // 2
    return (posterior[half:].argmax(axis=-1) == labels[half:, None]).mean(axis=0)


def chance_accuracy(labels: np.ndarray) -> float:
    """Accuracy on the scored half of always guessing the fitting half's most frequent class.

    Example:
        >>> chance_accuracy(np.array([0, 0, 1, 0, 1, 2]))
        0.3333333333333333
    """
    half = len(labels) // 2
    classes, counts = np.unique(labels[:half], return_counts=True)
    return float(np.mean(labels[half:] == classes[counts.argmax()]))


def metric(group: Mapping[str, Any]) -> str:
    """What a probed feature group's curves measure: ``"accuracy"`` (a discrete group) or ``"r2"``."""
    return "accuracy" if "num_classes" in group else "r2"


def describe(group: Mapping[str, Any]) -> str:
    """A probed feature group's size and metric, as reports and figures title it.

    Example:
        >>> describe({"num_classes": 16}), describe({"num_features": 2})
        ('16 classes, accuracy', '2 features, R²')
    """
    size = f"{group['num_classes']} classes" if "num_classes" in group else f"{group['num_features']} features"
    return f"{size}, {METRIC_NAMES[metric(group)]}"


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
    states = {
        "probe": np.stack([t.memory[:length] for t in trained]),
        "untrained": np.stack([memory[:length] for memory in untrained]),
        "input_only": np.stack([t.trial_obs[:length] for t in trained]),
    }
    groups: dict[str, dict[str, Any]] = {}
    posteriors = [family.posterior_features(*_inner_steps(family, t, reward_scale)) for t in trained]
    for name in declared[0]:
        features = np.stack([d[name] for d in declared]).reshape(len(declared), -1)
        discrete = name in family.discrete_features
        if discrete and features.shape[1] != 1:
            raise ValueError(f"discrete task feature {name!r} must be one class label per task, "
                             f"got {features.shape[1]} numbers")
        target = features[:, 0].astype(np.int64) if discrete else features
        fit, score_posterior = (probe_accuracy, posterior_accuracy) if discrete else (probe_r2, posterior_r2)
        curves = {key: fit(x, target) for key, x in states.items()}
        if posteriors[0] is not None:
            curves["bayes"] = score_posterior(np.stack([p[name][:length] for p in posteriors]), target)
        if discrete:
            curves["chance"] = np.full(length, chance_accuracy(target))
        groups[name] = {key: [round(float(v), 4) for v in curve] for key, curve in curves.items()}
        size = {"num_classes": len(np.unique(target))} if discrete else {"num_features": features.shape[1]}
        groups[name].update(size)
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
    """Per group and curve: the score averaged over the trial and at its last step, named with
    the metric (``probe_last_r2``, ``probe_mean_accuracy``)."""
    return {
        name: {f"{key}_{where}_{metric(group)}": float(np.mean(group[key]) if where == "mean" else group[key][-1])
               for key in CURVES if key in group for where in ("mean", "last")}
        for name, group in report["groups"].items()
    }
