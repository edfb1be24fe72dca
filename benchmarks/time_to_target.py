#!/usr/bin/env python
"""Env steps and wall time until the held-out mean trial return reaches a target.

Trains metaray on an experiment config (default ``configs/bandit.yaml``, 5-armed bandits,
10 pulls per trial) and, in the same run on the same machine, the plain RLlib baseline of
``benchmarks/plain_rllib.py`` with the same PPO settings, env runners and seed. After every
``--eval-every`` training iterations each system is scored on the same ``--eval-trials``
held-out trials (same arm probabilities and reward seeds; greedy actions unless the config's
``evaluation.explore`` says otherwise). A system stops when its held-out mean reaches
``--target`` (6.6 = Gittins index in RL² Table 1) or when it has sampled ``--max-env-steps``.
Wall time counts training only, not the evaluations.

How to run::

    python benchmarks/time_to_target.py                              # the full comparison
    python benchmarks/time_to_target.py --max-env-steps 100000       # a bounded look
    python benchmarks/time_to_target.py --config configs/quickstart.yaml --set model.arch=lstm

Results: one line per evaluation on stdout, then a table in
``benchmarks/results/time_to_target.md`` (learning curves in ``time_to_target.json``).
What to expect: with the tuned ``configs/bandit.yaml`` metaray should cross 6.6 within its
``training.total_env_steps``; the plain baseline sees the same inputs (previous action and
reward) without the inner-episode flag, so it can learn the same policy; the comparison
shows whether the trial machinery changes sample efficiency. A system that does not reach
the target within the budget is reported as "not reached" with its best held-out return.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import ray  # noqa: E402
from ray import cloudpickle  # noqa: E402
from ray.rllib.algorithms.algorithm_config import AlgorithmConfig  # noqa: E402

import plain_rllib  # noqa: E402
from metaray.rllib_config import build_algorithm_config  # noqa: E402
from metaray.cluster import init_ray  # noqa: E402
from metaray.config import ConfigError, ExperimentConfig, load_config  # noqa: E402
from metaray.rollouts import evaluation_trials, play_meta_policy  # noqa: E402
from metaray.statistics import adaptation_metrics  # noqa: E402
from metaray.tasks import TaskSplit  # noqa: E402
from metaray.validation import check_experiment  # noqa: E402
from plain_rllib import TRIAL_INDEX_KEY, plain_ppo_config  # noqa: E402

cloudpickle.register_pickle_by_value(plain_rllib)  # Ray workers cannot import benchmarks/

RESULTS = ROOT / "benchmarks" / "results"
NEVER = 10**12  # an evaluation interval RLlib never reaches: we evaluate between iterations


def evaluate_metaray(algo, num_trials: int, explore: bool) -> float:
    records = play_meta_policy(algo, evaluation_trials("test", num_trials), explore)
    return adaptation_metrics(records)["trial_return_mean"]


def evaluate_plain(algo, trials: list[tuple[int, list[float], int]], explore: bool) -> float:
    # RLlib syncs evaluation runners only for its own evaluations, which never run here.
    algo.eval_env_runner_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    runner = algo.eval_env_runner
    num_envs = runner.num_envs
    runner.env.unwrapped.set_attr("trial_queue", [list(trials[j::num_envs]) for j in range(num_envs)])
    returns: dict[int, float] = {}
    episodes = runner.sample(num_episodes=len(trials), explore=explore, force_reset=True)
    for episode in episodes:
        if episode.is_done and (index := episode.get_infos(-1)[TRIAL_INDEX_KEY]) >= 0:
            returns[index] = episode.get_return()
    runner.env.unwrapped.set_attr("trial_queue", [[] for _ in range(num_envs)])
    if len(returns) != len(trials):
        raise RuntimeError(f"plain evaluation finished {len(returns)} of {len(trials)} held-out trials")
    return sum(returns.values()) / len(returns)


def held_out_bandit_trials(cfg: ExperimentConfig, num_trials: int) -> list[tuple[int, list[float], int]]:
    """The metaray evaluation's held-out trials as (index, arm probabilities, seed)."""
    split = TaskSplit.from_config(cfg.task, cfg.seed)
    return [(i, split.task_at("test", i).tolist(), split.trial_seed("test", i)) for i in range(num_trials)]


def run_to_target(name: str, algo, evaluate, args) -> dict:
    """Train until ``evaluate()`` reaches the target or the step budget runs out."""
    steps, iteration, train_s, curve = 0, 0, 0.0, []
    reached = None
    while steps < args.max_env_steps:
        start = time.perf_counter()
        steps += algo.train()["env_runners"]["num_env_steps_sampled"]
        train_s += time.perf_counter() - start
        iteration += 1
        if iteration % args.eval_every and steps < args.max_env_steps:
            continue
        held_out = evaluate()
        curve.append({"env_steps": steps, "train_wall_s": round(train_s, 2), "held_out": held_out})
        print(f"{name:8s} iter {iteration:4d} | {steps:>10,} env steps | {train_s:7.1f} s | "
              f"held-out {held_out:.3f}", flush=True)
        if held_out >= args.target:
            reached = curve[-1]
            break
    algo.stop()
    return {"reached": reached, "best_held_out": max(p["held_out"] for p in curve), "curve": curve,
            "env_steps": steps, "train_wall_s": round(train_s, 2)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", type=Path, default=ROOT / "configs" / "bandit.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="override a metaray config key (the baseline copies the PPO settings)")
    parser.add_argument("--target", type=float, default=6.6)
    parser.add_argument("--max-env-steps", type=int, help="budget per system (default: training.total_env_steps)")
    parser.add_argument("--eval-every", type=int, default=2, help="training iterations between evaluations")
    parser.add_argument("--eval-trials", type=int, default=500)
    parser.add_argument("--systems", nargs="+", default=["metaray", "plain"], choices=["metaray", "plain"])
    parser.add_argument("--num-cpus", type=int)
    parser.add_argument("--out", type=Path, default=RESULTS / "time_to_target")
    args = parser.parse_args(argv)
    try:
        cfg = load_config(args.config, [*args.overrides, f"evaluation.interval={NEVER}"])
        check_experiment(cfg)
        if cfg.task.family != "bandit" or cfg.training.algorithm != "PPO":
            raise ConfigError("the plain baseline exists for task.family=bandit with training.algorithm=PPO")
    except ConfigError as exc:
        print(f"config error: {exc}", file=sys.stderr)
        return 2
    args.max_env_steps = args.max_env_steps or cfg.training.total_env_steps

    init_ray(cfg, num_cpus=args.num_cpus)
    metaray_config = build_algorithm_config(cfg)
    explore = cfg.evaluation.explore
    results = {}
    for system in args.systems:
        if system == "metaray":
            algo = metaray_config.build_algo()
            results[system] = run_to_target(system, algo, lambda: evaluate_metaray(algo, args.eval_trials, explore), args)
        else:
            plain = plain_ppo_config(metaray_config, num_arms=cfg.task.params.get("num_arms", 5),
                                     pulls=cfg.task.episodes_per_trial, hidden_size=cfg.model.hidden_size)
            plain.evaluation(evaluation_interval=NEVER, evaluation_num_env_runners=0,
                             evaluation_config=AlgorithmConfig.overrides(
                                 num_envs_per_env_runner=cfg.evaluation.num_envs_per_env_runner, explore=explore))
            trials = held_out_bandit_trials(cfg, args.eval_trials)
            algo = plain.build_algo()
            results[system] = run_to_target(system, algo, lambda: evaluate_plain(algo, trials, explore), args)
    ray.shutdown()

    lines = [
        f"# Time to held-out mean trial return {args.target}\n",
        f"Command: `python benchmarks/time_to_target.py {' '.join(sys.argv[1:] if argv is None else argv)}`  ",
        f"Config: {args.config.name} ({cfg.model.arch} {cfg.model.hidden_size} for metaray, RLlib LSTM "
        f"{cfg.model.hidden_size} for plain), {args.eval_trials} held-out trials per evaluation, budget "
        f"{args.max_env_steps:,} env steps per system.\n",
        "| system | reached | env steps | train wall s | best held-out |",
        "|---|---|---|---|---|",
    ]
    for system, r in results.items():
        hit = r["reached"]
        lines.append(f"| {system} | {'yes' if hit else 'not reached'} | "
                     f"{(hit or r)['env_steps']:,} | {(hit or r)['train_wall_s']} | {r['best_held_out']:.3f} |")
    text = "\n".join(lines) + "\n"
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"target": args.target, "results": results}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
