"""Evaluation reports: the meta-policy and every baseline side by side, with uncertainty.

A report folder holds::

    summary.json          every number of the report (and the per-task or per-seed samples)
    report.md             the tables: trial return (mean, IQM, 95% CIs), regret against the
                          best baseline, adaptation curve by episode index
    adaptation_curves.png mean return of the i-th episode of a trial, 95% confidence bands
    returns.png           distribution of trial return per task (one run) or per seed

Two kinds of summary feed :func:`write_report`: :func:`checkpoint_summary` (one checkpoint,
uncertainty across tasks, paired per-trial regret) and :func:`seeds_summary` (several training
seeds, uncertainty across seeds).

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

import json
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from metaray.figures import adaptation_figure, returns_figure, save_figure
from metaray.statistics import across_seeds, adaptation_metrics, best_baseline, paired_regret, sample_statistics
from metaray.trial import TrialRecord

META_POLICY = "meta-policy"
ADAPTATION_PNG = "adaptation_curves.png"
RETURNS_PNG = "returns.png"


def checkpoint_summary(records: Mapping[str, Sequence[TrialRecord]], header: Mapping[str, Any]) -> dict[str, Any]:
    """Summary of one checkpoint: ``records[policy]`` are the same trials for every policy,
    ``records["meta-policy"]`` among them; ``header`` is copied in (name, split, ...)."""
    baselines = {name: adaptation_metrics(recs) for name, recs in records.items() if name != META_POLICY}
    reference = best_baseline(baselines)
    return {
        **header,
        "uncertainty": "across tasks",
        "policies": {META_POLICY: adaptation_metrics(records[META_POLICY]), **baselines},
        "regret": {"reference": reference, **paired_regret(records[META_POLICY], records[reference])},
        "samples": {name: [sum(r.episode_returns) for r in recs] for name, recs in records.items()},
    }


def seeds_summary(runs: Mapping[int, Mapping[str, Any]], header: Mapping[str, Any]) -> dict[str, Any]:
    """Summary across training seeds from each seed's run ``summary.json`` (``runs[seed]``).

    Every seed is one sample; its held-out evaluation and its baselines (on the same trials
    of that seed's split) give the per-seed means.
    """
    per_policy = {META_POLICY: [run["eval"]["test"] for run in runs.values()]}
    for name in next(iter(runs.values()))["baselines"]:
        per_policy[name] = [run["baselines"][name] for run in runs.values()]
    policies = {name: across_seeds(metrics) for name, metrics in per_policy.items()}
    reference = best_baseline({name: m for name, m in policies.items() if name != META_POLICY})
    samples = {name: [m["trial_return_mean"] for m in metrics] for name, metrics in per_policy.items()}
    regrets = np.subtract(samples[reference], samples[META_POLICY])
    return {
        **header,
        "uncertainty": "across seeds",
        "policies": policies,
        "regret": {"reference": reference, **sample_statistics(regrets)},
        "samples": samples,
        "per_seed": {
            str(seed): {
                "run_dir": run["run_dir"],
                "held_out_trial_return_mean": run["eval"]["test"]["trial_return_mean"],
                "train_split_trial_return_mean": run["eval"]["train"]["trial_return_mean"],
                f"{reference}_trial_return_mean": run["baselines"][reference]["trial_return_mean"],
                "regret": float(regret),
            }
            for (seed, run), regret in zip(runs.items(), regrets)
        },
    }


def headline(summary: Mapping[str, Any]) -> dict[str, Any]:
    """The few numbers a console line shows: each policy's mean trial return and the regret."""
    return {
        "split": summary["split"],
        "trial_return_mean": {name: round(m["trial_return_mean"], 4) for name, m in summary["policies"].items()},
        f"regret_vs_{summary['regret']['reference']}": round(summary["regret"]["mean"], 4),
        "regret_ci95": [round(x, 4) for x in summary["regret"]["ci95"]],
    }


def fmt(value: float) -> str:
    """The one number format of report.md (tests read the tables back with it)."""
    return f"{value:.3f}"


def _interval(ci: Sequence[float]) -> str:
    return f"[{fmt(ci[0])}, {fmt(ci[1])}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)] + ["| " + " | ".join(r) + " |" for r in rows]


def render_markdown(summary: Mapping[str, Any]) -> str:
    policies = summary["policies"]
    regret = summary["regret"]
    unit = summary["uncertainty"]
    lines = [f"# {summary['name']}: meta-policy vs baselines on the {summary['split']} split", ""]
    lines += [f"- {key}: {summary[key]}" for key in ("family", "checkpoint", "seeds", "num_trials", "explore")
              if key in summary]
    lines += [
        f"- uncertainty: 95% percentile-bootstrap confidence intervals {unit}; IQM is the mean of the "
        "middle 50% (a quarter trimmed at each end)",
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
    paired = "per-trial difference on the same trials" if unit == "across tasks" else "per-seed difference"
    lines += [
        "",
        f"## Regret against the best baseline ({regret['reference']})",
        "",
        f"Regret = {regret['reference']}'s trial return minus the meta-policy's ({paired}).",
        "",
    ]
    lines += _table(["reference", "mean", "95% CI", "IQM", "IQM 95% CI"],
                    [[regret["reference"], fmt(regret["mean"]), _interval(regret["ci95"]), fmt(regret["iqm"]),
                      _interval(regret["iqm_ci95"])]])
    lines += ["", "## Adaptation curve: mean return of the i-th episode of a trial [95% CI]", ""]
    episodes = len(policies[META_POLICY]["return_by_episode"])
    rows = [[str(i + 1)] + [f"{fmt(m['return_by_episode'][i])} {_interval(m['return_by_episode_ci95'][i])}"
                            for m in policies.values()] for i in range(episodes)]
    lines += _table(["episode", *policies], rows)
    if "per_seed" in summary:
        lines += ["", "## Per seed (held-out split)", ""]
        reference_key = f"{regret['reference']}_trial_return_mean"
        lines += _table(
            ["seed", META_POLICY, "training split", regret["reference"], "regret", "run"],
            [[seed, fmt(s["held_out_trial_return_mean"]), fmt(s["train_split_trial_return_mean"]),
              fmt(s[reference_key]), fmt(s["regret"]), s["run_dir"]] for seed, s in summary["per_seed"].items()],
        )
    lines += ["", f"![adaptation curves]({ADAPTATION_PNG})", "", f"![trial return distribution]({RETURNS_PNG})", ""]
    return "\n".join(lines)


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
    report = out_dir / "report.md"
    report.write_text(render_markdown(summary))
    return report
