"""Typed experiment configuration: YAML in, validated dataclasses out.

Every option lives in one dataclass tree rooted at :class:`ExperimentConfig`. Each field's
``help`` metadata is what ``python launch.py --help`` prints, and its valid range is declared
beside it (``gt``, ``ge``, ``lt``, ``le``), so neither can drift from the field. Ray workers get
sections as plain dicts (:func:`dataclasses.asdict`) and rebuild them with :func:`from_dict`, so
a default is written once, here. :func:`metaray.validation.check_experiment` adds the checks
that need the task family or the memory core.

Example:
    >>> cfg = load_config(None, ["task.episodes_per_trial=5", "training.lr=1e-3"])
    >>> cfg.task.episodes_per_trial, cfg.training.lr
    (5, 0.001)
"""

from __future__ import annotations

import dataclasses
import math
import operator
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Mapping, Optional, TypeVar

import yaml


class _Loader(yaml.SafeLoader):
    """YAML 1.1 reads ``3e-4`` as a string; configs mean a float."""


_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(r"^[-+]?(?:[0-9][0-9_]*)(?:\.[0-9_]*)?[eE][-+]?[0-9]+$"),
    list("-+0123456789"),
)


def _parse_yaml(text: str) -> Any:
    return yaml.load(text, Loader=_Loader)


def _yaml_problem(exc: yaml.YAMLError) -> str:
    """One line: where the YAML broke and why (PyYAML's own message spans several)."""
    mark = getattr(exc, "problem_mark", None)
    where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
    return where + (getattr(exc, "problem", None) or str(exc).splitlines()[0])


T = TypeVar("T")


class ConfigError(ValueError):
    """A configuration problem, with the offending dotted key in the message."""


_BOUNDS = {"gt": (">", operator.gt), "ge": (">=", operator.ge), "lt": ("<", operator.lt), "le": ("<=", operator.le)}


def _help(text: str, *, gt: float | None = None, ge: float | None = None, lt: float | None = None,
          le: float | None = None, **kwargs: Any) -> Any:
    """A field with its ``--help`` text and its valid range (checked by :func:`load_config`)."""
    bounds = {name: bound for name, bound in (("gt", gt), ("ge", ge), ("lt", lt), ("le", le)) if bound is not None}
    return field(metadata={"help": text, "bounds": bounds}, **kwargs)


@dataclass
class PLRConfig:
    """Prioritized Level Replay settings (Jiang et al. 2021), used when task.curriculum is 'plr'."""

    replay_prob: float = _help(
        "Probability that a training trial replays a task of the pool rather than a fresh draw "
        "from the training split (once the pool holds a scored task). PLR's fixed replay "
        "schedule; 0.5 replays and explores in equal measure.",
        default=0.5, ge=0, le=1,
    )
    temperature: float = _help(
        "Rank temperature beta: a pool task of score rank r is replayed with weight "
        "(1/r)^(1/beta); smaller is greedier. PLR's default 0.1.",
        default=0.1, gt=0,
    )
    staleness_coef: float = _help(
        "Staleness mixing rho: replay probabilities are (1 - rho) * by score + rho * by trials "
        "since the task was last drawn, so old scores get refreshed. PLR's default 0.1.",
        default=0.1, ge=0, le=1,
    )
    capacity: int = _help(
        "Most scored tasks the pool holds; a newly scored task then evicts the lowest-scored one.",
        default=1000, gt=0,
    )


@dataclass
class TaskConfig:
    family: str = _help(
        "Task family: a module name in envs/ (e.g. 'bandit'), a dotted module path importable "
        "from the working directory (e.g. 'my_tasks.coin') or a file (e.g. 'my_tasks/coin.py').",
        default="bandit",
    )
    params: dict = _help("Keyword arguments of the family's constructor.", default_factory=dict)
    episodes_per_trial: int = _help(
        "Episodes of one task in a trial (K); the hidden state lives across them.", default=10, gt=0
    )
    test_fraction: float = _help(
        "Share of the task space held out for evaluation (families with a fixed split ignore it).",
        default=0.2, gt=0, lt=1,
    )
    reward_scale: float = _help(
        "Multiplier on rewards seen by the learner and the policy input (metrics stay raw).",
        default=1.0, gt=0,
    )
    curriculum: Literal["uniform", "plr"] = _help(
        "How training trials pick their task: 'uniform' draws each from the training split; "
        "'plr' (Prioritized Level Replay) replays tasks of high regret from a pool shared by "
        "all env runners, mixed with fresh draws (docs/curriculum.md). Evaluation never uses it.",
        default="uniform",
    )
    plr: PLRConfig = field(default_factory=PLRConfig)


@dataclass
class ModelConfig:
    arch: str = _help(
        "Memory core of the meta-policy: a registered name (built in: 'gru', 'lstm', and "
        "'transformer', causal over a sliding window of the last model.context_len steps) or "
        "'FILE.py:NAME' / 'module:NAME' for a core registered in your own module "
        "(docs/adding_a_memory_core.md).",
        default="gru",
    )
    hidden_size: int = _help("Width of the recurrent state (the transformer's model width).", default=256, gt=0)
    encoder_layers: list[int] = _help(
        "Widths of the MLP applied to the trial input before the recurrent core.",
        default_factory=list, gt=0,
    )
    head_layers: list[int] = _help(
        "Widths of the MLP between the recurrent core and the policy/value heads.",
        default_factory=list, gt=0,
    )
    separate_critic: bool = _help(
        "Give the value head its own encoder, memory core and head MLP instead of sharing the "
        "policy's (doubles the model's compute).",
        default=False,
    )
    max_seq_len: int = _help(
        "Steps per training sequence (truncated BPTT); trials longer than this are chunked "
        "and the chunk's initial recurrent state comes from sampling.",
        default=50, gt=0,
    )
    num_layers: int = _help("Stacked recurrent layers or transformer blocks.", default=1, gt=0)
    num_heads: int = _help("Attention heads (transformer only; must divide hidden_size).", default=4, gt=0)
    context_len: int = _help(
        "Past steps each step attends to (transformer only); the window slides, so trials "
        "may be longer.",
        default=32, gt=0,
    )


@dataclass
class R2D2Config:
    """Recurrent replay Q-learning (R2D2, Kapturowski et al. 2019, on RLlib's DQN), used when
    training.algorithm is 'R2D2'. An iteration samples training.train_batch_size env steps;
    lr, gamma and grad_clip are training's; the PPO keys (minibatch_size, num_epochs,
    lambda_, clip_param, vf_*, entropy_coeff) do not apply."""

    batch_size: int = _help(
        "Replayed env steps per gradient update: sequences of up to model.max_seq_len steps of "
        "one trial each, drawn uniformly from the replay buffer (RLlib counts a sequence as its "
        "length + 1).",
        default=512, gt=0,
    )
    replay_ratio: float = _help(
        "Replayed env steps per sampled env step (training intensity): higher learns more "
        "from each sampled trial and spends more learner time per env step.",
        default=4.0, gt=0,
    )
    replay_capacity: int = _help(
        "Env steps the replay buffer holds; the oldest whole trials are evicted first. RLlib's "
        "EpisodeReplayBuffer walks its step index for each evicted trial, so a full buffer samples "
        "slower, the more the larger it is (bandit, 100 k: about 3x); a capacity of at least "
        "training.total_env_steps never evicts.",
        default=100_000, gt=0,
    )
    learning_starts: int = _help("Env steps sampled before the first update.", default=5_000, ge=0)
    n_step: int = _help(
        "Steps of reward in each Q target before bootstrapping; targets stop at the end of "
        "the replayed sequence (the trial's last step is terminal, inner episodes' ends are not).",
        default=3, gt=0,
    )
    double_q: bool = _help(
        "Double Q-learning: the online network picks the bootstrap action, the target network values it.",
        default=True,
    )
    dueling: bool = _help("Dueling heads: Q = V + A - mean(A).", default=True)
    target_update_period: int = _help(
        "Gradient updates between copies of the online network into the target network "
        "(R2D2: 2500); RLlib counts it in sampled env steps, period * batch_size / replay_ratio.",
        default=100, gt=0,
    )
    epsilon: float = _help(
        "Ape-X exploration: env i of the N envs of all env runners acts epsilon-greedily with "
        "epsilon^(1 + epsilon_alpha * i / (N - 1)), fixed over training. Evaluation acts "
        "greedily unless evaluation.explore.",
        default=0.4, ge=0, le=1,
    )
    epsilon_alpha: float = _help("Spread of the Ape-X exploration rates (0: every env uses epsilon).",
                                 default=7.0, ge=0)
    burn_in_len: int = _help(
        "Steps at the start of each replayed sequence that only refresh its stored recurrent "
        "state (no loss, no gradient); must be < model.max_seq_len.",
        default=0, ge=0,
    )
    replay_in_checkpoints: bool = _help(
        "Save the replay buffer in every checkpoint, so that --resume learns from the same "
        "replay; otherwise a resumed run starts learning again from an almost empty buffer. "
        "Costs disk: about 0.75 KB per stored env step with model.hidden_size 128 (measured: "
        "30 MB for 40 k bandit steps).",
        default=True,
    )


@dataclass
class TrainingConfig:
    algorithm: Literal["PPO", "APPO", "R2D2"] = _help(
        "RLlib algorithm that trains the meta-policy: 'PPO' (synchronous), 'APPO' "
        "(V-trace off-policy correction; samples asynchronously with remote env runners and "
        "learns asynchronously with remote learners) or 'R2D2' (recurrent Q-learning from "
        "sequence replay, RLlib's DQN; discrete actions; settings in training.r2d2).",
        default="PPO",
    )
    total_env_steps: int = _help("Stop after this many sampled env steps.", default=1_000_000, gt=0, le=10**13)
    train_batch_size: int = _help("Env steps per training iteration (whole trials).", default=10_000, gt=0)
    minibatch_size: int = _help("Env steps per SGD minibatch.", default=2_000, gt=0)
    num_epochs: int = _help("SGD passes over each training batch.", default=4, gt=0)
    lr: float = _help("Adam learning rate.", default=3e-4, gt=0)
    gamma: float = _help("Discount within a trial (1.0 = undiscounted trial return).", default=0.99, ge=0, le=1)
    lambda_: float = _help("GAE lambda (PPO; APPO uses V-trace).", default=0.95, ge=0, le=1)
    clip_param: float = _help("PPO policy clip range.", default=0.2, gt=0)
    vf_loss_coeff: float = _help("Weight of the value loss.", default=0.5, ge=0)
    vf_clip_param: float = _help("Value-loss clip range (in return units; PPO only).", default=10.0, gt=0)
    entropy_coeff: float = _help("Weight of the entropy bonus.", default=0.01, ge=0)
    grad_clip: Optional[float] = _help("Global gradient-norm clip; null disables.", default=1.0, gt=0)
    r2d2: R2D2Config = field(default_factory=R2D2Config)


@dataclass
class EnvRunnersConfig:
    num_env_runners: int = _help(
        "Remote sampling actors; 0 samples in the driver process (serial/debug mode).", default=0, ge=0
    )
    num_envs_per_env_runner: int = _help("Vectorised trial envs per runner.", default=64, gt=0)
    num_cpus_per_env_runner: float = _help("CPUs Ray reserves per env runner.", default=1.0, ge=0)
    whole_trials: bool = _help(
        "Sample whole trials only (RLlib batch_mode 'complete_episodes'; PPO only), so every "
        "training sequence starts at a trial's first step and, with model.max_seq_len >= the "
        "trial length, gradients reach from the last episode back to the first. Otherwise "
        "runners sample fixed-length fragments that may cut a trial anywhere.",
        default=False,
    )
    custom_resources: dict = _help(
        "Custom Ray resources each env runner requires, e.g. {spot_cpu: 1} to place runners "
        "on the nodes that advertise them.",
        default_factory=dict,
    )
    restart_failed: bool = _help(
        "Restart an env runner whose actor died or whose env raised, and keep training "
        "(restarts are logged as fault/env_runner_restarts).",
        default=True,
    )
    max_restarts: int = _help("Env runner restarts allowed over the whole run.", default=100, ge=0)
    restart_delay_s: float = _help(
        "Seconds a failed env runner waits before it exits to be restarted (lets its logs drain).",
        default=1.0, ge=0,
    )


@dataclass
class LearnersConfig:
    num_learners: int = _help("Remote learner actors (DDP); 0 learns in the driver.", default=0, ge=0)
    num_gpus_per_learner: float = _help("GPUs per learner (0 for CPU).", default=0.0, ge=0)
    num_cpus_per_learner: int = _help(
        "CPUs (torch threads) per learner, the driver's local learner included; more threads "
        "than free cores make OpenMP spin-wait against the env runners.",
        default=1, gt=0,
    )


@dataclass
class EvaluationConfig:
    interval: int = _help("Evaluate every this many training iterations (and once at the end).", default=10, gt=0)
    num_trials: int = _help("Held-out (and training-split) trials per periodic evaluation.", default=200, gt=0)
    final_num_trials: int = _help("Trials per split in the final evaluation.", default=1000, gt=0)
    num_env_runners: int = _help("Remote evaluation actors; 0 evaluates in the driver.", default=0, ge=0)
    num_envs_per_env_runner: int = _help("Vectorised trial envs per evaluation runner.", default=64, gt=0)
    explore: bool = _help(
        "Sample actions during evaluation (True) or act greedily (False).", default=False
    )
    baselines: Optional[list[str]] = _help(
        "Family baselines to run on the evaluation trials; null runs all the family has.",
        default=None,
    )
    probe: bool = _help(
        "At every evaluation, also fit the task-inference probe on the held-out trials' "
        "recurrent states (decodability of the task along the trial; docs/probing_memory.md).",
        default=False,
    )


@dataclass
class ExperimentConfig:
    name: str = _help("Run name; the run folder is runs/<name>-<timestamp> by default.", default="metaray")
    seed: int = _help("Seeds the task split, samplers and network initialisation.", default=0, ge=0)
    seeds: Optional[list[int]] = _help(
        "Train one run per seed (in place of `seed`) as Ray Tune trials and write an aggregate "
        "report across them; null trains `seed` alone.",
        default=None, ge=0,
    )
    checkpoint_interval: int = _help("Checkpoint every this many iterations (0: only at the end).", default=10, ge=0)
    task: TaskConfig = field(default_factory=TaskConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    training: TrainingConfig = field(default_factory=TrainingConfig)
    env_runners: EnvRunnersConfig = field(default_factory=EnvRunnersConfig)
    learners: LearnersConfig = field(default_factory=LearnersConfig)
    evaluation: EvaluationConfig = field(default_factory=EvaluationConfig)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def _bound_problem(value: Any, bounds: dict[str, float]) -> str | None:
    """Why ``value`` breaks its declared range (or is not finite), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return "must be a finite number"
    if {"gt", "lt"} <= bounds.keys() and not bounds["gt"] < value < bounds["lt"]:
        return f"must be in ({bounds['gt']:g}, {bounds['lt']:g})"
    if {"ge", "le"} <= bounds.keys() and not bounds["ge"] <= value <= bounds["le"]:
        return f"must be in [{bounds['ge']:g}, {bounds['le']:g}]"
    for name, bound in bounds.items():
        symbol, holds = _BOUNDS[name]
        if not holds(value, bound):
            return f"must be {symbol} {bound:g}"
    return None


def _check_ranges(section: Any, prefix: str = "") -> None:
    """Every field against the range declared beside it; lists element by element."""
    for f in dataclasses.fields(section):
        value, key = getattr(section, f.name), f"{prefix}{f.name}"
        if dataclasses.is_dataclass(value):
            _check_ranges(value, f"{key}.")
            continue
        values = value if isinstance(value, list) else [value]
        for item in values:
            if isinstance(item, (int, float)) and not isinstance(item, bool):
                problem = _bound_problem(item, f.metadata.get("bounds", {}))
                if problem:
                    raise ConfigError(f"{key} {problem}, got {value}")


def _check_value(cfg: ExperimentConfig) -> None:
    """Declared ranges, then the cross-field checks; the message names the offending key."""
    _check_ranges(cfg)
    # R2D2 has no minibatches of the sampled batch (it replays training.r2d2.batch_size steps).
    if cfg.training.algorithm != "R2D2" and cfg.training.minibatch_size > cfg.training.train_batch_size:
        raise ConfigError(
            f"training.minibatch_size ({cfg.training.minibatch_size}) must not exceed "
            f"training.train_batch_size ({cfg.training.train_batch_size})"
        )
    if cfg.seeds is not None and (not cfg.seeds or len(set(cfg.seeds)) != len(cfg.seeds)):
        raise ConfigError(f"seeds must be a non-empty list of distinct integers or null, got {cfg.seeds}")
    for resource, amount in cfg.env_runners.custom_resources.items():
        if isinstance(amount, bool) or not isinstance(amount, (int, float)) or not 0 < amount < math.inf:
            raise ConfigError(f"env_runners.custom_resources.{resource} must be a number > 0, got {amount!r}")
    if cfg.env_runners.whole_trials and cfg.training.algorithm != "PPO":
        reason = ("R2D2 replays sequences of model.max_seq_len steps from stored states, "
                  "whatever the sampling") if cfg.training.algorithm == "R2D2" else (
                  "APPO builds its minibatches from fixed-length rollout fragments")
        raise ConfigError(
            f"env_runners.whole_trials needs training.algorithm PPO, got {cfg.training.algorithm!r} ({reason})"
        )
    if cfg.training.algorithm == "R2D2":
        _check_r2d2(cfg)
    if not cfg.name or "/" in cfg.name:
        raise ConfigError(f"name must be a non-empty string without '/', got {cfg.name!r}")


def _check_r2d2(cfg: ExperimentConfig) -> None:
    """What R2D2's sequence replay needs of the model settings."""
    r2d2, model = cfg.training.r2d2, cfg.model
    if r2d2.burn_in_len >= model.max_seq_len:
        raise ConfigError(
            f"training.r2d2.burn_in_len ({r2d2.burn_in_len}) must be < model.max_seq_len ({model.max_seq_len}): "
            "a replayed sequence needs steps after its burn-in to learn from")
    if model.separate_critic:
        raise ConfigError("model.separate_critic needs an actor-critic algorithm (PPO, APPO); "
                          "R2D2's Q-network has no separate value network")


def _coerce(value: Any, annotation: Any, key: str) -> Any:
    """Return ``value`` as ``annotation`` or raise a ConfigError naming ``key``."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        (inner,) = [a for a in args if a is not type(None)]
        return _coerce(value, inner, key)
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key} must be one of {list(args)}, got {value!r}")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key} must be a list, got {type(value).__name__} {value!r}")
        return [_coerce(v, args[0], f"{key}[{i}]") for i, v in enumerate(value)]
    if annotation is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key} must be a mapping, got {type(value).__name__} {value!r}")
        return value
    if dataclasses.is_dataclass(annotation):
        return _build(annotation, value, key)
    if annotation is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    if annotation is bool and not isinstance(value, bool):
        raise ConfigError(f"{key} must be true or false, got {value!r}")
    if annotation is int and isinstance(value, bool):
        raise ConfigError(f"{key} must be an integer, got {value!r}")
    if not isinstance(value, annotation):
        raise ConfigError(f"{key} must be {annotation.__name__}, got {type(value).__name__} {value!r}")
    return value


def from_dict(cls: type[T], data: Mapping[str, Any], ignore_unknown: bool = False) -> T:
    """Rebuild a config section from its :func:`dataclasses.asdict` form (as Ray workers get it).

    Missing keys take the dataclass defaults, so no reader restates one; ``ignore_unknown``
    drops keys that are not fields (RLlib adds its own to a module's model config).

    Example:
        >>> from_dict(TaskConfig, {"family": "bandit", "episodes_per_trial": 5}).episodes_per_trial
        5
    """
    if ignore_unknown:
        names = {f.name for f in dataclasses.fields(cls)}
        data = {key: value for key, value in data.items() if key in names}
    return _build(cls, dict(data))


def _build(cls: type, data: Any, prefix: str = "") -> Any:
    if not isinstance(data, dict):
        raise ConfigError(f"{prefix or 'config'} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    for key in data:
        if key not in names:
            where = f"{prefix}.{key}" if prefix else key
            raise ConfigError(f"unknown config key '{where}' (valid: {', '.join(sorted(names))})")
    kwargs = {
        key: _coerce(value, hints[key], f"{prefix}.{key}" if prefix else key)
        for key, value in data.items()
    }
    return cls(**kwargs)


def _set_dotted(data: dict, assignment: str) -> None:
    key, sep, raw = assignment.partition("=")
    if not sep or not key:
        raise ConfigError(f"--set expects dotted.key=value, got {assignment!r}")
    try:
        value = _parse_yaml(raw) if raw else ""
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {key}: value {raw!r} is not valid YAML ({_yaml_problem(exc)})") from None
    node = data
    *parents, leaf = key.split(".")
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: '{part}' is not a section")
    node[leaf] = value


def load_config(path: Optional[str | Path], overrides: list[str] = ()) -> ExperimentConfig:
    """Read a YAML config, apply ``dotted.key=value`` overrides, check types and ranges."""
    data: Any = {}
    if path is not None:
        path = Path(path)
        if not path.is_file():
            raise ConfigError(f"config file not found: {path}")
        try:
            data = _parse_yaml(path.read_text())
        except yaml.YAMLError as exc:
            raise ConfigError(f"{path} is not valid YAML ({_yaml_problem(exc)})") from None
        if data is None:
            raise ConfigError(f"{path} is empty; a config names at least task.family (see configs/)")
        if not isinstance(data, dict):
            raise ConfigError(f"{path} must hold a mapping at the top level")
    for assignment in overrides:
        _set_dotted(data, assignment)
    cfg = _build(ExperimentConfig, data)
    _check_value(cfg)
    return cfg


def describe_options(cls: type = ExperimentConfig, prefix: str = "") -> list[str]:
    """One help line per config key: ``key (type, default): help``."""
    lines = []
    hints = typing.get_type_hints(cls)
    default = cls()
    for f in dataclasses.fields(cls):
        key = f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hints[f.name]):
            lines.extend(describe_options(hints[f.name], f"{key}."))
            continue
        type_name = getattr(hints[f.name], "__name__", None) or str(hints[f.name]).replace("typing.", "")
        bounds = "".join(f", {_BOUNDS[name][0]} {bound:g}" for name, bound in f.metadata.get("bounds", {}).items())
        lines.append(f"  {key} ({type_name}{bounds}, default {getattr(default, f.name)!r}): {f.metadata['help']}")
    return lines
