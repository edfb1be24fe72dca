"""Evaluation reports: the meta-policy and every baseline side by side, with uncertainty.

A report folder holds::

    summary.json          every number of the report (and the per-task or per-seed samples)
    report.md             what was evaluated and how (task family and parameters, checkpoint
                          env steps and wall time, seed, baselines' settings, bootstrap,
                          versions), then the tables: trial return (mean, IQM, 95% CIs), regret
                          against the family's declared reference and against the best baseline
                          with the probability of improvement, adaptation curve by episode
                          index, performance profile
    adaptation_curves.png mean return of the i-th episode of a trial, 95% confidence bands
    returns.png           distribution of trial return per task (one run) or per seed

Two kinds of summary feed :func:`write_report`: :func:`checkpoint_summary` (one checkpoint,
uncertainty across tasks, paired per-trial regret) and :func:`seeds_summary` (several training
seeds, uncertainty across seeds). Every interval, IQM, probability of improvement and
performance profile is rliable's (see :mod:`metaray.statistics`). Paths in a summary are
relative to the run folder: report folders get committed and shared.

Example:
    >>> from metaray.trial import TrialRecord
    >>> records = {
    ...     "meta-policy": [TrialRecord("test", i, (0.0, 1.0), None, 2) for i in range(4)],
    ...     "random": [TrialRecord("test", i, (0.5, 0.5), None, 2) for i in range(4)],
    ... }
    >>> summary = checkpoint_summary(records, {"name": "demo", "split": "test"})
    >>> summary["regret"]["reference"], summary["regret"]["mean"]
    ('random', 0.0)
"""

from __future__ import annotations

import importlib.metadata
import inspect
import json
import sys
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from metaray import __version__ as metaray_version
from metaray.config import ExperimentConfig
from metaray.figures import adaptation_figure, probe_figure, returns_figure, save_figure
from metaray.probe import CURVES, describe
from metaray.statistics import (
    BOOTSTRAP_RESAMPLES,
    CI_METHOD,
    across_seeds,
    adaptation_metrics,
    best_baseline,
    paired_regret,
    performance_profile,
    probability_of_improvement,
    sample_statistics,
)
from metaray.tasks import TaskFamily, load_family
from metaray.trial import TrialRecord

META_POLICY = "meta-policy"
ADAPTATION_PNG = "adaptation_curves.png"
RETURNS_PNG = "returns.png"
PROBE_PNG = "probe.png"
#: Summary key of the regret against the family's declared reference (``TaskFamily.reference_baseline``).
FAMILY_REFERENCE_REGRET = "regret_vs_family_reference"
#: Quantiles of all policies' pooled samples at which report.md tabulates the performance profile.
PROFILE_QUANTILES = (0.1, 0.25, 0.5, 0.75, 0.9)


def baseline_parameters(family: TaskFamily, episodes_per_trial: int,
                        names: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Each baseline's class and settings: the plain values (numbers, strings, tuples of them)
    its constructor stored, e.g. ``epsilon``; ``names`` None: every baseline of the family.

    Example:
        >>> baseline_parameters(load_family("bandit"), 10, ["epsilon_greedy"])
        {'epsilon_greedy': {'class': 'EpsilonGreedy', 'num_arms': 5, 'epsilon': 0.1}}
    """
    plain = (bool, int, float, str, np.integer, np.floating, type(None))
    factories = family.baselines(episodes_per_trial)
    described = {}
    for name in names if names is not None else factories:
        policy = factories[name]()
        settings = {key: np.asarray(value).tolist() for key, value in vars(policy).items()
                    if not key.startswith("_") and (isinstance(value, plain) or (
                        isinstance(value, tuple) and all(isinstance(v, plain) for v in value)))}
        described[name] = {"class": type(policy).__name__, **settings}
    return described


def software_versions() -> dict[str, str]:
    """Versions of Python and of the packages behind a report's numbers."""
    packages = {package: importlib.metadata.version(package) for package in ("ray", "torch", "numpy", "rliable")}
    return {"python": "%d.%d.%d" % sys.version_info[:3], **packages, "metaray": metaray_version}


def experiment_header(cfg: ExperimentConfig) -> dict[str, Any]:
    """What a report states so that it can be reproduced: the task family with every constructor
    parameter (defaults included), the trial settings, each baseline's settings, the family's
    declared regret reference and the software versions."""
    family = load_family(cfg.task.family, cfg.task.params)
    defaults = {name: p.default for name, p in inspect.signature(type(family)).parameters.items()
                if p.default is not inspect.Parameter.empty}
    return {
        "name": cfg.name,
        "family": cfg.task.family,
        "task": cfg.to_dict()["task"],
        "family_parameters": {**defaults, **cfg.task.params},
        "baseline_parameters": baseline_parameters(family, cfg.task.episodes_per_trial, cfg.evaluation.baselines),
        "reference_baseline": family.reference_baseline,
        "versions": software_versions(),
    }


def _regret_references(baselines: Mapping[str, Mapping[str, Any]], header: Mapping[str, Any]) -> dict[str, str]:
    """Summary key -> the baseline regret is measured against there: the best one on the
    evaluated trials, and the family's declared reference when it was evaluated."""
    references = {"regret": best_baseline(baselines)}
    if header.get("reference_baseline") in baselines:
        references[FAMILY_REFERENCE_REGRET] = header["reference_baseline"]
    return references


def _profile(samples: Mapping[str, Sequence[float]]) -> dict[str, Any]:
    pooled = np.concatenate([np.asarray(values, dtype=np.float64) for values in samples.values()])
    return performance_profile(samples, np.unique(np.quantile(pooled, PROFILE_QUANTILES)))


def checkpoint_summary(records: Mapping[str, Sequence[TrialRecord]], header: Mapping[str, Any]) -> dict[str, Any]:
    """Summary of one checkpoint: ``records[policy]`` are the same trials for every policy,
    ``records["meta-policy"]`` among them; ``header`` is copied in (name, split, ...).

    Regret is paired per trial, against the best baseline on these trials (``regret``) and,
    when ``header["reference_baseline"]`` names an evaluated baseline, against that one too
    (``regret_vs_family_reference``).
    """
    baselines = {name: adaptation_metrics(recs) for name, recs in records.items() if name != META_POLICY}
    samples = {name: [sum(r.episode_returns) for r in recs] for name, recs in records.items()}
    summary = {
        **header,
        "uncertainty": "across tasks",
        "ci_method": CI_METHOD,
        "bootstrap_resamples": BOOTSTRAP_RESAMPLES,
        "policies": {META_POLICY: adaptation_metrics(records[META_POLICY]), **baselines},
    }
    for key, reference in _regret_references(baselines, header).items():
        summary[key] = {"reference": reference, **paired_regret(records[META_POLICY], records[reference])}
    return {**summary, "performance_profile": _profile(samples), "samples": samples}


def seeds_summary(runs: Mapping[int, Mapping[str, Any]], header: Mapping[str, Any]) -> dict[str, Any]:
    """Summary across training seeds from each seed's run ``summary.json`` (``runs[seed]``).

    Every seed is one sample; its held-out evaluation and its baselines (on the same trials
    of that seed's split) give the per-seed means. Regret is per seed, against the best
    baseline and the family's declared reference (as in :func:`checkpoint_summary`), each
    with rliable's probability of improvement across seeds.
    """
    per_policy = {META_POLICY: [run["eval"]["test"] for run in runs.values()]}
    for name in next(iter(runs.values()))["baselines"]:
        per_policy[name] = [run["baselines"][name] for run in runs.values()]
    policies = {name: across_seeds(metrics) for name, metrics in per_policy.items()}
    references = _regret_references({name: m for name, m in policies.items() if name != META_POLICY}, header)
    samples = {name: [m["trial_return_mean"] for m in metrics] for name, metrics in per_policy.items()}
    summary = {**header, "uncertainty": "across seeds", "ci_method": CI_METHOD,
               "bootstrap_resamples": BOOTSTRAP_RESAMPLES, "policies": policies}
    for key, reference in references.items():
        summary[key] = {
            "reference": reference,
            **sample_statistics(np.subtract(samples[reference], samples[META_POLICY])),
            "probability_of_improvement": probability_of_improvement(samples[META_POLICY], samples[reference]),
        }
    best = references["regret"]
    summary["performance_profile"] = _profile(samples)
    summary["samples"] = samples
    summary["per_seed"] = {
        str(seed): {
            "run_dir": run["run_dir"],
            "env_steps": run["env_steps"],
            "wall_s": run["wall_s"],
            "held_out_trial_return_mean": run["eval"]["test"]["trial_return_mean"],
            "train_split_trial_return_mean": run["eval"]["train"]["trial_return_mean"],
            **{f"{name}_trial_return_mean": run["baselines"][name]["trial_return_mean"]
               for name in dict.fromkeys(references.values())},
            "regret": run["baselines"][best]["trial_return_mean"] - run["eval"]["test"]["trial_return_mean"],
        }
        for seed, run in runs.items()
    }
    return summary


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers a console line shows: each policy's mean trial return and the regrets."""
    line = {
        "split": summary["split"],
        "trial_return_mean": {name: round(m["trial_return_mean"], 4) for name, m in summary["policies"].items()},
        f"regret_vs_{summary['regret']['reference']}": round(summary["regret"]["mean"], 4),
        "regret_ci95": [round(x, 4) for x in summary["regret"]["ci95"]],
    }
    if FAMILY_REFERENCE_REGRET in summary:
        declared = summary[FAMILY_REFERENCE_REGRET]
        line[f"regret_vs_{declared['reference']}"] = round(declared["mean"], 4)
    return line


def fmt(value: float) -> str:
    """The one number format of report.md (tests read the tables back with it)."""
    return f"{value:.3f}"


def _interval(ci: Sequence[float]) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def _settings(values: Mapping[str, Any]) -> str:
    return ", ".join(f"{key}={value}" for key, value in values.items())


def _provenance(summary: Mapping[str, Any]) -> list[str]:
    """The report's header list: what was evaluated, on what, how, and with which software."""
    lines = []
    if "family_parameters" in summary:
        task = summary["task"]
        lines.append(f"- task family: {summary['family']} ({_settings(summary['family_parameters'])}); "
                     f"{task['episodes_per_trial']} episodes per trial, held-out fraction {task['test_fraction']}, "
                     f"reward scale {task['reward_scale']}")
    elif "family" in summary:
        lines.append(f"- task family: {summary['family']}")
    if "checkpoint" in summary:
        where = f"- checkpoint: {summary['checkpoint']}"
        if summary.get("run"):
            where += f" of run folder {summary['run']}"
        if summary.get("checkpoint_env_steps") is not None:
            where += (f" (iteration {summary['checkpoint_iteration']}, {summary['checkpoint_env_steps']:,} env steps, "
                      f"{summary['checkpoint_wall_s']:.1f} s training wall time)")
        lines.append(where)
    if "seed" in summary:
        lines.append(f"- seed: {summary['seed']} (task split, evaluation trials and baselines)")
    if "seeds" in summary:
        lines.append(f"- seeds: {summary['seeds']} (one training run each; env steps and wall time per seed below)")
    if "num_trials" in summary:
        per = " per seed" if "seeds" in summary else ""
        lines.append(f"- trials: {summary['num_trials']}{per} of the {summary['split']} split, "
                     "the same for every policy")
    if "explore" in summary:
        lines.append(f"- meta-policy actions: {'sampled' if summary['explore'] else 'deterministic, the mode or mean'} "
                     f"(evaluation.explore={summary['explore']})")
    if "baseline_parameters" in summary:
        described = [f"{name} ({params['class']}{': ' if len(params) > 1 else ''}"
                     f"{_settings({k: v for k, v in params.items() if k != 'class'})})"
                     for name, params in summary["baseline_parameters"].items()]
        lines.append(f"- baselines: {'; '.join(described)}")
    if "reference_baseline" in summary:
        declared = summary["reference_baseline"] or "none (the family declares no optimal or oracle baseline)"
        lines.append(f"- regret reference declared by the family: {declared}")
    lines.append(f"- uncertainty: {summary.get('ci_method', '95% bootstrap')} confidence intervals "
                 f"{summary['uncertainty']}, {summary.get('bootstrap_resamples', '?')} resamples; IQM is the mean "
                 "of the middle 50% (a quarter trimmed at each end)")
    if "versions" in summary:
        lines.append(f"- versions: {', '.join(f'{k} {v}' for k, v in summary['versions'].items())}")
    return lines


def _regret_section(title: str, regret: Mapping[str, Any], note: str, unit: str) -> list[str]:
    reference = regret["reference"]
    if unit == "across tasks":
        paired = "per-trial difference on the same trials"
        improvement = ("the share of trials on which the meta-policy's trial return beat the reference's (ties "
                       "count half): rliable's probability of improvement with each trial its own task")
    else:
        paired = "per-seed difference"
        improvement = ("rliable's probability of improvement: P(a seed's meta-policy mean > a seed's reference "
                       "mean), Mann-Whitney over every pair of seeds")
    poi = regret["probability_of_improvement"]
    lines = ["", f"## {title} ({reference})", "",
             f"Regret = {reference}'s trial return minus the meta-policy's ({paired}). {note} "
             f"P(improvement) is {improvement}.", ""]
    return lines + _table(
        ["reference", "mean", "95% CI", "IQM", "IQM 95% CI", "P(improvement)", "P 95% CI"],
        [[reference, fmt(regret["mean"]), _interval(regret["ci95"]), fmt(regret["iqm"]), _interval(regret["iqm_ci95"]),
          fmt(poi["probability"]), _interval(poi["ci95"])]])


def render_markdown(summary: Mapping[str, Any]) -> str:
    policies = summary["policies"]
    regret = summary["regret"]
    unit = summary["uncertainty"]
    lines = [f"# {summary['name']}: meta-policy vs baselines on the {summary['split']} split", ""]
    lines += _provenance(summary)
    lines += [
        "",
        "## Trial return",
        "",
    ]
    has_success = all("success_rate" in m for m in policies.values())
    header = ["policy", "mean", "95% CI", "IQM", "IQM 95% CI", "adaptation gain", "gain 95% CI"]
    header += ["success rate", "success 95% CI"] if has_success else []
    rows = []
    for name, m in policies.items():
        row = [name, fmt(m["trial_return_mean"]), _interval(m["trial_return_ci95"]), fmt(m["trial_return_iqm"]),
               _interval(m["trial_return_iqm_ci95"]), fmt(m["adaptation_gain"]), _interval(m["adaptation_gain_ci95"])]
        if has_success:
            row += [fmt(m["success_rate"]), _interval(m["success_rate_ci95"])]
        rows.append(row)
    lines += _table(header, rows)
    if FAMILY_REFERENCE_REGRET in summary:
        lines += _regret_section("Regret against the family's declared reference", summary[FAMILY_REFERENCE_REGRET],
                                 "The family declares it optimal for its task distribution or an oracle that "
                                 "knows the task (TaskFamily.reference_baseline).", unit)
    samples = "trials" if unit == "across tasks" else "seeds"
    lines += _regret_section("Regret against the best baseline on these trials", regret,
                             f"The best baseline is picked on these very {samples}, so a lucky one can top a better "
                             "one (greedy over Bayes-optimal on 300 bandit trials); trust the declared reference "
                             "above where the family has one.", unit)
    lines += ["", "## Adaptation curve: mean return of the i-th episode of a trial [95% CI]", ""]
    episodes = len(policies[META_POLICY]["return_by_episode"])
    rows = [[str(i + 1)] + [f"{fmt(m['return_by_episode'][i])} {_interval(m['return_by_episode_ci95'][i])}"
                            for m in policies.values()] for i in range(episodes)]
    lines += _table(["episode", *policies], rows)
    profile = summary["performance_profile"]
    measure = "trial return" if samples == "trials" else "mean trial return"
    lines += ["", f"## Performance profile: share of {samples} with {measure} above a threshold [95% CI]", "",
              f"Thresholds at the {', '.join(f'{q:.0%}' for q in PROFILE_QUANTILES)} quantiles of all policies' "
              f"pooled {samples} (rliable's performance profile).", ""]
    lines += _table(["threshold", *profile["fraction_above"]],
                    [[fmt(t)] + [f"{fmt(f[i])} {_interval(profile['fraction_above_ci95'][name][i])}"
                                 for name, f in profile["fraction_above"].items()]
                     for i, t in enumerate(profile["thresholds"])])
    if "per_seed" in summary:
        lines += ["", "## Per seed (held-out split; run folders relative to the multi-seed run folder)", ""]
        reference_key = f"{regret['reference']}_trial_return_mean"
        lines += _table(
            ["seed", "env steps", "wall (s)", META_POLICY, "training split", regret["reference"], "regret", "run"],
            [[seed, f"{s['env_steps']:,}", f"{s['wall_s']:.1f}", fmt(s["held_out_trial_return_mean"]),
              fmt(s["train_split_trial_return_mean"]), fmt(s[reference_key]), fmt(s["regret"]), s["run_dir"]]
             for seed, s in summary["per_seed"].items()],
        )
    if "probe" in summary:
        lines += probe_markdown(summary["probe"])
    lines += ["", f"![adaptation curves]({ADAPTATION_PNG})", "", f"![trial return distribution]({RETURNS_PNG})", ""]
    return "\n".join(lines)


def probe_markdown(probe: Mapping[str, Any]) -> list[str]:
    """The probe section: R² (accuracy for a discrete group) of decoding each feature group at
    the first step, the last step of every episode and the trial's last step (see
    :mod:`metaray.probe`)."""
    ends = [start - 1 for start in probe["episode_starts"][1:]] + [probe["steps"] - 1]
    steps = sorted({0, *ends})
    lines = ["", "## What the memory knows about the task (linear probe)", "",
             f"Linear probes from the recurrent state to the task's features, fitted on {probe['num_fit_trials']} "
             f"trials and scored on {probe['num_scored_trials']} others, at each step of the trial: ridge "
             "regressions scored by R² (share of the features' variance across tasks explained) and, for a "
             "discrete feature (a class label), logistic regressions scored by accuracy. Controls: the same probe "
             "on an untrained network's states on the same inputs, on the step's input alone (no memory), and the "
             "Bayes posterior (the most any memory can know), where the family declares it; for a discrete "
             "feature, chance (always the most frequent class of the fitting trials).", ""]
    for name, curves in probe["groups"].items():
        present = [key for key in CURVES if key in curves]
        lines += [f"**{name}** ({describe(curves)})", ""]
        lines += _table(["step", *present], [[str(t + 1), *(fmt(curves[key][t]) for key in present)] for t in steps])
        lines.append("")
    lines += [f"![probe]({PROBE_PNG})"]
    return lines


def write_report(summary: Mapping[str, Any], out_dir: Path) -> Path:
    """Write summary.json, report.md and the PNGs into ``out_dir``; returns report.md's path."""
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "summary.json").write_text(json.dumps(summary, indent=2))
    policies = summary["policies"]
    fig = adaptation_figure(
        {name: m["return_by_episode"] for name, m in policies.items()},
        f"{summary['name']}: adaptation on the {summary['split']} split (95% CI {summary['uncertainty']})",
        {name: m["return_by_episode_ci95"] for name, m in policies.items()},
    )
    save_figure(fig, out_dir / ADAPTATION_PNG)
    save_figure(returns_figure(summary["samples"], summary["uncertainty"]), out_dir / RETURNS_PNG)
    if "probe" in summary:
        save_figure(probe_figure(summary["probe"], f"{summary['name']}: what the memory knows about the task"),
                    out_dir / PROBE_PNG)
    report = out_dir / "report.md"
    report.write_text(render_markdown(summary))
    return report
