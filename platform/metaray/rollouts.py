"""Playing trials on RLlib EnvRunners: evaluation trials, task reseeding, runner placement.

Evaluation trial ``i`` of a split is always the same task with the same inner-env seed
(:meth:`metaray.tasks.TaskSplit.task_at` and ``trial_seed``), so the meta-policy, every
baseline and every later checkpoint are compared on exactly the same trials. The trials are
dealt out to the evaluation EnvRunners (one queue per vectorised env) and sampled with RLlib's
own ``EnvRunner.sample``; the trial env records each finished trial's per-episode returns.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np
import ray
import torch
from ray.rllib.core.columns import Columns

from metaray.statistics import adaptation_metrics
from metaray.tasks import SPLITS, Split
from metaray.config import ExperimentConfig
from metaray.trial import TRIAL_INFO_KEY, TrialEnv, TrialRecord, TrialTrace

#: Key of the adaptation report in RLlib's evaluation results.
ADAPTATION_KEY = "adaptation"


def evaluation_trials(split: Split, num_trials: int) -> list[tuple[Split, int]]:
    return [(split, i) for i in range(num_trials)]


def _trace(episode, record: TrialRecord) -> TrialTrace:
    """The per-step memory, inputs, actions and rewards of a finished trial's episode."""
    state = episode.get_extra_model_outputs(Columns.STATE_OUT)
    memory = np.concatenate([np.asarray(state[k]).reshape(len(episode), -1) for k in sorted(state)], axis=1)
    return TrialTrace(record.split, record.index, memory.astype(np.float32),
                      np.asarray(episode.get_observations()[:-1]), np.asarray(episode.get_actions()),
                      np.asarray(episode.get_rewards(), dtype=np.float64))


def _sample_assigned_trials(env_runner, trials: Sequence[tuple[str, int]], explore: bool,
                            traces: bool) -> list[tuple[TrialRecord, TrialTrace | None]]:
    """Runs on one EnvRunner: plays its share of trials, returns their records (and traces)."""
    num_envs = env_runner.num_envs
    env_runner.env.unwrapped.set_attr("trial_queue", [list(trials[j::num_envs]) for j in range(num_envs)])
    wanted = set(trials)
    played: dict[tuple[str, int], tuple[TrialRecord, TrialTrace | None]] = {}
    while len(played) < len(wanted):
        episodes = env_runner.sample(num_episodes=len(wanted) - len(played), explore=explore)
        for episode in episodes:
            if not episode.is_done:
                continue
            record: TrialRecord = episode.get_infos(-1)[TRIAL_INFO_KEY]
            if (record.split, record.index) in wanted:
                played[(record.split, record.index)] = (record, _trace(episode, record) if traces else None)
    env_runner.env.unwrapped.set_attr("trial_queue", [[] for _ in range(num_envs)])
    return [played[t] for t in trials]


def foreach_sampling_env_runner(env_runner_group, func):
    """Call ``func`` on the runners that sample: the remote ones, or the local one if none."""
    local_only = env_runner_group.num_remote_env_runners() == 0
    return env_runner_group.foreach_env_runner(func, local_env_runner=local_only)


def run_trials_on_env_runners(eval_group, trials: Sequence[tuple[str, int]], explore: bool,
                              traces: bool = False) -> list[tuple[TrialRecord, TrialTrace | None]]:
    """Deal ``trials`` out to an EnvRunnerGroup's runners and collect, in order, each trial's
    record and (with ``traces``) its :class:`TrialTrace`."""
    num_shares = max(1, eval_group.num_remote_env_runners())
    trials = list(trials)

    def play_share(env_runner):
        share = trials[max(env_runner.worker_index - 1, 0) :: num_shares]
        return _sample_assigned_trials(env_runner, share, explore, traces)

    shares = foreach_sampling_env_runner(eval_group, play_share)
    if len(shares) != num_shares:
        raise RuntimeError(f"evaluation got results from {len(shares)} of {num_shares} env runners")
    played = {(record.split, record.index): (record, trace) for share in shares for record, trace in share}
    return [played[t] for t in trials]


def play_meta_policy(algo, trials: Sequence[tuple[Split, int]], explore: bool) -> list[TrialRecord]:
    """Play the learner's current weights on the given trials with the evaluation EnvRunners."""
    return [record for record, _ in play_and_trace(algo, trials, explore, traces=False)]


def play_and_trace(algo, trials: Sequence[tuple[Split, int]], explore: bool,
                   traces: bool = True) -> list[tuple[TrialRecord, TrialTrace | None]]:
    """:func:`play_meta_policy` that also returns each trial's step-by-step trace."""
    eval_group = algo.eval_env_runner_group
    eval_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    return run_trials_on_env_runners(eval_group, trials, explore, traces)


def evaluate_meta_policy(algo, num_trials: int, explore: bool) -> tuple[dict[str, dict[str, Any]], int]:
    """Evaluate the learner's current weights on ``num_trials`` trials of each split.

    Returns the adaptation metrics by split and the env steps of the evaluated trials.
    """
    trials = [t for split in SPLITS[::-1] for t in evaluation_trials(split, num_trials)]
    records = play_meta_policy(algo, trials, explore)
    report = {split: adaptation_metrics([r for r in records if r.split == split]) for split in ("test", "train")}
    return report, sum(r.num_steps for r in records)


def untrained_memory(cfg: ExperimentConfig, traces: Sequence[TrialTrace]) -> list[np.ndarray]:
    """The recurrent states that the run's initial network (seeded as training seeds it)
    would have had on the traced trials' inputs: the probe's untrained control."""
    from metaray.rllib_config import build_algorithm_config

    torch.manual_seed(cfg.seed)
    algo_config = build_algorithm_config(cfg)
    module = algo_config.get_rl_module_spec(env=TrialEnv(algo_config.env_config)).build()
    length = min(len(t.trial_obs) for t in traces)
    obs = torch.from_numpy(np.stack([t.trial_obs[:length] for t in traces]).astype(np.float32))
    return list(module.memory_trace(obs).numpy())


def reseed_task_samplers(env_runner_group, seed: int, iteration: int) -> None:
    """Give every training env a task RNG seeded from (seed, iteration, runner, env)."""
    def reseed(env_runner):
        seeds = [[seed, iteration, env_runner.worker_index, i] for i in range(env_runner.num_envs)]
        env_runner.env.unwrapped.set_attr("task_seed", seeds)

    foreach_sampling_env_runner(env_runner_group, reseed)


def env_runner_nodes(env_runner_group) -> list[str]:
    """Ray node id of every training env runner (the driver's node when sampling locally)."""
    return foreach_sampling_env_runner(env_runner_group, lambda _: ray.get_runtime_context().get_node_id())
