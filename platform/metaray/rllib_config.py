"""Build the RLlib AlgorithmConfig of an :class:`~metaray.config.ExperimentConfig`.

Everything RLlib does well stays RLlib's: EnvRunners sample trials in parallel, Learners
(optionally several, on GPUs, with DDP) run PPO, APPO or R2D2 (RLlib's DQN with a recurrent
Q-network, :mod:`metaray.models.q_policy`), evaluation EnvRunners play the held-out
trials. metaray only adds the trial env, the recurrent module, per-episode-index metrics
and the paired evaluation function. Algorithms are found by ``training.algorithm`` name in
:data:`ALGORITHMS`; each entry turns the experiment into the algorithm's own settings.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import warnings
from typing import Any, Callable

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.dqn import DQNConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import EVALUATION_RESULTS

from metaray.config import ExperimentConfig
from metaray.models.policy import RecurrentMetaPolicy
from metaray.models.q_policy import N_STEP_KEY, R2D2, R2D2_KEY, R2D2Learner, RecurrentQPolicy, assign_exploration_rates
from metaray.plugins import Registry
from metaray.rollouts import ADAPTATION_KEY, evaluate_meta_policy
from metaray.trial import TRIAL_INFO_KEY, TrialEnv

# RLlib re-registers its env under one id in every EnvRunner and warns about the new API stack
# on every build; neither says anything to a metaray user.
warnings.filterwarnings("ignore", message=".*Overriding environment rllib-single-agent-env")
logging.getLogger("ray.rllib.algorithms.algorithm_config").setLevel(logging.ERROR)

#: Key of the training-trial adaptation curve in the env-runner results.
TRAIN_RETURN_BY_EPISODE = "trial_return_by_episode"
#: Key of the count of training trials whose return was nan or inf, in the env-runner results.
NON_FINITE_TRIALS = "non_finite_trials"


class TrialMetricsCallback(RLlibCallback):
    """Logs the training trials' mean return per inner-episode index (the adaptation curve)
    and counts trials with a non-finite return, which the training loop refuses to learn on."""

    @override(RLlibCallback)
    def on_episode_end(self, *, episode, metrics_logger, **kwargs) -> None:
        record = episode.get_infos(-1).get(TRIAL_INFO_KEY)
        if record is None:
            return
        non_finite = not math.isfinite(sum(record.episode_returns))
        metrics_logger.log_value(NON_FINITE_TRIALS, int(non_finite), reduce="sum")
        for i, ret in enumerate(record.episode_returns):
            metrics_logger.log_value((TRAIN_RETURN_BY_EPISODE, f"{i:03d}"), ret, window=1000)


def periodic_evaluation(algo, eval_env_runner_group) -> tuple[dict, int, int]:
    """RLlib ``custom_evaluation_function``: paired held-out and training-split trials."""
    report, env_steps = evaluate_meta_policy(algo, algo.config.evaluation_duration,
                                             explore=algo.evaluation_config.explore)
    algo.metrics.log_value((EVALUATION_RESULTS, ADAPTATION_KEY), report, reduce="item")
    return {}, env_steps, env_steps


#: ``training.algorithm`` name -> (the algorithm's empty config, its own ``.training()`` arguments,
#: which override the shared ones of :func:`build_algorithm_config`).
AlgorithmSettings = Callable[[ExperimentConfig], tuple[AlgorithmConfig, dict[str, Any]]]
ALGORITHMS: Registry[AlgorithmSettings] = Registry("training.algorithm")


def _actor_critic_training(cfg: ExperimentConfig) -> dict[str, Any]:
    t = cfg.training
    return {"vf_loss_coeff": t.vf_loss_coeff, "entropy_coeff": t.entropy_coeff,
            "minibatch_size": t.minibatch_size, "num_epochs": t.num_epochs}


@ALGORITHMS.register("PPO")
def _ppo(cfg: ExperimentConfig) -> tuple[AlgorithmConfig, dict[str, Any]]:
    t = cfg.training
    return PPOConfig(), {"lambda_": t.lambda_, "clip_param": t.clip_param, "vf_clip_param": t.vf_clip_param,
                         **_actor_critic_training(cfg)}


@ALGORITHMS.register("APPO")
def _appo(cfg: ExperimentConfig) -> tuple[AlgorithmConfig, dict[str, Any]]:
    t = cfg.training
    # An iteration samples at least one train batch, as with PPO (RLlib's default is at
    # least 10 seconds). One sample() call of a runner about fills one learner's batch,
    # so every learner gets episodes even when the driver samples alone, and RLlib needs
    # minibatches made of whole rollout fragments.
    per_learner = t.train_batch_size // max(cfg.learners.num_learners, 1)
    longest = max(1, per_learner // cfg.env_runners.num_envs_per_env_runner)
    fragment = max(n for n in range(1, longest + 1) if t.minibatch_size % n == 0)
    appo = (
        APPOConfig()
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=t.train_batch_size)
        .env_runners(rollout_fragment_length=fragment)
    )
    return appo, {"clip_param": t.clip_param, **_actor_critic_training(cfg)}


@ALGORITHMS.register("R2D2")
def _r2d2(cfg: ExperimentConfig) -> tuple[AlgorithmConfig, dict[str, Any]]:
    t, r2d2, runners = cfg.training, cfg.training.r2d2, cfg.env_runners
    sampling_runners = max(runners.num_env_runners, 1)
    # One sampling round of every runner brings about the env steps that one update replays
    # at the replay ratio, so an update follows each round. RLlib's own ratio counts the
    # driver's runner beside remote ones, which on the new API stack does not sample.
    envs = sampling_runners * runners.num_envs_per_env_runner
    fragment = max(1, round(r2d2.batch_size / (r2d2.replay_ratio * envs)))
    intensity = r2d2.replay_ratio * (runners.num_env_runners + 1) / sampling_runners
    dqn = (
        DQNConfig(algo_class=R2D2)
        .env_runners(rollout_fragment_length=fragment)
        .reporting(min_time_s_per_iteration=0, min_sample_timesteps_per_iteration=t.train_batch_size)
        # RLlib's DQN replays sequences of the model's max_seq_len when the module is stateful.
        .rl_module(model_config={"max_seq_len": cfg.model.max_seq_len})
        .learners(learner_config_dict={N_STEP_KEY: r2d2.n_step})
        .callbacks(on_episode_created=assign_exploration_rates)
    )
    return dqn, {
        "learner_class": R2D2Learner,
        "train_batch_size_per_learner": r2d2.batch_size // max(cfg.learners.num_learners, 1),
        "replay_buffer_config": {"type": "EpisodeReplayBuffer", "capacity": r2d2.replay_capacity},
        "store_buffer_in_checkpoints": r2d2.replay_in_checkpoints,
        "num_steps_sampled_before_learning_starts": r2d2.learning_starts,
        "training_intensity": intensity,
        "n_step": 1,  # RLlib samples sequences with 1-step transitions; R2D2Learner builds n-step targets
        "double_q": r2d2.double_q,
        "dueling": r2d2.dueling,
        "target_network_update_freq": max(1, round(r2d2.target_update_period * r2d2.batch_size / r2d2.replay_ratio)),
        "tau": 1.0,
        "burn_in_len": r2d2.burn_in_len,
    }


def meta_policy_spec(cfg: ExperimentConfig) -> RLModuleSpec:
    """The meta-policy module: a recurrent Q-network for R2D2, the actor-critic otherwise.
    The module rebuilds the typed ModelConfig from its dict (max_seq_len is RLlib's too)."""
    model_config = dataclasses.asdict(cfg.model)
    if cfg.training.algorithm != "R2D2":
        return RLModuleSpec(module_class=RecurrentMetaPolicy, model_config=model_config)
    return RLModuleSpec(module_class=RecurrentQPolicy,
                        model_config={**model_config, R2D2_KEY: dataclasses.asdict(cfg.training.r2d2)})


def build_algorithm_config(cfg: ExperimentConfig, task_pool: str | None = None) -> AlgorithmConfig:
    """The RLlib config of an experiment (new API stack).

    ``task_pool`` names the run's task pool actor (``task.curriculum: plr``, started by
    :func:`metaray.curriculum.start_task_pool`); the training envs then draw their tasks from it,
    without one they draw uniformly. Evaluation envs never get it.
    """
    t, runners, ev = cfg.training, cfg.env_runners, cfg.evaluation
    num_learners = max(cfg.learners.num_learners, 1)
    algorithm_config, algorithm_training = ALGORITHMS.get(t.algorithm)(cfg)
    return (
        algorithm_config
        .environment(TrialEnv, env_config=TrialEnv.env_config(cfg.task, cfg.seed, task_pool=task_pool))
        .env_runners(
            num_env_runners=runners.num_env_runners,
            num_envs_per_env_runner=runners.num_envs_per_env_runner,
            num_cpus_per_env_runner=runners.num_cpus_per_env_runner,
            custom_resources_per_env_runner=dict(runners.custom_resources),
            batch_mode="complete_episodes" if runners.whole_trials else "truncate_episodes",
        )
        .fault_tolerance(
            restart_failed_env_runners=runners.restart_failed,
            max_num_env_runner_restarts=runners.max_restarts,
            delay_between_env_runner_restarts_s=runners.restart_delay_s,
        )
        .learners(
            num_learners=cfg.learners.num_learners,
            num_gpus_per_learner=cfg.learners.num_gpus_per_learner,
            num_cpus_per_learner=cfg.learners.num_cpus_per_learner,
        )
        .rl_module(rl_module_spec=meta_policy_spec(cfg))
        .training(**{
            "lr": t.lr,
            "gamma": t.gamma,
            "grad_clip": t.grad_clip,
            "grad_clip_by": "global_norm",
            "train_batch_size_per_learner": t.train_batch_size // num_learners,
            **algorithm_training,
        })
        .evaluation(
            evaluation_interval=ev.interval,
            evaluation_duration=ev.num_trials,
            evaluation_duration_unit="episodes",
            evaluation_num_env_runners=ev.num_env_runners,
            custom_evaluation_function=periodic_evaluation,
            evaluation_config=AlgorithmConfig.overrides(
                env_config=TrialEnv.env_config(cfg.task, cfg.seed, split="test"),
                num_envs_per_env_runner=ev.num_envs_per_env_runner,
                explore=ev.explore,
            ),
        )
        .callbacks(TrialMetricsCallback)
        .debugging(seed=cfg.seed, log_level="ERROR")
    )
