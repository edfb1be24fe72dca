"""Build the RLlib AlgorithmConfig of an :class:`~metaray.config.ExperimentConfig`.

Everything RLlib does well stays RLlib's: EnvRunners sample trials in parallel, Learners
(optionally several, on GPUs, with DDP) run PPO or APPO, evaluation EnvRunners play the held-out
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
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import EVALUATION_RESULTS

from metaray.config import ExperimentConfig
from metaray.models.policy import RecurrentMetaPolicy
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


#: ``training.algorithm`` name -> (the algorithm's empty config, its own ``.training()`` arguments).
AlgorithmSettings = Callable[[ExperimentConfig], tuple[AlgorithmConfig, dict[str, Any]]]
ALGORITHMS: Registry[AlgorithmSettings] = Registry("training.algorithm")


@ALGORITHMS.register("PPO")
def _ppo(cfg: ExperimentConfig) -> tuple[AlgorithmConfig, dict[str, Any]]:
    t = cfg.training
    return PPOConfig(), {"lambda_": t.lambda_, "clip_param": t.clip_param, "vf_clip_param": t.vf_clip_param}


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
    return appo, {"clip_param": t.clip_param}


def build_algorithm_config(cfg: ExperimentConfig) -> AlgorithmConfig:
    """The RLlib PPO or APPO config of an experiment (new API stack)."""
    t, runners, ev = cfg.training, cfg.env_runners, cfg.evaluation
    num_learners = max(cfg.learners.num_learners, 1)
    algorithm_config, algorithm_training = ALGORITHMS.get(t.algorithm)(cfg)
    return (
        algorithm_config
        .environment(TrialEnv, env_config=TrialEnv.env_config(cfg.task, cfg.seed))
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
        # The module rebuilds the typed ModelConfig from this dict (max_seq_len is RLlib's too).
        .rl_module(rl_module_spec=RLModuleSpec(module_class=RecurrentMetaPolicy,
                                               model_config=dataclasses.asdict(cfg.model)))
        .training(
            lr=t.lr,
            gamma=t.gamma,
            vf_loss_coeff=t.vf_loss_coeff,
            entropy_coeff=t.entropy_coeff,
            grad_clip=t.grad_clip,
            grad_clip_by="global_norm",
            train_batch_size_per_learner=t.train_batch_size // num_learners,
            minibatch_size=t.minibatch_size,
            num_epochs=t.num_epochs,
            **algorithm_training,
        )
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
