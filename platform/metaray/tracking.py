"""TensorBoard scalars and images, and the one-line console progress of a run.

Tag scheme (x axis: env steps sampled):
    train/...                      training trials (RLlib env-runner metrics) and PPO losses
    eval_<split>/...               paired evaluation trials of the held-out ("test") or
                                   training ("train") split
    eval_<split>_by_episode/ep_NN  mean return of the NN-th episode of a trial
    baselines_test/<name>          baseline trial return on the same held-out trials
    perf/...                       throughput and timers
    fault/...                      env runner restarts (cumulative) and healthy runners
The adaptation curves are also written as an image under ``adaptation_curve``.
"""

from __future__ import annotations

import math
import time
from typing import Any, Mapping

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from torch.utils.tensorboard import SummaryWriter  # noqa: E402


def adaptation_figure(curves: Mapping[str, list[float]], title: str):
    """A line per curve: mean return of the i-th episode of a trial."""
    fig, ax = plt.subplots(figsize=(6, 4), dpi=100)
    for label, curve in curves.items():
        style = "-o" if label.startswith("meta-policy") else "--"
        ax.plot(range(1, len(curve) + 1), curve, style, label=label, markersize=3)
    ax.set_xlabel("episode of the trial")
    ax.set_ylabel("mean episode return")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    fig.tight_layout()
    return fig


class RunLogger:
    """Writes a run's TensorBoard events and prints progress lines."""

    def __init__(self, log_dir: str, total_env_steps: int, reward_scale: float, purge_step: int | None = None):
        self.writer = SummaryWriter(log_dir, purge_step=purge_step)
        self.total_env_steps = total_env_steps
        self.reward_scale = reward_scale
        self._last_eval: dict[str, Any] = {}

    def training(self, step: int, iteration: int, result: Mapping[str, Any], wall_s: float, steps_per_s: float) -> None:
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
            for key in ("trial_return_mean", "adaptation_gain", "success_rate"):
                if key in metrics:
                    self.writer.add_scalar(f"eval_{split}/{key}", metrics[key], step)
            for i, value in enumerate(metrics["return_by_episode"]):
                self.writer.add_scalar(f"eval_{split}_by_episode/ep_{i:02d}", value, step)
        curves = {f"meta-policy ({split})": m["return_by_episode"] for split, m in report.items()}
        for name, metrics in baselines.items():
            self.writer.add_scalar(f"baselines_test/{name}", metrics["trial_return_mean"], step)
            curves[name] = metrics["return_by_episode"]
        fig = adaptation_figure(curves, f"adaptation after {step:,} env steps")
        self.writer.add_figure("adaptation_curve", fig, step)
        plt.close(fig)
        self.writer.flush()

    def progress(self, iteration: int, step: int, wall_s: float, steps_per_s: float, train_return: float) -> str:
        done = min(step / self.total_env_steps, 1.0)
        eta = max(self.total_env_steps - step, 0) / steps_per_s if steps_per_s > 0 else math.inf
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


def _duration(seconds: float) -> str:
    if not math.isfinite(seconds):
        return "--"
    return time.strftime("%H:%M:%S", time.gmtime(seconds))
