"""The training run, top to bottom: build, train, evaluate, checkpoint, summarise.

A run folder holds::

    config.yaml          the resolved config (re-read by ``--resume``)
    events.out.tfevents  TensorBoard scalars and images (see metaray.tracking)
    checkpoints/iter_NNNNNN/   RLlib checkpoints plus metaray_state.json (counters)
    summary.json         final held-out/train evaluation and baselines on the same trials
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import torch
import yaml

from metaray.algorithm import build_algorithm_config
from metaray.config import ExperimentConfig
from metaray.evaluation import ADAPTATION_KEY, adaptation_metrics, evaluate_baselines, evaluate_meta_policy, evaluation_trials
from metaray.tracking import RunLogger

STATE_FILE = "metaray_state.json"


def save_config(cfg: ExperimentConfig, run_dir: Path) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    (run_dir / "config.yaml").write_text(yaml.safe_dump(cfg.to_dict(), sort_keys=False))


def latest_checkpoint(run_dir: Path) -> Path | None:
    checkpoints = sorted((run_dir / "checkpoints").glob("iter_*"))
    complete = [c for c in checkpoints if (c / STATE_FILE).is_file()]
    return complete[-1] if complete else None


def _save_checkpoint(algo, run_dir: Path, state: dict[str, Any]) -> Path:
    path = run_dir / "checkpoints" / f"iter_{state['iteration']:06d}"
    algo.save_to_path(str(path.resolve()))
    # Written last: a checkpoint without it (driver killed mid-save) is ignored on resume.
    (path / STATE_FILE).write_text(json.dumps(state))
    return path


def run_baselines(cfg: ExperimentConfig, num_trials: int) -> dict[str, dict[str, Any]]:
    trials = evaluation_trials("test", num_trials)
    records = evaluate_baselines(cfg.task, cfg.evaluation.baselines, trials, cfg.seed)
    return {name: adaptation_metrics(recs) for name, recs in records.items()}


def train(cfg: ExperimentConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train and evaluate; Ray must already be initialised. Returns the summary."""
    save_config(cfg, run_dir)
    torch.set_num_threads(cfg.learners.num_cpus_per_learner)  # the driver's local learner
    algo = build_algorithm_config(cfg).build_algo()
    state = {"iteration": 0, "env_steps": 0, "wall_s": 0.0}
    if resume and (checkpoint := latest_checkpoint(run_dir)) is not None:
        algo.restore_from_path(str(checkpoint.resolve()))
        state = json.loads((checkpoint / STATE_FILE).read_text())
        print(f"resumed from {checkpoint} at iteration {state['iteration']}, {state['env_steps']:,} env steps")
    logger = RunLogger(str(run_dir), cfg.training.total_env_steps, cfg.task.reward_scale,
                       purge_step=state["env_steps"] if resume else None)
    periodic_baselines = run_baselines(cfg, cfg.evaluation.num_trials)

    start = time.perf_counter() - state["wall_s"]
    checkpoint_path = None
    while state["env_steps"] < cfg.training.total_env_steps:
        iter_start = time.perf_counter()
        result = algo.train()
        steps = result["env_runners"]["num_env_steps_sampled"]
        state["iteration"] += 1
        state["env_steps"] += int(steps)
        state["wall_s"] = time.perf_counter() - start
        steps_per_s = steps / (time.perf_counter() - iter_start)
        logger.training(state["env_steps"], state["iteration"], result, state["wall_s"], steps_per_s)
        report = result.get("evaluation", {}).get(ADAPTATION_KEY)
        if report:
            logger.evaluation(state["env_steps"], report, periodic_baselines)
        print(logger.progress(state["iteration"], state["env_steps"], state["wall_s"], steps_per_s,
                              result["env_runners"].get("episode_return_mean", float("nan"))), flush=True)
        if cfg.checkpoint_interval and state["iteration"] % cfg.checkpoint_interval == 0:
            checkpoint_path = _save_checkpoint(algo, run_dir, state)

    print(f"final evaluation on {cfg.evaluation.final_num_trials} trials per split ...", flush=True)
    report = evaluate_meta_policy(algo, cfg.evaluation.final_num_trials, cfg.evaluation.explore)
    baselines = run_baselines(cfg, cfg.evaluation.final_num_trials)
    logger.evaluation(state["env_steps"], report, baselines)
    logger.hyperparameters(cfg.to_dict())
    logger.close()
    state["wall_s"] = time.perf_counter() - start
    if checkpoint_path is None or not checkpoint_path.name.endswith(f"{state['iteration']:06d}"):
        checkpoint_path = _save_checkpoint(algo, run_dir, state)
    algo.stop()

    summary = {
        "name": cfg.name,
        "family": cfg.task.family,
        "env_steps": state["env_steps"],
        "iterations": state["iteration"],
        "wall_s": round(state["wall_s"], 2),
        "env_steps_per_s": round(state["env_steps"] / max(state["wall_s"], 1e-9), 1),
        "checkpoint": str(checkpoint_path),
        "eval": report,
        "baselines": baselines,
    }
    (run_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    return summary
