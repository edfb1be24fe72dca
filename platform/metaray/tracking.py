"""TensorBoard scalars and images, and the one-line console progress of a run.

Tag scheme (x axis: env steps sampled):
    train/...                      training trials (RLlib env-runner metrics) and losses (PPO; q_loss, q_mean: R2D2)
    eval_<split>/...               paired evaluation trials of the held-out ("test") or
                                   training ("train") split
    eval_<split>_by_episode/ep_NN  mean return of the NN-th episode of a trial
    eval_test/regret_vs_best_baseline  best baseline's minus the meta-policy's mean trial
                                   return on the same held-out trials
    baselines_test/<name>          baseline trial return on the same held-out trials
    final_<tag>                    the evaluation after training (``final_eval_test/...``,
                                   ``final_baselines_test/...``), on evaluation.final_num_trials
    perf/...                       throughput and timers
Each periodic evaluation is logged once, at the step of the iteration that ran it; the final
one, on more trials at the last iteration's step, has tags of its own. The adaptation curves
are also written as an image under ``adaptation_curve`` (``final_adaptation_curve``); the
Custom Scalars dashboard groups the curves and train vs held-out (:data:`CUSTOM_SCALARS_LAYOUT`;
TensorBoard matches its regexes at the start of a tag, so ``final_`` tags stay out of the
periodic charts), and the HParams dashboard lists each run's config with its ``final_`` metrics.
Fault tolerance: ``fault/...`` holds env runner restarts (cumulative) and healthy runners.
Curriculum (``task.curriculum: plr``; docs/curriculum.md): ``curriculum/score_mean``,
``curriculum/scores`` (histogram of the pool's scores), ``curriculum/replay_fraction`` (of the
iteration's trials), ``curriculum/distinct_tasks`` (trained on so far), ``curriculum/pool_size``.
Probe (``evaluation.probe: true``; docs/probing_memory.md): ``probe/<feature group>/<curve>_last_r2``
and ``_mean_r2`` (R² at the trial's last step and averaged over it, for ``probe``, ``untrained``,
``input_only`` and ``bayes``; ``..._accuracy`` and a ``chance`` curve for a discrete group) and
the ``probe`` image, at every periodic evaluation.
``--resume`` keeps every point up to the step of the checkpoint it resumed from and hides what
a killed run logged after it (see :class:`RunLogger`).
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import numpy as np
from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from metaray.figures import adaptation_figure, probe_figure
from metaray.probe import summarize
from metaray.statistics import best_baseline

#: Custom Scalars dashboard: {category: {chart: [kind, tag regexes]}}.
CUSTOM_SCALARS_LAYOUT = {
    "adaptation curves": {
        "held-out trials: return of episode NN": ["Multiline", [r"eval_test_by_episode/ep_\d+"]],
        "training-split trials: return of episode NN": ["Multiline", [r"eval_train_by_episode/ep_\d+"]],
        "sampled training trials: return of episode NN": ["Multiline", [r"train_by_episode/ep_\d+"]],
    },
    "train vs held-out": {
        "trial return": ["Multiline", [r"eval_(test|train)/trial_return_mean", r"train/trial_return_mean",
                                       r"baselines_test/.*"]],
        "held-out trial return, 95% CI": ["Margin", ["eval_test/trial_return_mean", "eval_test/trial_return_ci95_low",
                                                     "eval_test/trial_return_ci95_high"]],
        "training-split trial return, 95% CI": ["Margin", ["eval_train/trial_return_mean",
                                                           "eval_train/trial_return_ci95_low",
                                                           "eval_train/trial_return_ci95_high"]],
        "adaptation gain": ["Multiline", [r"eval_(test|train)/adaptation_gain"]],
        "regret vs best baseline (held-out)": ["Multiline", [r"eval_test/regret_vs_best_baseline"]],
    },
}

#: Final metrics shown beside the hyper-parameters in the HParams dashboard.
HPARAM_METRICS = ("final_eval_test/trial_return_mean", "final_eval_train/trial_return_mean",
                  "final_eval_test/trial_return_iqm", "final_eval_test/adaptation_gain",
                  "final_eval_test/regret_vs_best_baseline")

#: Tag prefix of the evaluation after training.
FINAL = "final_"


def evaluated_this_iteration(result: Mapping[str, Any], evaluation_interval: int | None) -> bool:
    """Whether the ``Algorithm.train()`` call that returned ``result`` ran an evaluation.

    RLlib (2.60) evaluates in iteration ``i`` when ``i % evaluation_interval == 0``, but the
    report our evaluation function logs to the algorithm's MetricsLogger stays there until the
    next iteration's ``compile()`` returns it, so ``result["evaluation"]`` of the iteration after
    an evaluation holds a stale copy of it.

    >>> evaluated_this_iteration({"training_iteration": 4}, 2), evaluated_this_iteration({"training_iteration": 5}, 2)
    (True, False)
    >>> evaluated_this_iteration({"training_iteration": 4}, None)
    False
    """
    return bool(evaluation_interval) and result["training_iteration"] % evaluation_interval == 0


class RunLogger:
    """Writes a run's TensorBoard events and prints progress lines.

    ``resumed_from_step``: the env steps of the checkpoint a ``--resume`` continues from. The
    writer starts its file with a restart marker (SessionLog.START, torch's ``purge_step``) at
    the step after it; TensorBoard hides what earlier files of the folder logged from the
    marker's step on (what a killed run logged after its checkpoint) and keeps the checkpoint's
    own step. A fresh run writes a marker at step 0, which hides nothing: TensorBoard's server
    ignores the first marker of a folder, so the first resume's marker must not be the first.
    """

    def __init__(self, log_dir: str, total_env_steps: int, reward_scale: float, resumed_from_step: int | None = None):
        self.writer = SummaryWriter(log_dir, purge_step=0 if resumed_from_step is None else resumed_from_step + 1)
        self.writer.add_custom_scalars(CUSTOM_SCALARS_LAYOUT)
        self.total_env_steps = total_env_steps
        self.reward_scale = reward_scale
        self._last_eval: dict[str, Any] = {}

    def training(self, step: int, iteration: int, result: Mapping[str, Any], steps_per_s: float) -> None:
        runners = result.get("env_runners", {})
        learner = result.get("learners", {}).get("default_policy", {})
        scalars = {
            "train/trial_return_mean": runners.get("episode_return_mean", math.nan) / self.reward_scale,
            "train/policy_loss": learner.get("policy_loss"),
            "train/vf_loss": learner.get("vf_loss"),
            "train/entropy": learner.get("entropy"),
            "train/mean_kl": learner.get("mean_kl_loss"),
            "train/q_loss": learner.get("qf_loss"),  # R2D2
            "train/q_mean": learner.get("qf_mean"),
            "perf/env_steps_per_s": steps_per_s,
            "perf/sample_time_s": result.get("timers", {}).get("env_runner_sampling_timer"),
            "perf/learner_time_s": result.get("timers", {}).get("learner_update_timer"),
            "perf/iteration": iteration,
        }
        for tag, value in scalars.items():
            if value is not None and not (isinstance(value, float) and math.isnan(value)):
                self.writer.add_scalar(tag, value, step)
        by_episode = runners.get("trial_return_by_episode", {})
        for key in sorted(by_episode):
            self.writer.add_scalar(f"train_by_episode/ep_{int(key):02d}", by_episode[key] / self.reward_scale, step)

    def curriculum(self, step: int, stats: Mapping[str, Any]) -> None:
        """The task pool's :meth:`~metaray.curriculum.PrioritizedTaskPool.stats`."""
        for key in ("score_mean", "replay_fraction", "distinct_tasks", "pool_size"):
            if math.isfinite(stats[key]):
                self.writer.add_scalar(f"curriculum/{key}", stats[key], step)
        if stats["scores"]:
            self.writer.add_histogram("curriculum/scores", np.asarray(stats["scores"]), step)

    def probe(self, step: int, report: Mapping[str, Any]) -> None:
        """The task-inference probe (:func:`metaray.probe.probe_report`): per feature group,
        R² (accuracy for a discrete group) at the trial's last step and averaged over it, for
        each curve, and the figure."""
        for group, values in summarize(report).items():
            for key, value in values.items():
                self.writer.add_scalar(f"probe/{group}/{key}", value, step)
        self.writer.add_figure("probe", probe_figure(report, f"what the memory knows after {step:,} env steps"), step)

    def faults(self, step: int, env_runner_restarts: int, healthy_env_runners: int | None) -> None:
        self.writer.add_scalar("fault/env_runner_restarts", env_runner_restarts, step)
        if healthy_env_runners is not None:
            self.writer.add_scalar("fault/healthy_env_runners", healthy_env_runners, step)

    def evaluation(self, step: int, report: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]],
                   final: bool = False) -> None:
        """``report[split]`` and ``baselines[name]`` (held-out trials) are adaptation-metric dicts;
        ``final`` puts :data:`FINAL` in front of every tag."""
        self._last_eval = report
        prefix = FINAL if final else ""
        for split, metrics in report.items():
            for key in ("trial_return_mean", "trial_return_iqm", "adaptation_gain", "success_rate"):
                if key in metrics:
                    self.writer.add_scalar(f"{prefix}eval_{split}/{key}", metrics[key], step)
            low, high = metrics["trial_return_ci95"]
            self.writer.add_scalar(f"{prefix}eval_{split}/trial_return_ci95_low", low, step)
            self.writer.add_scalar(f"{prefix}eval_{split}/trial_return_ci95_high", high, step)
            for i, value in enumerate(metrics["return_by_episode"]):
                self.writer.add_scalar(f"{prefix}eval_{split}_by_episode/ep_{i:02d}", value, step)
        curves = {f"meta-policy ({split})": m["return_by_episode"] for split, m in report.items()}
        bands = {f"meta-policy ({split})": m["return_by_episode_ci95"] for split, m in report.items()}
        for name, metrics in baselines.items():
            self.writer.add_scalar(f"{prefix}baselines_test/{name}", metrics["trial_return_mean"], step)
            curves[name] = metrics["return_by_episode"]
        if baselines and "test" in report:
            best = baselines[best_baseline(baselines)]["trial_return_mean"]
            self.writer.add_scalar(f"{prefix}eval_test/regret_vs_best_baseline",
                                   best - report["test"]["trial_return_mean"], step)
        title = f"{'final evaluation' if final else 'adaptation'} after {step:,} env steps"
        self.writer.add_figure(f"{prefix}adaptation_curve", adaptation_figure(curves, title, bands), step)  # closes it
        self.writer.flush()

    def hyperparameters(self, config: Mapping[str, Any]) -> None:
        """Record the run's config in the HParams plugin; its metrics are the last logged
        values of :data:`HPARAM_METRICS`, so call this after the final evaluation."""
        flat = {key: value if isinstance(value, (bool, int, float, str)) else str(value)
                for key, value in _flatten(config).items()}
        for summary in hparams(flat, {tag: 0.0 for tag in HPARAM_METRICS}):
            self.writer.file_writer.add_summary(summary)
        self.writer.flush()

    def progress(self, iteration: int, step: int, wall_s: float, steps_per_s: float, train_return: float) -> str:
        done = min(step / self.total_env_steps, 1.0)
        remaining = max(self.total_env_steps - step, 0)
        eta = remaining * wall_s / step if step > 0 else math.inf  # run-average speed
        line = (
            f"iter {iteration:4d} | {step:>11,} / {self.total_env_steps:,} env steps ({done:4.0%}) "
            f"| {steps_per_s:7,.0f} steps/s | train return {train_return / self.reward_scale:7.3f}"
        )
        if self._last_eval:
            line += f" | held-out {self._last_eval['test']['trial_return_mean']:7.3f}"
        line += f" | elapsed {_duration(wall_s)} | ETA {_duration(eta)}"
        return line

    def flush(self) -> None:
        self.writer.flush()

    def close(self) -> None:
        self.writer.close()


def _flatten(config: Mapping[str, Any], prefix: str = "") -> dict[str, Any]:
    flat = {}
    for key, value in config.items():
        if isinstance(value, Mapping) and value:
            flat.update(_flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--"
    return time.strftime("%H:%M:%S", time.gmtime(seconds))
