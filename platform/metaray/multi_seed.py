"""Several training seeds of one config as Ray Tune trials, and their aggregate report.

Each seed is a complete run folder (resumable, with its own TensorBoard events and
summary.json); the report treats every seed as one sample. Ray must already be initialised.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from metaray.config import ExperimentConfig
from metaray.report import experiment_header, seeds_summary, write_report
from metaray.rllib_config import build_algorithm_config
from metaray.storage import one_line
from metaray.train import TrainingError, save_config, train


def train_seeds(cfg: ExperimentConfig, run_dir: Path, resume: bool = False) -> dict[str, Any]:
    """Train one run per seed in ``cfg.seeds`` as Ray Tune trials, then write the aggregate report.

    Seed ``s`` trains in ``run_dir/seed_<s>`` (a complete run folder: resumable, with its own
    TensorBoard events and summary.json); each trial reserves what the algorithm needs
    (driver, env runners, learners), so Tune runs as many seeds at once as the cluster fits.
    The aggregate report goes to ``run_dir/report``, naming each seed's run folder relative to
    ``run_dir``; ``resume`` continues every seed from its latest checkpoint. A seed that fails
    raises :class:`TrainingError` naming each failed seed and its error, once every seed has
    ended; Ctrl-C stops every seed at its last checkpoint and raises KeyboardInterrupt.
    """
    from ray import tune

    run_dir = run_dir.resolve()
    save_config(cfg, run_dir)
    header = {**experiment_header(cfg), "split": "test", "seeds": list(cfg.seeds),
              "num_trials": cfg.evaluation.final_num_trials, "explore": cfg.evaluation.explore}
    if cfg.task.family.endswith(".py"):  # Tune runs each trial in its own working directory
        cfg = dataclasses.replace(cfg, task=dataclasses.replace(cfg.task, family=str(Path(cfg.task.family).resolve())))

    def train_one_seed(params: dict[str, Any]) -> None:
        seed = params["seed"]
        try:
            summary = train(dataclasses.replace(cfg, seed=seed, seeds=None), run_dir / f"seed_{seed}", resume=resume)
        except Exception as exc:  # noqa: BLE001 - whatever stops a seed, the launch names the seed and says why
            raise TrainingError(f"seed {seed}: {exc if isinstance(exc, TrainingError) else one_line(exc)}") from exc
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
    failed = [getattr(error, "cause", error) for error in results.errors]  # Ray wraps each in a RayTaskError
    if failed:
        raise TrainingError(f"{len(failed)} of {len(cfg.seeds)} seeds failed: " + "; ".join(map(str, failed)))
    unfinished = [seed for seed in cfg.seeds if not (run_dir / f"seed_{seed}" / "summary.json").is_file()]
    if unfinished:  # Tune's fit() returns without an error on Ctrl-C, the seeds under way unfinished
        raise KeyboardInterrupt(f"seeds {unfinished} stopped by Ctrl-C before they finished")
    runs = {}
    for seed in cfg.seeds:
        seed_dir = run_dir / f"seed_{seed}"
        runs[seed] = {**json.loads((seed_dir / "summary.json").read_text()), "run_dir": seed_dir.name}
    summary = seeds_summary(runs, header)
    write_report(summary, run_dir / "report")
    return summary
