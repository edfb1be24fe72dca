"""Beyond one training run: evaluate a saved checkpoint, train several seeds with Ray Tune.

Both end in a report folder (see :mod:`metaray.report`). Ray must already be initialised.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from metaray.algorithm import build_algorithm_config
from metaray.config import ConfigError, ExperimentConfig
from metaray.evaluation import evaluate_baselines, evaluation_trials, play_meta_policy
from metaray.report import META_POLICY, checkpoint_summary, seeds_summary, write_report
from metaray.tasks import Split
from metaray.train import latest_checkpoint, save_config, train

#: Files an RLlib Algorithm checkpoint (new API stack) must have for evaluation.
_CHECKPOINT_PARTS = ("rllib_checkpoint.json", "learner_group")


def resolve_checkpoint(path: Path) -> Path:
    """An Algorithm checkpoint folder, or a run folder's latest complete checkpoint."""
    if (path / "checkpoints").is_dir():
        checkpoint = latest_checkpoint(path)
        if checkpoint is None:
            raise ConfigError(f"--checkpoint {path}: run folder without a complete checkpoint")
        return checkpoint
    missing = [part for part in _CHECKPOINT_PARTS if not (path / part).exists()]
    if missing:
        raise ConfigError(f"--checkpoint {path}: not an RLlib checkpoint folder (no {', '.join(missing)})")
    return path


def evaluate_checkpoint(cfg: ExperimentConfig, checkpoint: Path, split: Split, num_trials: int,
                        out_dir: Path) -> dict[str, Any]:
    """Evaluate a checkpoint's meta-policy and the family's baselines on the same trials.

    The algorithm is built from ``cfg`` (so its evaluation EnvRunners follow
    ``evaluation.num_env_runners``) and then restored; :func:`play_meta_policy` syncs the
    restored learner weights to the evaluation runners before playing.
    """
    algo = build_algorithm_config(cfg).build_algo()
    try:
        algo.restore_from_path(str(checkpoint.resolve()))
        trials = evaluation_trials(split, num_trials)
        records = {META_POLICY: play_meta_policy(algo, trials, cfg.evaluation.explore)}
    finally:
        algo.stop()
    records.update(evaluate_baselines(cfg.task, cfg.evaluation.baselines, trials, cfg.seed))
    header = {"name": cfg.name, "family": cfg.task.family, "checkpoint": str(checkpoint), "split": split,
              "seed": cfg.seed, "num_trials": num_trials, "explore": cfg.evaluation.explore}
    summary = checkpoint_summary(records, header)
    write_report(summary, out_dir)
    return summary


def train_seeds(cfg: ExperimentConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train one run per seed in ``cfg.seeds`` as Ray Tune trials, then write the aggregate report.

    Seed ``s`` trains in ``run_dir/seed_<s>`` (a complete run folder: resumable, with its own
    TensorBoard events and summary.json); each trial reserves what the algorithm needs
    (driver, env runners, learners), so Tune runs as many seeds at once as the cluster fits.
    The aggregate report goes to ``run_dir/report``; ``resume`` continues every seed from its
    latest checkpoint.
    """
    from ray import tune

    run_dir = run_dir.resolve()
    save_config(cfg, run_dir)
    if cfg.task.family.endswith(".py"):  # Tune runs each trial in its own working directory
        cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, family=str(Path(cfg.task.family).resolve())))

    def train_one_seed(params: dict[str, Any]) -> None:
        seed_cfg = dataclasses.replace(cfg, seed=params["seed"], seeds=None)
        summary = train(seed_cfg, run_dir / f"seed_{params['seed']}", resume=resume)
        tune.report({"held_out_trial_return_mean": summary["eval"]["test"]["trial_return_mean"],
                     "env_steps": summary["env_steps"]})

    algo_config = build_algorithm_config(cfg)
    resources = algo_config.algo_class.default_resource_request(algo_config)
    tuner = tune.Tuner(
        tune.with_resources(train_one_seed, resources),
        param_space={"seed": tune.grid_search(list(cfg.seeds))},
        run_config=tune.RunConfig(name="seeds", storage_path=str(run_dir / "tune"), verbose=0),
    )
    results = tuner.fit()
    if results.errors:
        raise RuntimeError(f"{len(results.errors)} of {len(cfg.seeds)} seeds failed: {results.errors[0]}")
    runs = {}
    for seed in cfg.seeds:
        seed_dir = run_dir / f"seed_{seed}"
        runs[seed] = {**json.loads((seed_dir / "summary.json").read_text()), "run_dir": str(seed_dir)}
    header = {"name": cfg.name, "family": cfg.task.family, "split": "test", "seeds": list(cfg.seeds)}
    summary = seeds_summary(runs, header)
    write_report(summary, run_dir / "report")
    return summary
