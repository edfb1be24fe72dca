"""Every check of an experiment before Ray starts, in one entry point that imports no RLlib.

:func:`metaray.config.load_config` checks types and the ranges declared beside each field;
:func:`check_experiment` adds what needs the task family or the memory core. ``launch.py``
checks its own arguments and then calls both, so bad input ends in one ``config error:`` line
and exit code 2 before anything is started or written.

Example:
    >>> from metaray.config import load_config
    >>> check_experiment(load_config("configs/quickstart.yaml"))
    >>> check_experiment(load_config(None, ["model.arch=mamba"]))
    Traceback (most recent call last):
    ...
    metaray.config.ConfigError: model.arch must be one of ['gru', 'lstm', 'transformer'] or MODULE:NAME of a module that registers NAME, got 'mamba'
"""

from __future__ import annotations

from metaray.config import ConfigError, ExperimentConfig
from metaray.models.cores import CORES
from metaray.tasks import load_family


def check_family(cfg: ExperimentConfig) -> None:
    """The family imports, takes ``task.params`` and has the baselines the config names."""
    family = load_family(cfg.task.family, cfg.task.params)
    available = family.baselines(cfg.task.episodes_per_trial)
    for name in cfg.evaluation.baselines or ():
        if name not in available:
            raise ConfigError(
                f"evaluation.baselines: unknown baseline {name!r} for family "
                f"{cfg.task.family!r} (available: {', '.join(available)})"
            )


def check_model(cfg: ExperimentConfig) -> None:
    """``model.arch`` names a registered core, and the core accepts the model settings."""
    CORES.get(cfg.model.arch).check_config(cfg.model)


def check_experiment(cfg: ExperimentConfig) -> None:
    """Raise :class:`ConfigError` naming the key of the first problem found."""
    check_model(cfg)
    check_family(cfg)
