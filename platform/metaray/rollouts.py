"""Playing trials on RLlib EnvRunners: evaluation trials, task reseeding, runner placement.

Evaluation trial ``i`` of a split is always the same task with the same inner-env seed
(:meth:`metaray.tasks.TaskSplit.task_at` and ``trial_seed``), so the meta-policy, every
baseline and every later checkpoint are compared on exactly the same trials. The trials are
dealt out to the evaluation EnvRunners (one queue per vectorised env) and sampled with RLlib's
own ``EnvRunner.sample``; the trial env records each finished trial's per-episode returns.
"""

from __future__ import annotations

from typing import Any, Sequence

import ray

from metaray.statistics import adaptation_metrics
from metaray.tasks import SPLITS, Split
from metaray.trial import TRIAL_INFO_KEY, TrialRecord

#: Key of the adaptation report in RLlib's evaluation results.
ADAPTATION_KEY = "adaptation"


def evaluation_trials(split: Split, num_trials: int) -> list[tuple[Split, int]]:
    return [(split, i) for i in range(num_trials)]


def _sample_assigned_trials(env_runner, trials: Sequence[tuple[str, int]], explore: bool) -> list[TrialRecord]:
    """Runs on one EnvRunner: plays its share of trials, returns their records."""
    num_envs = env_runner.num_envs
    env_runner.env.unwrapped.set_attr("trial_queue", [list(trials[j::num_envs]) for j in range(num_envs)])
    wanted = set(trials)
    records: dict[tuple[str, int], TrialRecord] = {}
    while len(records) < len(wanted):
        episodes = env_runner.sample(num_episodes=len(wanted) - len(records), explore=explore)
        for episode in episodes:
            if not episode.is_done:
                continue
            record: TrialRecord = episode.get_infos(-1)[TRIAL_INFO_KEY]
            if (record.split, record.index) in wanted:
                records[(record.split, record.index)] = record
    env_runner.env.unwrapped.set_attr("trial_queue", [[] for _ in range(num_envs)])
    return [records[t] for t in trials]


def foreach_sampling_env_runner(env_runner_group, func):
    """Call ``func`` on the runners that sample: the remote ones, or the local one if none."""
    local_only = env_runner_group.num_remote_env_runners() == 0
    return env_runner_group.foreach_env_runner(func, local_env_runner=local_only)


def run_trials_on_env_runners(eval_group, trials: Sequence[tuple[str, int]], explore: bool) -> list[TrialRecord]:
    """Deal ``trials`` out to an EnvRunnerGroup's runners and collect their records in order."""
    num_shares = max(1, eval_group.num_remote_env_runners())
    trials = list(trials)

    def play_share(env_runner):
        share = trials[max(env_runner.worker_index - 1, 0) :: num_shares]
        return _sample_assigned_trials(env_runner, share, explore)

    shares = foreach_sampling_env_runner(eval_group, play_share)
    if len(shares) != num_shares:
        raise RuntimeError(f"evaluation got results from {len(shares)} of {num_shares} env runners")
    records = {(r.split, r.index): r for share in shares for r in share}
    return [records[t] for t in trials]


def play_meta_policy(algo, trials: Sequence[tuple[Split, int]], explore: bool) -> list[TrialRecord]:
    """Play the learner's current weights on the given trials with the evaluation EnvRunners."""
    eval_group = algo.eval_env_runner_group
    eval_group.sync_weights(from_worker_or_learner_group=algo.learner_group, inference_only=True)
    return run_trials_on_env_runners(eval_group, trials, explore)


def evaluate_meta_policy(algo, num_trials: int, explore: bool) -> tuple[dict[str, dict[str, Any]], int]:
    """Evaluate the learner's current weights on ``num_trials`` trials of each split.

    Returns the adaptation metrics by split and the env steps of the evaluated trials.
    """
    trials = [t for split in SPLITS[::-1] for t in evaluation_trials(split, num_trials)]
    records = play_meta_policy(algo, trials, explore)
    report = {split: adaptation_metrics([r for r in records if r.split == split]) for split in ("test", "train")}
    return report, sum(r.num_steps for r in records)


def reseed_task_samplers(env_runner_group, seed: int, iteration: int) -> None:
    """Give every training env a task RNG seeded from (seed, iteration, runner, env)."""
    def reseed(env_runner):
        seeds = [[seed, iteration, env_runner.worker_index, i] for i in range(env_runner.num_envs)]
        env_runner.env.unwrapped.set_attr("task_seed", seeds)

    foreach_sampling_env_runner(env_runner_group, reseed)


def env_runner_nodes(env_runner_group) -> list[str]:
    """Ray node id of every training env runner (the driver's node when sampling locally)."""
    return foreach_sampling_env_runner(env_runner_group, lambda _: ray.get_runtime_context().get_node_id())
