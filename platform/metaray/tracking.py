"""TensorBoard scalars and images, and the one-line console progress of a run.

Tag scheme (x axis: env steps sampled):
    train/...                      training trials (RLlib env-runner metrics) and PPO losses
    eval_<split>/...               paired evaluation trials of the held-out ("test") or
                                   training ("train") split
    eval_<split>_by_episode/ep_NN  mean return of the NN-th episode of a trial
    eval_test/regret_vs_best_baseline  best baseline's minus the meta-policy's mean trial
                                   return on the same held-out trials
    baselines_test/<name>          baseline trial return on the same held-out trials
    perf/...                       throughput and timers
The adaptation curves are also written as an image under ``adaptation_curve``; the Custom
Scalars dashboard groups the curves and train vs held-out (:data:`CUSTOM_SCALARS_LAYOUT`),
and the HParams dashboard lists each run's config with its final metrics.
Fault tolerance: ``fault/...`` holds env runner restarts (cumulative) and healthy runners.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

from torch.utils.tensorboard import SummaryWriter
from torch.utils.tensorboard.summary import hparams

from metaray.figures import adaptation_figure
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
HPARAM_METRICS = ("eval_test/trial_return_mean", "eval_train/trial_return_mean", "eval_test/trial_return_iqm",
                  "eval_test/adaptation_gain", "eval_test/regret_vs_best_baseline")


class RunLogger:
    """Writes a run's TensorBoard events and prints progress lines."""

    def __init__(self, log_dir: str, total_env_steps: int, reward_scale: float, purge_step: int | None = None):
        self.writer = SummaryWriter(log_dir, purge_step=purge_step)
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

    def faults(self, step: int, env_runner_restarts: int, healthy_env_runners: int | None) -> None:
        self.writer.add_scalar("fault/env_runner_restarts", env_runner_restarts, step)
        if healthy_env_runners is not None:
            self.writer.add_scalar("fault/healthy_env_runners", healthy_env_runners, step)

    def evaluation(self, step: int, report: Mapping[str, Mapping[str, Any]], baselines: Mapping[str, Mapping[str, Any]]) -> None:
        """``report[split]`` and ``baselines[name]`` (held-out trials) are adaptation-metric dicts."""
        self._last_eval = report
        for split, metrics in report.items():
            for key in ("trial_return_mean", "trial_return_iqm", "adaptation_gain", "success_rate"):
                if key in metrics:
                    self.writer.add_scalar(f"eval_{split}/{key}", metrics[key], step)
            low, high = metrics["trial_return_ci95"]
            self.writer.add_scalar(f"eval_{split}/trial_return_ci95_low", low, step)
            self.writer.add_scalar(f"eval_{split}/trial_return_ci95_high", high, step)
            for i, value in enumerate(metrics["return_by_episode"]):
                self.writer.add_scalar(f"eval_{split}_by_episode/ep_{i:02d}", value, step)
        curves = {f"meta-policy ({split})": m["return_by_episode"] for split, m in report.items()}
        bands = {f"meta-policy ({split})": m["return_by_episode_ci95"] for split, m in report.items()}
        for name, metrics in baselines.items():
            self.writer.add_scalar(f"baselines_test/{name}", metrics["trial_return_mean"], step)
            curves[name] = metrics["return_by_episode"]
        if baselines and "test" in report:
            best = baselines[best_baseline(baselines)]["trial_return_mean"]
            self.writer.add_scalar("eval_test/regret_vs_best_baseline", best - report["test"]["trial_return_mean"], step)
        fig = adaptation_figure(curves, f"adaptation after {step:,} env steps", bands)
        self.writer.add_figure("adaptation_curve", fig, step)  # closes the figure
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
