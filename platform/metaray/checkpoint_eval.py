"""``--eval-only``: evaluate a saved checkpoint against the family's baselines on the same
trials and write a report folder (see :mod:`metaray.report`). Ray must already be initialised.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from metaray.baselines import evaluate_baselines
from metaray.config import ExperimentConfig
from metaray.report import META_POLICY, checkpoint_summary, experiment_header, write_report
from metaray.rllib_config import build_algorithm_config
from metaray.probe import probe_report
from metaray.rollouts import evaluation_trials, play_and_trace, untrained_memory
from metaray.storage import STATE_FILE, load_checkpoint
from metaray.tasks import Split, TaskSplit


def checkpoint_header(checkpoint: Path) -> dict[str, Any]:
    """Which checkpoint a report evaluates and how far its run had trained (iteration, env steps,
    wall time; None where the folder has no readable metaray state). The path is relative to
    its run folder, named by the folder's name alone: reports get committed and shared.

    Example:
        >>> checkpoint_header(Path("/somewhere/runs/bandit-1/checkpoints/iter_000010"))["checkpoint"]
        'checkpoints/iter_000010'
    """
    checkpoint = checkpoint.resolve()
    run_dir = checkpoint.parent.parent if checkpoint.parent.name == "checkpoints" else checkpoint.parent
    try:
        state = json.loads((checkpoint / STATE_FILE).read_text())
    except (OSError, ValueError):  # an RLlib checkpoint of another origin, or a damaged state file
        state = {}
    return {"run": run_dir.name, "checkpoint": str(checkpoint.relative_to(run_dir)),
            "checkpoint_iteration": state.get("iteration"), "checkpoint_env_steps": state.get("env_steps"),
            "checkpoint_wall_s": state.get("wall_s")}


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: Path, split: Split, num_trials: int,
                        out_dir: Path) -> dict[str, Any]:
    """Evaluate a checkpoint's meta-policy and the family's baselines on the same trials.

    The algorithm is built from ``cfg`` (so its evaluation EnvRunners follow
    ``evaluation.num_env_runners``) and then restored; :func:`play_and_trace` syncs the
    restored learner weights to the evaluation runners before playing. With
    ``evaluation.probe``, the report also holds the task-inference probe (:mod:`metaray.probe`),
    its control a freshly initialised network fed the same trial inputs.
    """
    trials = evaluation_trials(split, num_trials)
    algo = build_algorithm_config(cfg).build_algo()
    try:
        load_checkpoint(algo, checkpoint)  # CheckpointError when it does not load
        played = play_and_trace(algo, trials, cfg.evaluation.explore, traces=cfg.evaluation.probe)
    finally:
        algo.stop()
    records = {META_POLICY: [record for record, _ in played]}
    records.update(evaluate_baselines(cfg.task, cfg.evaluation.baselines, trials, cfg.seed))
    header = {**experiment_header(cfg), **checkpoint_header(checkpoint), "split": split, "seed": cfg.seed,
              "num_trials": num_trials, "explore": cfg.evaluation.explore}
    summary = checkpoint_summary(records, header)
    if cfg.evaluation.probe:
        traces = [trace for _, trace in played]
        summary["probe"] = probe_report(TaskSplit.from_config(cfg.task, cfg.seed), cfg.task.reward_scale,
                                        traces, untrained_memory(cfg, traces))
    write_report(summary, out_dir)
    return summary
