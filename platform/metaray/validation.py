"""Every check of an experiment before Ray starts, in one entry point that imports no RLlib.

:func:`metaray.config.load_config` checks types and the ranges declared beside each field;
:func:`check_experiment` adds what needs the task family or the memory core: the family keeps
the ``rng`` contract of ``sample_task``, one trial of its env through the trial wrapper keeps
Gymnasium's API and the env's declared spaces, and the model fits in memory.
:func:`check_resources` compares what the run asks Ray for with the nodes that will run it.
:func:`check_launch` is the one entry point ``launch.py`` calls: it checks the command line
(paths, checkpoint, run folder, cluster address) and then all of the above, so bad input ends
in one ``config error:`` line and exit code 2 before anything is started or written.

Example:
    >>> from metaray.config import load_config
    >>> check_experiment(load_config("configs/quickstart.yaml"))
    >>> check_experiment(load_config(None, ["model.arch=mamba"]))  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    ...
    metaray.config.ConfigError: model.arch must be one of ['gru', 'lstm', 'transformer'...] or MODULE:NAME ..., got 'mamba'
"""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch

from metaray.cluster import cluster_nodes, local_node_resources, resolve_address
from metaray.config import ConfigError, ExperimentConfig, ModelConfig, load_config
from metaray.models.cores import CORES, build_core
from metaray.plugins import module_file
from metaray.storage import (
    CONFIG_FILE, RunMirror, check_fresh_folder, check_storage, download_run, is_uri, latest_checkpoint,
    resolve_checkpoint,
)
from metaray.tasks import TaskFamily, load_family
from metaray.trial import FamilyEnvError, TrialEnv, exception_line

#: Bytes per parameter while learning: float32 weights, gradients and Adam's two moments.
TRAINING_BYTES_PER_PARAMETER = 16


def check_task_sampling(family: TaskFamily, name: str, draws: int = 8) -> None:
    """``sample_task`` draws only from the ``rng`` it is given: equal seeds give equal tasks.

    The train/held-out split, the evaluation trials and the baselines' paired trials are all
    seeded draws; a family that draws from anything else (Python's ``random``, a numpy RNG of
    its own) makes none of them reproducible and the paired comparison void.
    """
    sequences = []
    for _ in range(2):
        rng = np.random.default_rng(0)
        try:
            sequences.append([family.task_key(family.sample_task(rng)) for _ in range(draws)])
        except Exception as exc:
            raise ConfigError(f"task family {name!r}: sample_task raised {exception_line(exc)}") from None
    for first, second in zip(*sequences):
        if first != second:
            raise ConfigError(
                f"task family {name!r}: sample_task(rng) must draw only from the numpy Generator it is "
                "given, so that equal seeds give equal tasks (the train/held-out split and the paired "
                f"baseline trials depend on it); two generators seeded alike gave {_short(first)} "
                f"and {_short(second)}")


def _short(text: str, limit: int = 40) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def check_family(cfg: ExperimentConfig) -> None:
    """The family imports, takes ``task.params``, keeps the ``rng`` contract of ``sample_task``
    and has the baselines the config names."""
    family = load_family(cfg.task.family, cfg.task.params)
    check_task_sampling(family, cfg.task.family)
    available = family.baselines(cfg.task.episodes_per_trial)
    for name in cfg.evaluation.baselines or ():
        if name not in available:
            raise ConfigError(
                f"evaluation.baselines: unknown baseline {name!r} for family {cfg.task.family!r} with "
                f"task.episodes_per_trial={cfg.task.episodes_per_trial} (available: {', '.join(available)})"
            )


def check_model(cfg: ExperimentConfig) -> None:
    """``model.arch`` names a registered core, and the core accepts the model settings."""
    CORES.get(cfg.model.arch).check_config(cfg.model)


def check_trial(cfg: ExperimentConfig, max_steps: int = 1000) -> int:
    """Play one trial (at most ``max_steps`` steps) with random actions through the trial
    wrapper, checking every observation against the family env's observation space and
    every ``reset``/``step`` result against Gymnasium's API; returns the width of the trial
    input (what the model reads).

    A family env that raises or breaks its declared spaces would otherwise fail inside RLlib,
    whose traceback names neither the family nor the space.
    """
    try:
        env = TrialEnv(TrialEnv.env_config(cfg.task, cfg.seed), strict=True)
        try:
            env.action_space.seed(cfg.seed)
            env.reset(seed=cfg.seed)
            for _ in range(max_steps):
                if env.step(env.action_space.sample())[2]:
                    break
        finally:
            env.close()
    except FamilyEnvError as exc:
        raise ConfigError(str(exc)) from None
    return int(env.observation_space.shape[0])


def check_algorithm(cfg: ExperimentConfig) -> None:
    """The family's actions suit ``training.algorithm``: R2D2's Q-network has one output per
    action, so it needs a Discrete action space.

    >>> from metaray.config import load_config
    >>> check_algorithm(load_config(None, ["training.algorithm=R2D2", "task.family=point_nav"]))
    Traceback (most recent call last):
    ...
    metaray.config.ConfigError: training.algorithm R2D2 needs a Discrete action space (one Q-value per action), but task family 'point_nav' acts in Box(-1.0, 1.0, (2,), float32); train it with PPO or APPO
    """
    if cfg.training.algorithm != "R2D2":
        return
    env = load_family(cfg.task.family, cfg.task.params).make_env()
    try:
        space = env.action_space
    finally:
        env.close()
    if not isinstance(space, gym.spaces.Discrete):
        raise ConfigError(
            f"training.algorithm R2D2 needs a Discrete action space (one Q-value per action), but task "
            f"family {cfg.task.family!r} acts in {space}; train it with PPO or APPO")


def parameter_count(model: ModelConfig, in_size: int) -> int:
    """Parameters of the meta-policy's torsos (encoder MLP, memory core, head MLP; twice with
    ``separate_critic``) for trial inputs ``in_size`` wide: a lower bound of the module's size.

    The core is built on torch's meta device, which allocates no memory.

    >>> parameter_count(ModelConfig(hidden_size=4), in_size=2)  # GRU: 3 * (2*4 + 4*4 + 4 + 4)
    96
    """
    def mlp(size: int, widths: Sequence[int]) -> tuple[int, int]:
        count = 0
        for width in widths:
            count, size = count + size * width + width, width
        return count, size

    encoder, core_in = mlp(in_size, model.encoder_layers)
    with torch.device("meta"):
        core = build_core(core_in, model)
    head, _ = mlp(model.hidden_size, model.head_layers)
    torso = encoder + sum(p.numel() for p in core.parameters()) + head
    return torso * (2 if model.separate_critic else 1)


def available_memory() -> int:
    """Bytes of memory this machine (or its container) can still give a process."""
    from ray._private.utils import estimate_available_memory

    return int(estimate_available_memory())


def _bytes(amount: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if amount < 1000:
            return f"{amount:.1f} {unit}"
        amount /= 1000
    return f"{amount:.1f} PB"


def check_model_memory(cfg: ExperimentConfig, in_size: int, available: int) -> None:
    """The model fits in ``available`` bytes: weights, gradients and Adam moments when the
    driver learns (``learners.num_learners: 0``), else the driver's copy of the weights."""
    count = parameter_count(cfg.model, in_size)
    per_parameter = TRAINING_BYTES_PER_PARAMETER if cfg.learners.num_learners == 0 else 4
    needed = count * per_parameter
    if needed > available:
        m = cfg.model
        raise ConfigError(
            f"model: a {m.arch} with model.hidden_size={m.hidden_size}, model.num_layers={m.num_layers}, "
            f"encoder {m.encoder_layers} and head {m.head_layers} has at least {count:.3g} parameters, "
            f"{_bytes(needed)} to train ({per_parameter} bytes each), but this machine has "
            f"{_bytes(available)} of memory available")


def resource_requests(cfg: ExperimentConfig) -> list[tuple[str, int, dict[str, float]]]:
    """What the run asks Ray for at once, as RLlib reserves it: ``(config key, count,
    resources of each)``, entries with a count of 0 left out.

    >>> from metaray.config import load_config
    >>> resource_requests(load_config(None, ["env_runners.num_env_runners=3"]))
    [('env_runners.num_env_runners', 3, {'CPU': 1.0})]
    """
    runners = cfg.env_runners
    runner = {"CPU": runners.num_cpus_per_env_runner, **runners.custom_resources}
    learners = cfg.learners
    requests = [
        ("env_runners.num_env_runners", runners.num_env_runners, runner),
        ("evaluation.num_env_runners", cfg.evaluation.num_env_runners, runner),
        ("learners.num_learners", learners.num_learners,
         {"CPU": learners.num_cpus_per_learner, "GPU": learners.num_gpus_per_learner}),
    ]
    driver_gpus = learners.num_gpus_per_learner if learners.num_learners == 0 else 0.0
    if cfg.seeds:  # each seed's Ray Tune trial also reserves its driver, learner included
        requests.append(("seeds (each seed's driver)", 1,
                         {"CPU": max(learners.num_cpus_per_learner, 1), "GPU": driver_gpus}))
    elif driver_gpus:
        requests.append(("learners.num_gpus_per_learner (the driver's learner)", 1, {"GPU": driver_gpus}))
    return [(key, count, {name: float(amount) for name, amount in each.items() if amount > 0})
            for key, count, each in requests if count > 0]


def check_resources(cfg: ExperimentConfig, nodes: Sequence[Mapping[str, float]], where: str) -> None:
    """Refuse requests ``nodes`` (each node's total resources) can never satisfy: more of a
    resource than all nodes have together, or an actor larger than any one node.

    >>> from metaray.config import load_config
    >>> check_resources(load_config(None, ["env_runners.num_env_runners=1000"]), [{"CPU": 2}], "this machine")
    Traceback (most recent call last):
    ...
    metaray.config.ConfigError: the run asks Ray for 1000 CPU (env_runners.num_env_runners=1000 x 1 CPU) but this machine has 2 CPU
    """
    requests = resource_requests(cfg)
    for name in sorted({name for _, _, each in requests for name in each}):
        asked = [(key, count, each[name]) for key, count, each in requests if name in each]
        total_asked = sum(count * amount for _, count, amount in asked)
        total_have = sum(node.get(name, 0.0) for node in nodes)
        if total_asked > total_have + 1e-9:
            parts = " + ".join(f"{key}={count} x {amount:g} {name}" for key, count, amount in asked)
            raise ConfigError(f"the run asks Ray for {total_asked:g} {name} ({parts}) but {where} has "
                              f"{total_have:g} {name}")
    for key, count, each in requests:
        if not any(all(node.get(name, 0.0) >= amount for name, amount in each.items()) for node in nodes):
            wanted = ", ".join(f"{amount:g} {name}" for name, amount in each.items())
            raise ConfigError(f"each of {key}={count} asks Ray for {wanted} but no node of {where} has that much")


def check_experiment(cfg: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` naming the key of the first problem found."""
    check_model(cfg)
    check_family(cfg)
    in_size = check_trial(cfg)
    check_algorithm(cfg)
    check_model_memory(cfg, in_size, available_memory())


def check_cluster_fits(cfg: ExperimentConfig, address: str | None, num_cpus: int | None) -> None:
    """ConfigError, before Ray starts, when the run asks for more than the embedded local Ray
    (``address`` None) or the cluster at ``address`` has (see :func:`check_resources`). A Ray
    Client address is not checked."""
    if address is None:
        nodes = [local_node_resources(num_cpus)]
        where = "the embedded local Ray" + (f" (--num-cpus {num_cpus})" if num_cpus else " (this machine)")
    else:
        nodes = cluster_nodes(address)
        if nodes is None:
            return
        where = f"the cluster at {address} ({len(nodes)} node{'s' * (len(nodes) != 1)})"
    check_resources(cfg, nodes, where)


@dataclass(frozen=True)
class LaunchPlan:
    """What ``launch.py`` acts on once :func:`check_launch` found nothing wrong."""

    cfg: ExperimentConfig
    #: The Ray cluster to join, resolved (``auto`` made a GCS address); None starts an embedded local Ray.
    address: str | None
    #: ``--resume``: the local run folder to continue. Otherwise ``--run-dir``, checked to hold
    #: no run or report, or None for a new folder with a default name.
    run_dir: Path | None
    #: ``--resume URI``: the mirror the run folder (copied from it) is written back to.
    mirror: RunMirror | None = None
    #: ``--eval-only`` / ``--probe``: the checkpoint folder to evaluate (None when training).
    checkpoint: Path | None = None
    #: ``--eval-only`` / ``--probe``: trials per evaluation (``--trials`` or ``evaluation.final_num_trials``).
    num_trials: int | None = None


def check_launch(args: argparse.Namespace, local_runs: Path) -> LaunchPlan:
    """Every check of a ``launch.py`` command line before Ray starts, for training, ``--resume``
    and ``--eval-only`` / ``--probe``: ConfigError naming the first problem.

    It creates no run or report folder; the one thing it writes is the local copy of a
    ``--resume URI`` (into ``--run-dir``, default ``local_runs/<run name>``), whose config.yaml
    it must read. Before a run folder's config.yaml makes it import code, it prints which.
    Whether the checkpoint unpickles is only known once Ray runs (:class:`metaray.storage.CheckpointError`).

    >>> check_launch(argparse.Namespace(eval_only=True, probe=False, checkpoint=Path("runs/nowhere")), Path("runs"))
    Traceback (most recent call last):
    ...
    metaray.config.ConfigError: --checkpoint runs/nowhere: no such checkpoint
    """
    if args.eval_only or args.probe:
        return _check_evaluation(args)
    address = resolve_address(args.address, args.num_cpus)
    mirror = None
    if args.resume is not None:
        run_dir, mirror = _check_resume(args.resume, args.run_dir, local_runs)
        cfg = load_config(run_dir / CONFIG_FILE, args.overrides)
        announce_user_code(cfg, run_dir / CONFIG_FILE)
    else:
        if args.config is None:
            raise ConfigError("--config is required (or --resume RUN_DIR)")
        cfg, run_dir = load_config(args.config, args.overrides), args.run_dir
    check_experiment(cfg)
    check_cluster_fits(cfg, address, args.num_cpus)
    if args.resume is None:
        check_storage(args.storage)
        if run_dir is not None:
            check_fresh_folder(run_dir)
    return LaunchPlan(cfg, address, run_dir, mirror)


def _check_evaluation(args: argparse.Namespace) -> LaunchPlan:
    """``--eval-only`` / ``--probe``: the checkpoint, its config, ``--trials`` and the report folder."""
    if args.checkpoint is None or not args.checkpoint.exists():
        raise ConfigError(f"--checkpoint {args.checkpoint}: no such checkpoint")
    checkpoint = resolve_checkpoint(args.checkpoint)
    overrides = [*args.overrides, *(["evaluation.probe=true"] if args.probe else [])]
    config_path = args.config or checkpoint.parent.parent / CONFIG_FILE
    cfg = load_config(config_path, overrides)
    if args.config is None:
        announce_user_code(cfg, config_path)
    if args.trials is not None and args.trials <= 0:
        raise ConfigError(f"--trials must be > 0, got {args.trials}")
    if args.run_dir is not None:
        check_fresh_folder(args.run_dir, for_report=True)  # never overwrite a run's summary.json
    address = resolve_address(args.address, args.num_cpus)
    check_experiment(cfg)
    check_cluster_fits(cfg, address, args.num_cpus)
    return LaunchPlan(cfg, address, args.run_dir, checkpoint=checkpoint,
                      num_trials=args.trials or cfg.evaluation.final_num_trials)


def _check_resume(location: str, run_dir: Path | None, local_runs: Path) -> tuple[Path, RunMirror | None]:
    """The local run folder to continue (a URI is first copied to ``run_dir``) and its mirror."""
    if is_uri(location):
        run_dir = run_dir or local_runs / location.rstrip("/").rsplit("/", 1)[-1]
        download_run(location, run_dir)
        mirror = RunMirror(run_dir, location)
    else:
        run_dir, mirror = Path(location), None
    if not run_dir.is_dir():
        raise ConfigError(f"--resume {location}: no such run folder")
    if not (run_dir / CONFIG_FILE).is_file():
        raise ConfigError(f"--resume {location}: no config.yaml there, not a run folder")
    if latest_checkpoint(run_dir) is None:
        raise ConfigError(f"--resume {location}: no complete checkpoint under {run_dir / 'checkpoints'}; "
                          "start the run again without --resume")
    return run_dir, mirror


def announce_user_code(cfg: ExperimentConfig, config_path: Path) -> None:
    """Before a run folder's config.yaml makes us import code (its task family, its memory
    core) and unpickle its checkpoint, say what is about to run: load only what you trust."""
    for key, ref in (("task.family", cfg.task.family), ("model.arch", CORES.module_of(cfg.model.arch))):
        if ref:
            print(f"{key} from {config_path}: importing {module_file(ref, key, 'envs')} "
                  "(resume or evaluate only run folders you trust)", flush=True)
