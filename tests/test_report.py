"""Evaluation reports end to end: --eval-only on a trained checkpoint, several seeds through
Ray Tune, and a live TensorBoard server reading the run (tiny budgets, one shared Ray)."""

from __future__ import annotations

import importlib.metadata
import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

from rliable import library as rly
from rliable import metrics as rly_metrics

import launch
from conftest import ROOT, free_port, tiny_run_args
from metaray.checkpoint_eval import checkpoint_header
from metaray.config import ExperimentConfig, from_dict
from metaray.statistics import (
    BOOTSTRAP_RESAMPLES,
    across_seeds,
    adaptation_metrics,
    paired_regret,
    performance_profile,
    probability_of_improvement,
    sample_statistics,
)
from metaray.report import (
    ADAPTATION_PNG,
    FAMILY_REFERENCE_REGRET,
    META_POLICY,
    RETURNS_PNG,
    checkpoint_summary,
    experiment_header,
    render_markdown,
    seeds_summary,
)
from metaray.trial import TrialRecord

TINY = tiny_run_args(total_env_steps=1000, final_num_trials=40)
NUMBER = re.compile(r"-?\d+\.\d+")


def _records(returns, successes=None):
    return [TrialRecord("test", i, tuple(r), None if successes is None else tuple(successes[i]), len(r))
            for i, r in enumerate(returns)]


def test_metrics_iqm_ci_success_and_determinism():
    rng = np.random.default_rng(0)
    returns = rng.random((200, 4))
    returns[0] = 100.0  # one outlier task moves the mean, hardly the IQM
    successes = returns > 0.5
    metrics = adaptation_metrics(_records(returns, successes))
    trial_returns = returns.sum(axis=1)
    assert metrics["trial_return_iqm"] == pytest.approx(np.sort(trial_returns)[50:150].mean())
    assert metrics["trial_return_iqm"] < metrics["trial_return_mean"]
    for key in ("trial_return_ci95", "trial_return_iqm_ci95", "adaptation_gain_ci95", "success_rate_ci95"):
        low, high = metrics[key]
        assert low < high, key
    assert metrics["success_rate"] == pytest.approx(successes.mean())
    assert len(metrics["return_by_episode_ci95"]) == 4
    assert adaptation_metrics(_records(returns, successes)) == metrics


def test_statistics_are_rliables():
    """IQM, CIs, probability of improvement and performance profile: rliable's on the same samples."""
    rng = np.random.default_rng(2)
    values = rng.normal(size=60)
    before = np.random.get_state()[1].copy()
    stats = sample_statistics(values, rng_seed=7)
    assert np.array_equal(np.random.get_state()[1], before)  # the global RNG rliable draws from is put back
    np.random.seed(7)
    _, intervals = rly.get_interval_estimates(
        {"x": values[:, None]}, lambda s: np.array([s.mean(), rly_metrics.aggregate_iqm(s)]), reps=BOOTSTRAP_RESAMPLES)
    assert [*stats["ci95"], *stats["iqm_ci95"]] == pytest.approx(intervals["x"].T.ravel())
    assert stats["iqm"] == pytest.approx(rly_metrics.aggregate_iqm(values))

    returns = rng.integers(0, 2, size=(80, 10)).astype(float)
    assert adaptation_metrics(_records(returns))["trial_return_iqm"] == pytest.approx(
        rly_metrics.aggregate_iqm(returns.sum(axis=1)))
    theirs = rng.integers(0, 2, size=(80, 10)).astype(float)
    paired = paired_regret(_records(returns), _records(theirs))["probability_of_improvement"]
    assert paired["probability"] == pytest.approx(
        rly_metrics.probability_of_improvement(returns.sum(axis=1)[None, :], theirs.sum(axis=1)[None, :]))
    assert paired["ci95"][0] < paired["probability"] < paired["ci95"][1]

    seeds_x, seeds_y = [5.1, 5.6, 6.0, 6.2], [5.5, 5.9, 6.1]
    assert probability_of_improvement(seeds_x, seeds_y)["probability"] == pytest.approx(
        rly_metrics.probability_of_improvement(np.array(seeds_x)[:, None], np.array(seeds_y)[:, None]))
    profile = performance_profile({"x": seeds_x}, [5.0, 5.8])
    expected, _ = rly.create_performance_profile({"x": np.array(seeds_x)[:, None]}, [5.0, 5.8], reps=10)
    assert profile["fraction_above"]["x"] == pytest.approx(expected["x"].tolist())


def _bandit_records(seed: int, num_trials: int = 300) -> dict[str, list[TrialRecord]]:
    """Trials on which greedy beats the declared reference (bayes_optimal) by chance."""
    rng = np.random.default_rng(seed)
    win_rate = {META_POLICY: 0.6, "random": 0.5, "greedy": 0.7, "bayes_optimal": 0.65}
    return {name: _records((rng.random((num_trials, 10)) < p).astype(float)) for name, p in win_rate.items()}


def test_report_header_and_regret_against_the_declared_reference(tmp_path):
    checkpoint = tmp_path / "bandit-run" / "checkpoints" / "iter_000075"
    checkpoint.mkdir(parents=True)
    (checkpoint / "metaray_state.json").write_text(json.dumps({"iteration": 75, "env_steps": 600000, "wall_s": 518.87}))
    cfg = from_dict(ExperimentConfig, {"task": {"family": "bandit", "params": {"num_arms": 5}}, "seed": 3})
    header = {**experiment_header(cfg), **checkpoint_header(checkpoint), "split": "test", "seed": cfg.seed,
              "num_trials": 300, "explore": False}
    records = _bandit_records(0)
    summary = checkpoint_summary(records, header)
    markdown = render_markdown(summary)

    assert summary["checkpoint"] == "checkpoints/iter_000075" and summary["run"] == "bandit-run"
    assert str(tmp_path) not in markdown + json.dumps(summary)
    for text in ("checkpoints/iter_000075", "600,000 env steps", "518.9 s", "task family: bandit (num_arms=5)",
                 "10 episodes per trial", "seed: 3", f"{BOOTSTRAP_RESAMPLES} resamples",
                 "epsilon_greedy (EpsilonGreedy: num_arms=5, epsilon=0.1)", "declared by the family: bayes_optimal",
                 f"ray {importlib.metadata.version('ray')}", f"torch {importlib.metadata.version('torch')}",
                 "metaray 0.1.0", f"rliable {importlib.metadata.version('rliable')}"):
        assert text in markdown, text

    best, declared = summary["regret"], summary[FAMILY_REFERENCE_REGRET]
    assert best["reference"] == "greedy" and declared["reference"] == "bayes_optimal"
    assert declared == {"reference": "bayes_optimal", **paired_regret(records[META_POLICY], records["bayes_optimal"])}
    for heading, regret in (("## Regret against the family's declared reference", declared),
                            ("## Regret against the best baseline", best)):
        (row,) = _table(markdown, heading).values()
        poi = regret["probability_of_improvement"]
        assert row == pytest.approx([regret["mean"], *regret["ci95"], regret["iqm"], *regret["iqm_ci95"],
                                     poi["probability"], *poi["ci95"]], abs=6e-4), heading

    tabular = experiment_header(from_dict(ExperimentConfig, {"task": {"family": "tabular_mdp"}}))
    assert tabular["reference_baseline"] is None and tabular["family_parameters"]["num_states"] == 10


def test_seeds_summary_probability_of_improvement_and_declared_reference():
    runs = {}
    for seed in (0, 1, 2):
        metrics = {name: adaptation_metrics(recs) for name, recs in _bandit_records(seed, 50).items()}
        runs[seed] = {"eval": {"test": metrics.pop(META_POLICY), "train": metrics["random"]}, "baselines": metrics,
                      "run_dir": f"seed_{seed}", "env_steps": 8000, "wall_s": 12.5}
    summary = seeds_summary(runs, {"name": "bandit", "split": "test", "seeds": [0, 1, 2],
                                   "reference_baseline": "bayes_optimal"})
    held_out = [run["eval"]["test"]["trial_return_mean"] for run in runs.values()]
    for key in ("regret", FAMILY_REFERENCE_REGRET):
        reference = summary[key]["reference"]
        theirs = [run["baselines"][reference]["trial_return_mean"] for run in runs.values()]
        assert summary[key]["probability_of_improvement"]["probability"] == pytest.approx(
            rly_metrics.probability_of_improvement(np.array(held_out)[:, None], np.array(theirs)[:, None]))
    assert summary[FAMILY_REFERENCE_REGRET]["reference"] == "bayes_optimal"
    markdown = render_markdown(summary)
    assert "P(improvement)" in markdown and "| 0 | 8,000 | 12.5 |" in markdown


RESULTS = ROOT / "benchmarks" / "results"


def test_committed_results_hold_no_machine_paths():
    """Committed results name checkpoints relative to their run folder, never a path of the machine that ran them."""
    files = [path for path in RESULTS.rglob("*") if path.suffix in (".md", ".json", ".yaml")]
    assert len(files) > 20
    for path in files:
        text = path.read_text()
        for prefix in ("/work/", "/home/", "/tmp/", "/root/"):
            assert prefix not in text, f"{path.relative_to(ROOT)} holds {prefix}"


def test_committed_reports_name_their_own_figures_and_summaries():
    for report in RESULTS.rglob("report*.md"):
        text = report.read_text()
        for figure in re.findall(r"!\[[^]]*\]\(([^)]+)\)", text):
            assert (report.parent / figure).is_file(), f"{report.relative_to(ROOT)} shows missing {figure}"
        named = set(re.findall(r"`((?:run_)?summary[\w]*\.json|report[\w]*\.md|adaptation_curves[\w]*\.png)`", text))
        for name in named:
            assert (report.parent / name).is_file(), f"{report.relative_to(ROOT)} names missing {name}"


def test_committed_reports_agree_with_their_summaries():
    """A committed report's trial-return table is the summary it wrote beside it, and its
    baselines are those of the training run's summary in the same folder: baselines are
    deterministic, so on the same held-out trials they must score the same."""
    pairs = runs = 0
    for report in RESULTS.rglob("report*.md"):
        markdown = report.read_text()
        rows = _table(markdown, "## Trial return")
        name = report.relative_to(ROOT)
        summary = report.with_name(report.name.replace("report", "summary", 1).replace(".md", ".json"))
        if summary.is_file():
            pairs += 1
            policies = json.loads(summary.read_text())["policies"]
            assert set(rows) == set(policies), name
            for policy, m in policies.items():
                expected = [m["trial_return_mean"], *m["trial_return_ci95"], m["trial_return_iqm"],
                            *m["trial_return_iqm_ci95"]]
                assert rows[policy][:6] == pytest.approx(expected, abs=6e-4), f"{name}: {policy}"
        run_summary = report.with_name("run_summary.json")
        if run_summary.is_file() and "on the test split" in markdown.splitlines()[0]:
            runs += 1
            for policy, m in json.loads(run_summary.read_text())["baselines"].items():
                assert rows[policy][0] == pytest.approx(m["trial_return_mean"], abs=6e-4), f"{name}: {policy}"
    assert pairs >= 5 and runs >= 5, (pairs, runs)


def test_paired_regret_cancels_shared_task_variance():
    task_difficulty = np.random.default_rng(1).normal(0, 10, size=(100, 1))
    ours = _records(task_difficulty + np.zeros((100, 3)))
    better = _records(task_difficulty + np.full((100, 3), 0.5))
    regret = paired_regret(ours, better)
    assert regret["mean"] == pytest.approx(1.5) and regret["ci95"] == pytest.approx([1.5, 1.5])
    with pytest.raises(ValueError, match="same trials"):
        paired_regret(ours, better[1:])


def test_across_seeds_treats_each_seed_as_one_sample():
    per_seed = [adaptation_metrics(_records(np.full((10, 2), value))) for value in (1.0, 2.0, 3.0)]
    combined = across_seeds(per_seed)
    assert combined["num_seeds"] == 3 and combined["trial_return_mean"] == pytest.approx(4.0)
    assert combined["return_by_episode"] == pytest.approx([2.0, 2.0])
    assert 2.0 <= combined["trial_return_ci95"][0] < combined["trial_return_ci95"][1] <= 6.0


@pytest.fixture(scope="module")
def trained_run(ray_session, tmp_path_factory):
    from conftest import ROOT

    run_dir = tmp_path_factory.mktemp("trained") / "quick"
    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(ROOT)
        assert launch.main(TINY + ["--run-dir", str(run_dir)]) == 0
    return run_dir


@pytest.fixture(scope="module")
def eval_reports(trained_run, tmp_path_factory):
    """The same checkpoint evaluated twice: 1 remote evaluation EnvRunner, then the driver's."""
    out = tmp_path_factory.mktemp("reports")
    args = ["--eval-only", "--checkpoint", str(trained_run), "--trials", "40"]
    assert launch.main(args + ["--set", "evaluation.num_env_runners=1", "--run-dir", str(out / "a")]) == 0
    assert launch.main(args + ["--run-dir", str(out / "b")]) == 0
    return out / "a", out / "b"


def _table(markdown: str, heading: str) -> dict[str, list[float]]:
    """Rows of the markdown table under ``heading``: first cell -> the numbers in the others."""
    section = markdown.split(heading, 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("|").split("|") for line in section.splitlines() if line.startswith("| ")][1:]
    return {cells[0].strip(): [float(x) for c in cells[1:] for x in NUMBER.findall(c)] for cells in rows}


def test_eval_only_report_agrees_with_summary(eval_reports, trained_run):
    report_dir = eval_reports[0]
    for name in ("report.md", "summary.json", ADAPTATION_PNG, RETURNS_PNG):
        assert (report_dir / name).is_file(), name
    for png in (ADAPTATION_PNG, RETURNS_PNG):
        assert (report_dir / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    summary = json.loads((report_dir / "summary.json").read_text())
    markdown = (report_dir / "report.md").read_text()
    policies = summary["policies"]
    assert set(policies) == {META_POLICY, "random", "greedy", "epsilon_greedy", "ucb1", "thompson", "bayes_optimal", "gittins"}

    returns = _table(markdown, "## Trial return")
    assert set(returns) == set(policies)
    for name, m in policies.items():
        expected = [m["trial_return_mean"], *m["trial_return_ci95"], m["trial_return_iqm"], *m["trial_return_iqm_ci95"],
                    m["adaptation_gain"], *m["adaptation_gain_ci95"]]
        assert returns[name] == pytest.approx(expected, abs=5e-4), name
        assert m["trial_return_ci95"][0] <= m["trial_return_mean"] <= m["trial_return_ci95"][1]
        assert np.mean(summary["samples"][name]) == pytest.approx(m["trial_return_mean"])

    curve = _table(markdown, "## Adaptation curve")
    assert len(curve) == 10
    for i, numbers in enumerate(curve.values()):
        expected = [x for m in policies.values() for x in (m["return_by_episode"][i], *m["return_by_episode_ci95"][i])]
        assert numbers == pytest.approx(expected, abs=5e-4)

    regret = summary["regret"]
    assert regret["reference"] == max((n for n in policies if n != META_POLICY), key=lambda n: policies[n]["trial_return_mean"])
    assert regret["mean"] == pytest.approx(policies[regret["reference"]]["trial_return_mean"] - policies[META_POLICY]["trial_return_mean"])
    (row,) = _table(markdown, "## Regret against the best baseline").values()
    poi = regret["probability_of_improvement"]
    assert row == pytest.approx([regret["mean"], *regret["ci95"], regret["iqm"], *regret["iqm_ci95"],
                                 poi["probability"], *poi["ci95"]], abs=6e-4)

    # The restored weights are what was evaluated: same trials as the run's final evaluation.
    trained = json.loads((trained_run / "summary.json").read_text())
    assert policies[META_POLICY]["return_by_episode"] == pytest.approx(trained["eval"]["test"]["return_by_episode"])
    assert policies["bayes_optimal"]["trial_return_mean"] == pytest.approx(trained["baselines"]["bayes_optimal"]["trial_return_mean"])


def test_eval_only_report_states_its_provenance(eval_reports, trained_run):
    """The checkpoint, relative to its run folder, with that run's env steps; regret against bayes_optimal."""
    summary = json.loads((eval_reports[0] / "summary.json").read_text())
    trained = json.loads((trained_run / "summary.json").read_text())
    assert trained["storage"] == "." and (trained_run / trained["checkpoint"]).is_dir()
    assert summary["run"] == trained_run.name and summary["checkpoint"] == trained["checkpoint"]
    assert summary["checkpoint_env_steps"] == trained["env_steps"]
    assert 0 < round(summary["checkpoint_wall_s"], 2) <= trained["wall_s"]  # the summary rounds to 0.01 s
    assert summary[FAMILY_REFERENCE_REGRET]["reference"] == "bayes_optimal"
    markdown = (eval_reports[0] / "report.md").read_text()
    assert f"{trained['env_steps']:,} env steps" in markdown and str(trained_run.parent) not in markdown


def test_eval_only_is_deterministic(eval_reports):
    """Same checkpoint, split and seed: the same numbers, whichever EnvRunners play the trials."""
    first, second = (json.loads((d / "summary.json").read_text()) for d in eval_reports)
    assert first == second


def test_eval_only_missing_checkpoint_exits_2(tmp_path, capsys):
    assert launch.main(["--eval-only", "--checkpoint", str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip()
    assert "--checkpoint" in err and "\n" not in err


def test_seeds_train_as_tune_trials_with_aggregate_report(ray_session, tmp_path, monkeypatch):
    from conftest import ROOT

    monkeypatch.chdir(ROOT)
    run_dir = tmp_path / "seeds"
    assert launch.main(TINY + ["--set", "seeds=[3, 4]", "--set", "evaluation.final_num_trials=20",
                               "--run-dir", str(run_dir)]) == 0
    aggregate = json.loads((run_dir / "report" / "summary.json").read_text())
    assert aggregate["seeds"] == [3, 4] and aggregate["uncertainty"] == "across seeds"
    per_seed = [json.loads((run_dir / f"seed_{s}" / "summary.json").read_text()) for s in (3, 4)]
    held_out = [s["eval"]["test"]["trial_return_mean"] for s in per_seed]
    meta = aggregate["policies"][META_POLICY]
    assert meta["num_seeds"] == 2 and meta["trial_return_mean"] == pytest.approx(np.mean(held_out))
    # Two seeds: resampled means are the lower seed's a quarter of the time, the higher's a
    # quarter, so the 2.5% and 97.5% percentiles are the two seeds themselves.
    assert meta["trial_return_ci95"] == pytest.approx([min(held_out), max(held_out)])
    assert [aggregate["per_seed"][str(s)]["held_out_trial_return_mean"] for s in (3, 4)] == held_out
    assert (run_dir / "report" / "report.md").is_file() and (run_dir / "report" / ADAPTATION_PNG).is_file()
    reference = aggregate["regret"]["reference"]
    theirs = [s["baselines"][reference]["trial_return_mean"] for s in per_seed]
    assert aggregate["regret"]["probability_of_improvement"]["probability"] == pytest.approx(
        rly_metrics.probability_of_improvement(np.array(held_out)[:, None], np.array(theirs)[:, None]))
    assert aggregate[FAMILY_REFERENCE_REGRET]["reference"] == "bayes_optimal"
    assert [aggregate["per_seed"][str(s)]["run_dir"] for s in (3, 4)] == ["seed_3", "seed_4"]


@pytest.fixture
def tensorboard_url(trained_run):
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "tensorboard.main", "--logdir", str(trained_run), "--host", "127.0.0.1",
         "--port", str(port), "--reload_interval", "1"],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.terminate()
        try:
            server.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def _get_json(url: str, data: bytes | None = None):
    request = urllib.request.Request(url, data=data, headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=5) as response:
        return json.loads(response.read())


def test_tensorboard_server_serves_run(tensorboard_url, trained_run):
    deadline = time.monotonic() + 60
    tags: dict = {}
    while time.monotonic() < deadline:
        try:
            tags = _get_json(f"{tensorboard_url}/data/plugin/scalars/tags").get(".", {})
        except OSError:  # not listening yet
            pass
        if "final_eval_test/trial_return_mean" in tags:
            break
        time.sleep(0.5)
    for tag in ("eval_test/trial_return_mean", "eval_train/trial_return_mean", "eval_test/trial_return_iqm",
                "eval_test/trial_return_ci95_low", "eval_test_by_episode/ep_09",
                "eval_test/regret_vs_best_baseline", "baselines_test/bayes_optimal", "train/trial_return_mean",
                "final_eval_test/trial_return_mean", "final_baselines_test/bayes_optimal"):
        assert tag in tags, tag

    scalars = _get_json(f"{tensorboard_url}/data/plugin/scalars/scalars?run=.&tag=final_eval_test/trial_return_mean")
    summary = json.loads((trained_run / "summary.json").read_text())
    assert [value for _, _, value in scalars] == [pytest.approx(summary["eval"]["test"]["trial_return_mean"], rel=1e-5)]

    layout = _get_json(f"{tensorboard_url}/data/plugin/custom_scalars/layout")
    assert {c["title"] for c in layout["category"]} == {"adaptation curves", "train vs held-out"}

    experiment = _get_json(f"{tensorboard_url}/data/plugin/hparams/experiment", b'{"experimentName": ""}')
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"training.lr", "model.hidden_size", "seed"} <= hparams
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert "final_eval_test/trial_return_mean" in metrics
