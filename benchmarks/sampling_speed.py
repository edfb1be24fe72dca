#!/usr/bin/env python
"""Sampling cost of a task family on one core: raw trial-env steps/s and RLlib EnvRunner steps/s.

``raw`` steps the :class:`~metaray.trial.TrialEnv` with random actions (the simulator plus the
trial wrapper); ``env_runner`` is what training pays per core: one in-process RLlib
SingleAgentEnvRunner sampling with the config's recurrent meta-policy (forward passes and
connectors included). Run it on an idle machine: the numbers scale with free CPU.

Example:
    python benchmarks/sampling_speed.py --config configs/halfcheetah_vel.yaml --steps 5000
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from metaray.rllib_config import build_algorithm_config  # noqa: E402
from metaray.config import load_config  # noqa: E402
from metaray.trial import TrialEnv  # noqa: E402


def raw_steps_per_s(env_config: dict, steps: int) -> float:
    env = TrialEnv(env_config)
    env.action_space.seed(0)
    env.reset(seed=0)
    start = time.perf_counter()
    for _ in range(steps):
        if env.step(env.action_space.sample())[2]:
            env.reset()
    return steps / (time.perf_counter() - start)


def env_runner_steps_per_s(cfg, steps: int) -> float:
    from ray.rllib.env.single_agent_env_runner import SingleAgentEnvRunner

    runner = SingleAgentEnvRunner(config=build_algorithm_config(cfg))
    runner.sample(num_timesteps=min(steps, 500), explore=True)  # warm-up: env creation, first trials
    start = time.perf_counter()
    sampled = sum(len(e) for e in runner.sample(num_timesteps=steps, explore=True, force_reset=True))
    elapsed = time.perf_counter() - start
    runner.stop()
    return sampled / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--steps", type=int, default=5000)
    args = parser.parse_args()
    cfg = load_config(args.config, args.overrides)
    print(json.dumps({
        "config": args.config,
        "family": cfg.task.family,
        "params": cfg.task.params,
        "num_envs_per_env_runner": cfg.env_runners.num_envs_per_env_runner,
        "raw_trial_env_steps_per_s": round(raw_steps_per_s(TrialEnv.env_config(cfg.task, cfg.seed), args.steps), 1),
        "env_runner_steps_per_s_per_core": round(env_runner_steps_per_s(cfg, args.steps), 1),
    }))


if __name__ == "__main__":
    main()
