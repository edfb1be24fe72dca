"""Translate an :class:`~metaray.config.ExperimentConfig` into an RLlib AlgorithmConfig.

Everything RLlib does well stays RLlib's: EnvRunners sample trials in parallel, Learners
(optionally several, on GPUs, with DDP) run PPO or APPO, evaluation EnvRunners play the held-out
trials. metaray only adds the trial env, the recurrent module, per-episode-index metrics
and the paired evaluation function.
"""

from __future__ import annotations

import logging
import math
import warnings
from typing import Any

from ray.rllib.algorithms.algorithm_config import AlgorithmConfig
from ray.rllib.algorithms.appo import APPOConfig
from ray.rllib.algorithms.ppo import PPOConfig
from ray.rllib.callbacks.callbacks import RLlibCallback
from ray.rllib.core.rl_module.rl_module import RLModuleSpec
from ray.rllib.utils.annotations import override
from ray.rllib.utils.metrics import EVALUATION_RESULTS

from metaray.config import ConfigError, ExperimentConfig
from metaray.evaluation import ADAPTATION_KEY, evaluate_meta_policy
from metaray.models import RecurrentMetaPolicy
from metaray.tasks import load_family
from metaray.trial import TRIAL_INFO_KEY, TrialEnv

# RLlib re-registers its env under one id in every EnvRunner and warns about the new API stack
# on every build; neither says anything to a metaray user.
warnings.filterwarnings("ignore", message=".*Overriding environment rllib-single-agent-env")
logging.getLogger("ray.rllib.algorithms.algorithm_config").setLevel(logging.ERROR)

#: Key of the training-trial adaptation curve in the env-runner results.
TRAIN_RETURN_BY_EPISODE = "trial_return_by_episode"
#: Key of the count of training trials whose return was nan or inf, in the env-runner results.
NON_FINITE_TRIALS = "non_finite_trials"


def trial_env_config(cfg: ExperimentConfig, split: str = "train") -> dict[str, Any]:
    return {
        "family": cfg.task.family,
        "params": dict(cfg.task.params),
        "episodes_per_trial": cfg.task.episodes_per_trial,
        "test_fraction": cfg.task.test_fraction,
        "split_seed": cfg.seed,
        "split": split,
        "reward_scale": cfg.task.reward_scale,
    }


def check_family(cfg: ExperimentConfig) -> None:
    """Family-dependent config checks (import, params, baseline names), before Ray starts."""
    family = load_family(cfg.task.family, cfg.task.params)
    available = family.baselines(cfg.task.episodes_per_trial)
    for name in cfg.evaluation.baselines or ():
        if name not in available:
            raise ConfigError(
                f"evaluation.baselines: unknown baseline {name!r} for family "
                f"{cfg.task.family!r} (available: {', '.join(available)})"
            )


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
    num_trials = algo.config.evaluation_duration
    report = evaluate_meta_policy(algo, num_trials, explore=algo.evaluation_config.explore)
    algo.metrics.log_value((EVALUATION_RESULTS, ADAPTATION_KEY), report, reduce="item")
    steps = 2 * num_trials * algo.config.env_config["episodes_per_trial"]
    return {}, steps, steps


def _algorithm_training(cfg: ExperimentConfig) -> tuple[AlgorithmConfig, dict[str, Any]]:
    """The algorithm's empty config and its algorithm-specific ``.training()`` arguments."""
    t = cfg.training
    if t.algorithm == "APPO":
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
    return PPOConfig(), {"lambda_": t.lambda_, "clip_param": t.clip_param, "vf_clip_param": t.vf_clip_param}


def build_algorithm_config(cfg: ExperimentConfig) -> AlgorithmConfig:
    """The RLlib PPO or APPO config of an experiment (new API stack)."""
    t, runners, ev = cfg.training, cfg.env_runners, cfg.evaluation
    num_learners = max(cfg.learners.num_learners, 1)
    model_config = {
        "arch": cfg.model.arch,
        "hidden_size": cfg.model.hidden_size,
        "num_layers": cfg.model.num_layers,
        "num_heads": cfg.model.num_heads,
        "context_len": cfg.model.context_len,
        "encoder_layers": list(cfg.model.encoder_layers),
        "head_layers": list(cfg.model.head_layers),
        "separate_critic": cfg.model.separate_critic,
        "max_seq_len": cfg.model.max_seq_len,
    }
    algorithm_config, algorithm_training = _algorithm_training(cfg)
    return (
        algorithm_config
        .environment(TrialEnv, env_config=trial_env_config(cfg))
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
        .rl_module(rl_module_spec=RLModuleSpec(module_class=RecurrentMetaPolicy, model_config=model_config))
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
                env_config=trial_env_config(cfg, split="test"),
                num_envs_per_env_runner=ev.num_envs_per_env_runner,
                explore=ev.explore,
            ),
        )
        .callbacks(TrialMetricsCallback)
        .debugging(seed=cfg.seed, log_level="ERROR")
    )
