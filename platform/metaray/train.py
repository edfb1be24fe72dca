"""The training run, top to bottom: build, train, evaluate, checkpoint, summarise.

A run folder holds::

    config.yaml          the resolved config (re-read by ``--resume``)
    events.out.tfevents  TensorBoard scalars and images (see metaray.tracking)
    checkpoints/iter_NNNNNN/   RLlib checkpoints plus metaray_state.json (counters) and, with
                               task.curriculum plr, task_pool.json (metaray.curriculum)
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
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import ray
import torch
from ray.rllib.utils.metrics import FAULT_TOLERANCE_STATS

from metaray.baselines import baseline_metrics
from metaray.config import ExperimentConfig
from metaray.curriculum import pool_name, restore_task_pool, save_task_pool, start_task_pool
from metaray.probe import probe_report
from metaray.rllib_config import NON_FINITE_TRIALS, build_algorithm_config
from metaray.rollouts import (
    ADAPTATION_KEY,
    env_runner_nodes,
    evaluate_meta_policy,
    evaluation_trials,
    play_and_trace,
    reseed_task_samplers,
    untrained_memory,
)
from metaray.storage import STATE_FILE, CheckpointError, RunMirror, latest_checkpoint, restore_latest, save_config
from metaray.tasks import TaskSplit
from metaray.tracking import RunLogger, evaluated_this_iteration
from metaray.trial import family_env_error, last_env_runner_error

# PPO and APPO report the first five; R2D2 (RLlib's DQN) reports total_loss, qf_loss and qf_mean.
_CHECKED_LOSSES = ("total_loss", "policy_loss", "vf_loss", "entropy", "mean_kl_loss", "qf_loss", "qf_mean")


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
    (RLlib would otherwise return empty iterations forever), naming the task family's last
    error in an env runner, if there was one."""
    faults = result.get(FAULT_TOLERANCE_STATS, {})
    runners = cfg.env_runners
    restarts = faults.get("num_remote_worker_restarts", 0)
    if (runners.num_env_runners and sampled_env_steps(result) == 0 and faults.get("num_healthy_workers") == 0
            and (not runners.restart_failed or restarts >= runners.max_restarts)):
        cause = last_env_runner_error()
        raise TrainingError(f"iteration {iteration}: every env runner is dead and none is restarted "
                            f"({restarts} restarts used, env_runners.max_restarts={runners.max_restarts}, "
                            f"env_runners.restart_failed={runners.restart_failed})"
                            + (f"; the last env runner error: {cause}" if cause else ""))


class StopOnSigint:
    """From its creation until :meth:`restore`, the first Ctrl-C (SIGINT) only sets ``requested``,
    so the training loop can finish and checkpoint the iteration under way; a second Ctrl-C
    raises KeyboardInterrupt at once. Only the main thread may handle signals: elsewhere (a Ray
    Tune trial) Ctrl-C keeps its usual effect.

    >>> stop = StopOnSigint()
    >>> signal.raise_signal(signal.SIGINT)
    >>> stop.restore()
    >>> stop.requested
    True
    """

    def __init__(self) -> None:
        self.requested = False
        self._installed = threading.current_thread() is threading.main_thread()
        if self._installed:
            self._previous = signal.signal(signal.SIGINT, self._request)

    def _request(self, signum: int, frame: Any) -> None:
        self.requested = True
        signal.signal(signal.SIGINT, signal.default_int_handler)
        # os.write, not print: a signal handler may run while the main thread is inside a print.
        os.write(1, b"\nCtrl-C: stopping after this iteration, with a checkpoint (Ctrl-C again: stop now)\n")

    def restore(self) -> None:
        """Put back the SIGINT handler there was before."""
        if self._installed:
            signal.signal(signal.SIGINT, self._previous)


def _is_checkpoint_of(path: Path | None, state: dict[str, Any]) -> bool:
    return path is not None and path.name == f"iter_{state['iteration']:06d}"


def _save_checkpoint(algo, run_dir: Path, state: dict[str, Any], logger: RunLogger,
                     mirror: RunMirror | None, task_pool: ray.actor.ActorHandle | None = None) -> Path:
    path = run_dir / "checkpoints" / f"iter_{state['iteration']:06d}"
    # A folder left by an earlier attempt at this iteration (one skipped on resume): incomplete until rewritten.
    (path / STATE_FILE).unlink(missing_ok=True)
    algo.save_to_path(str(path.resolve()))
    if task_pool is not None:
        save_task_pool(task_pool, path)
    if mirror:
        mirror.upload(path.relative_to(run_dir))
    logger.flush()  # the events up to this checkpoint, all of which --resume keeps
    # Written last, here and in the mirror: a checkpoint without it (driver killed mid-save)
    # is ignored on resume.
    (path / STATE_FILE).write_text(json.dumps(state))
    if mirror:
        mirror.upload(path.relative_to(run_dir) / STATE_FILE)
        mirror.upload_logs()
    return path


def run_baselines(cfg: ExperimentConfig, num_trials: int) -> dict[str, dict[str, Any]]:
    """The family's baselines on the first ``num_trials`` held-out trials; TrainingError naming
    the family, the method and the exception if its code raises."""
    with _family_failure_stops(cfg, " in a baseline trial"):
        return baseline_metrics(cfg.task, cfg.evaluation.baselines, evaluation_trials("test", num_trials), cfg.seed)


@contextmanager
def _family_failure_stops(cfg: ExperimentConfig, where: str = "") -> Iterator[None]:
    """Turn an error of the task family's code (a FamilyEnvError, however RLlib or Ray wrapped
    it) into a TrainingError of one line: the family, the method and the exception."""
    try:
        yield
    except Exception as exc:
        cause = family_env_error(exc)
        if cause is None:
            raise
        message = str(cause)
        if not message.startswith("task family "):
            message = f"task family {cfg.task.family!r}: {message}"
        raise TrainingError(message + where) from None


def run_probe(algo, cfg: ExperimentConfig, num_trials: int) -> dict[str, Any]:
    """The task-inference probe (:mod:`metaray.probe`) of the current weights on held-out trials."""
    traces = [trace for _, trace in play_and_trace(algo, evaluation_trials("test", num_trials), cfg.evaluation.explore)]
    return probe_report(TaskSplit.from_config(cfg.task, cfg.seed), cfg.task.reward_scale, traces,
                        untrained_memory(cfg, traces))


def train(cfg: ExperimentConfig, run_dir: Path, resume: bool = False, mirror: RunMirror | None = None) -> dict[str, Any]:
    """Train and evaluate; Ray must already be initialised. Returns the summary.

    ``mirror`` (see :mod:`metaray.storage`) receives the run folder's files as they are written.
    Raises :class:`TrainingError` (after stopping the algorithm) on a nan/inf return or loss,
    or when no env runner is left. ``resume`` restores the newest checkpoint that loads
    (:func:`metaray.storage.restore_latest`; :class:`CheckpointError` when none does) before
    anything in ``run_dir`` is written. Ctrl-C checkpoints the iteration under way and raises
    KeyboardInterrupt (see :class:`StopOnSigint`).
    """
    torch.set_num_threads(cfg.learners.num_cpus_per_learner)  # the driver's local learner
    # task.curriculum plr: one task pool actor for the run, named in the training envs' config.
    task_pool = start_task_pool(cfg, run_dir) if cfg.task.curriculum == "plr" else None
    algo = build_algorithm_config(cfg, pool_name(run_dir) if task_pool is not None else None).build_algo()
    state = {"iteration": 0, "env_steps": 0, "wall_s": 0.0, "env_runner_restarts": 0}
    checkpoint_path = None
    if resume and latest_checkpoint(run_dir) is not None:
        try:
            checkpoint_path, restored = restore_latest(algo, run_dir)
        except CheckpointError:
            algo.stop()
            raise
        state.update(restored)
        if task_pool is not None:
            restore_task_pool(task_pool, checkpoint_path)
        print(f"resumed from {checkpoint_path} at iteration {state['iteration']}, {state['env_steps']:,} env steps")
    save_config(cfg, run_dir)  # only now: a resume that fails leaves the run folder as it was
    restarts_before = state["env_runner_restarts"]
    logger = RunLogger(str(run_dir), cfg.training.total_env_steps, cfg.task.reward_scale,
                       resumed_from_step=state["env_steps"] if resume else None)
    if mirror:
        mirror.upload_logs()
    periodic_baselines = run_baselines(cfg, cfg.evaluation.num_trials)

    start = time.perf_counter() - state["wall_s"]
    stop = StopOnSigint()
    try:
        while state["env_steps"] < cfg.training.total_env_steps and not stop.requested:
            iter_start = time.perf_counter()
            reseed_task_samplers(algo.env_runner_group, cfg.seed, state["iteration"])
            with _family_failure_stops(cfg):
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
            if task_pool is not None:
                logger.curriculum(state["env_steps"], ray.get(task_pool.stats.remote()))
            report = result.get("evaluation", {}).get(ADAPTATION_KEY)
            if report and evaluated_this_iteration(result, algo.config.evaluation_interval):
                logger.evaluation(state["env_steps"], report, periodic_baselines)
                if cfg.evaluation.probe:
                    logger.probe(state["env_steps"], run_probe(algo, cfg, cfg.evaluation.num_trials))
            print(logger.progress(state["iteration"], state["env_steps"], state["wall_s"], steps_per_s,
                                  result.get("env_runners", {}).get("episode_return_mean", float("nan"))), flush=True)
            if cfg.checkpoint_interval and state["iteration"] % cfg.checkpoint_interval == 0:
                checkpoint_path = _save_checkpoint(algo, run_dir, state, logger, mirror, task_pool)
        if stop.requested and state["iteration"] and not _is_checkpoint_of(checkpoint_path, state):
            checkpoint_path = _save_checkpoint(algo, run_dir, state, logger, mirror, task_pool)
    except TrainingError as exc:
        logger.close()
        algo.stop()
        last = latest_checkpoint(run_dir)
        raise TrainingError(f"{exc}. Stopped without checkpointing this iteration; "
                             f"last good checkpoint: {last or 'none'}") from None
    finally:
        stop.restore()
    if stop.requested:
        logger.close()
        algo.stop()
        raise KeyboardInterrupt(f"stopped by Ctrl-C after iteration {state['iteration']}")

    print(f"final evaluation on {cfg.evaluation.final_num_trials} trials per split ...", flush=True)
    report, _ = evaluate_meta_policy(algo, cfg.evaluation.final_num_trials, cfg.evaluation.explore)
    baselines = run_baselines(cfg, cfg.evaluation.final_num_trials)
    logger.evaluation(state["env_steps"], report, baselines, final=True)
    logger.hyperparameters(cfg.to_dict())
    state["wall_s"] = time.perf_counter() - start
    if not _is_checkpoint_of(checkpoint_path, state):
        checkpoint_path = _save_checkpoint(algo, run_dir, state, logger, mirror, task_pool)
    runner_nodes = env_runner_nodes(algo.env_runner_group)
    logger.close()
    algo.stop()
    if task_pool is not None:
        ray.kill(task_pool)

    summary = {
        "name": cfg.name,
        "family": cfg.task.family,
        "env_steps": state["env_steps"],
        "iterations": state["iteration"],
        "wall_s": round(state["wall_s"], 2),
        "env_steps_per_s": round(state["env_steps"] / max(state["wall_s"], 1e-9), 1),
        "env_runner_restarts": state["env_runner_restarts"],
        "env_runner_nodes": runner_nodes,
        # Relative to the run folder, which may be moved, copied or committed; "." without a mirror.
        "checkpoint": str(checkpoint_path.resolve().relative_to(run_dir.resolve())),
        "storage": mirror.uri if mirror else ".",
        "eval": report,
        "baselines": baselines,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    if mirror:
        mirror.upload_logs()
    return summary
