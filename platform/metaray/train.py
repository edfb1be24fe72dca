"""The training run, top to bottom: build, train, evaluate, checkpoint, summarise.

A run folder holds::

    config.yaml          the resolved config (re-read by ``--resume``)
    events.out.tfevents  TensorBoard scalars and images (see metaray.tracking)
    checkpoints/iter_NNNNNN/   RLlib checkpoints plus metaray_state.json (counters)
    summary.json         final held-out/train evaluation and baselines on the same trials

Reliability: a dead env runner is restarted by RLlib (``env_runners.restart_failed``) and
counted (``fault/env_runner_restarts``); the training tasks are drawn from RNGs reseeded from
(seed, iteration, runner, env) at every iteration, so ``--resume`` after a killed driver
continues the iteration and env-step counters and the task sequence; a nan/inf training
return or loss, or losing every env runner for good, stops the run with
:class:`TrainingError` before anything more is checkpointed.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import torch
import yaml
from ray.rllib.utils.metrics import FAULT_TOLERANCE_STATS

from metaray.baselines import baseline_metrics
from metaray.config import ExperimentConfig
from metaray.rllib_config import NON_FINITE_TRIALS, build_algorithm_config
from metaray.rollouts import (
    ADAPTATION_KEY,
    env_runner_nodes,
    evaluate_meta_policy,
    evaluation_trials,
    reseed_task_samplers,
)
from metaray.storage import STATE_FILE, RunMirror, latest_checkpoint
from metaray.tracking import RunLogger

_CHECKED_LOSSES = ("total_loss", "policy_loss", "vf_loss", "entropy", "mean_kl_loss")


class TrainingError(RuntimeError):
    """Training cannot go on: nan/inf returns or losses, or no env runner left to sample."""


def sampled_env_steps(result: dict[str, Any]) -> int:
    """Env steps sampled in a training iteration (0, not nan, when every env runner died in it)."""
    steps = result.get("env_runners", {}).get("num_env_steps_sampled", 0)
    return int(steps) if math.isfinite(steps) else 0


def check_finite(result: dict[str, Any], iteration: int) -> None:
    """Raise :class:`TrainingError` naming every nan/inf trial return or loss of ``result``."""
    if sampled_env_steps(result) == 0:
        return  # nothing sampled, nothing learned: RLlib reports the missing losses as nan
    problems = []
    bad_trials = result.get("env_runners", {}).get(NON_FINITE_TRIALS, 0)
    if bad_trials > 0:  # nan when no trial ended this iteration (e.g. its env runner died)
        problems.append(f"{int(bad_trials)} training trial(s) returned nan/inf (the task family's rewards)")
    learner = result.get("learners", {}).get("default_policy", {})
    problems += [f"{key} is {float(learner[key])}" for key in _CHECKED_LOSSES
                 if key in learner and not math.isfinite(float(learner[key]))]
    if problems:
        raise TrainingError(f"iteration {iteration}: " + "; ".join(problems))


def check_env_runners_alive(result: dict[str, Any], cfg: ExperimentConfig, iteration: int) -> None:
    """Raise :class:`TrainingError` when every env runner is dead and none will be restarted
    (RLlib would otherwise return empty iterations forever)."""
    faults = result.get(FAULT_TOLERANCE_STATS, {})
    runners = cfg.env_runners
    restarts = faults.get("num_remote_worker_restarts", 0)
    if (runners.num_env_runners and sampled_env_steps(result) == 0 and faults.get("num_healthy_workers") == 0
            and (not runners.restart_failed or restarts >= runners.max_restarts)):
        raise TrainingError(f"iteration {iteration}: every env runner is dead and none is restarted "
                            f"({restarts} restarts used, env_runners.max_restarts={runners.max_restarts}, "
                            f"env_runners.restart_failed={runners.restart_failed})")


def save_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def _save_checkpoint(algo, run_dir: Path, state: dict[str, Any], logger: RunLogger,
                     mirror: RunMirror | None) -> Path:
    path = run_dir / "checkpoints" / f"iter_{state['iteration']:06d}"
    algo.save_to_path(str(path.resolve()))
    if mirror:
        mirror.upload(path.relative_to(run_dir))
    # Written last, here and in the mirror: a checkpoint without it (driver killed mid-save)
    # is ignored on resume.
    (path / STATE_FILE).write_text(json.dumps(state))
    if mirror:
        logger.flush()
        mirror.upload(path.relative_to(run_dir) / STATE_FILE)
        mirror.upload_logs()
    return path


def run_baselines(cfg: ExperimentConfig, num_trials: int) -> dict[str, dict[str, Any]]:
    return baseline_metrics(cfg.task, cfg.evaluation.baselines, evaluation_trials("test", num_trials), cfg.seed)


def train(cfg: ExperimentConfig, run_dir: Path, resume: bool = False, mirror: RunMirror | None = None) -> dict[str, Any]:
    """Train and evaluate; Ray must already be initialised. Returns the summary.

    ``mirror`` (see :mod:`metaray.storage`) receives the run folder's files as they are written.
    Raises :class:`TrainingError` (after stopping the algorithm) on a nan/inf return or loss,
    or when no env runner is left.
    """
    save_config(cfg, run_dir)
    torch.set_num_threads(cfg.learners.num_cpus_per_learner)  # the driver's local learner
    algo = build_algorithm_config(cfg).build_algo()
    state = {"iteration": 0, "env_steps": 0, "wall_s": 0.0, "env_runner_restarts": 0}
    if resume and (checkpoint := latest_checkpoint(run_dir)) is not None:
        algo.restore_from_path(str(checkpoint.resolve()))
        state.update(json.loads((checkpoint / STATE_FILE).read_text()))
        print(f"resumed from {checkpoint} at iteration {state['iteration']}, {state['env_steps']:,} env steps")
    restarts_before = state["env_runner_restarts"]
    logger = RunLogger(str(run_dir), cfg.training.total_env_steps, cfg.task.reward_scale,
                       purge_step=state["env_steps"] if resume else None)
    if mirror:
        mirror.upload_logs()
    periodic_baselines = run_baselines(cfg, cfg.evaluation.num_trials)

    start = time.perf_counter() - state["wall_s"]
    checkpoint_path = None
    try:
        while state["env_steps"] < cfg.training.total_env_steps:
            iter_start = time.perf_counter()
            reseed_task_samplers(algo.env_runner_group, cfg.seed, state["iteration"])
            result = algo.train()
            check_finite(result, state["iteration"] + 1)
            check_env_runners_alive(result, cfg, state["iteration"] + 1)
            steps = sampled_env_steps(result)
            state["iteration"] += 1
            state["env_steps"] += steps
            state["wall_s"] = time.perf_counter() - start
            faults = result.get(FAULT_TOLERANCE_STATS, {})
            state["env_runner_restarts"] = restarts_before + faults.get("num_remote_worker_restarts", 0)
            steps_per_s = steps / (time.perf_counter() - iter_start)
            logger.training(state["env_steps"], state["iteration"], result, steps_per_s)
            logger.faults(state["env_steps"], state["env_runner_restarts"], faults.get("num_healthy_workers"))
            report = result.get("evaluation", {}).get(ADAPTATION_KEY)
            if report:
                logger.evaluation(state["env_steps"], report, periodic_baselines)
            print(logger.progress(state["iteration"], state["env_steps"], state["wall_s"], steps_per_s,
                                  result.get("env_runners", {}).get("episode_return_mean", float("nan"))), flush=True)
            if cfg.checkpoint_interval and state["iteration"] % cfg.checkpoint_interval == 0:
                checkpoint_path = _save_checkpoint(algo, run_dir, state, logger, mirror)
    except TrainingError as exc:
        logger.close()
        algo.stop()
        last = latest_checkpoint(run_dir)
        raise TrainingError(f"{exc}. Stopped without checkpointing this iteration; "
                             f"last good checkpoint: {last or 'none'}") from None

    print(f"final evaluation on {cfg.evaluation.final_num_trials} trials per split ...", flush=True)
    report, _ = evaluate_meta_policy(algo, cfg.evaluation.final_num_trials, cfg.evaluation.explore)
    baselines = run_baselines(cfg, cfg.evaluation.final_num_trials)
    logger.evaluation(state["env_steps"], report, baselines)
    logger.hyperparameters(cfg.to_dict())
    state["wall_s"] = time.perf_counter() - start
    if checkpoint_path is None or not checkpoint_path.name.endswith(f"{state['iteration']:06d}"):
        checkpoint_path = _save_checkpoint(algo, run_dir, state, logger, mirror)
    runner_nodes = env_runner_nodes(algo.env_runner_group)
    logger.close()
    algo.stop()

    summary = {
        "name": cfg.name,
        "family": cfg.task.family,
        "env_steps": state["env_steps"],
        "iterations": state["iteration"],
        "wall_s": round(state["wall_s"], 2),
        "env_steps_per_s": round(state["env_steps"] / max(state["wall_s"], 1e-9), 1),
        "env_runner_restarts": state["env_runner_restarts"],
        "env_runner_nodes": runner_nodes,
        "checkpoint": str(checkpoint_path),
        "storage": mirror.uri if mirror else str(run_dir.resolve()),
        "eval": report,
        "baselines": baselines,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if mirror:
        mirror.upload_logs()
    return summary
