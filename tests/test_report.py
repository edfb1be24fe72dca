"""Evaluation reports end to end: --eval-only on a trained checkpoint, several seeds through
Ray Tune, and a live TensorBoard server reading the run (tiny budgets, one shared Ray)."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
import time
import urllib.request

import numpy as np
import pytest

import launch
from conftest import free_port, tiny_run_args
from metaray.statistics import across_seeds, adaptation_metrics, interquartile_mean, paired_regret
from metaray.report import ADAPTATION_PNG, META_POLICY, RETURNS_PNG
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
    assert float(interquartile_mean(np.arange(8.0))) == pytest.approx(3.5)


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
    assert set(policies) == {META_POLICY, "random", "greedy", "epsilon_greedy", "ucb1", "thompson", "bayes_optimal"}

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
    (row,) = _table(markdown, "## Regret").values()
    assert row == pytest.approx([regret["mean"], *regret["ci95"], regret["iqm"], *regret["iqm_ci95"]], abs=5e-4)

    # The restored weights are what was evaluated: same trials as the run's final evaluation.
    trained = json.loads((trained_run / "summary.json").read_text())
    assert policies[META_POLICY]["return_by_episode"] == pytest.approx(trained["eval"]["test"]["return_by_episode"])
    assert policies["bayes_optimal"]["trial_return_mean"] == pytest.approx(trained["baselines"]["bayes_optimal"]["trial_return_mean"])


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
        if "eval_test/trial_return_mean" in tags:
            break
        time.sleep(0.5)
    for tag in ("eval_test/trial_return_mean", "eval_train/trial_return_mean", "eval_test/trial_return_iqm",
                "eval_test/trial_return_ci95_low", "eval_test_by_episode/ep_09",
                "eval_test/regret_vs_best_baseline", "baselines_test/bayes_optimal", "train/trial_return_mean"):
        assert tag in tags, tag

    scalars = _get_json(f"{tensorboard_url}/data/plugin/scalars/scalars?run=.&tag=eval_test/trial_return_mean")
    summary = json.loads((trained_run / "summary.json").read_text())
    assert scalars[-1][2] == pytest.approx(summary["eval"]["test"]["trial_return_mean"], rel=1e-5)

    layout = _get_json(f"{tensorboard_url}/data/plugin/custom_scalars/layout")
    assert {c["title"] for c in layout["category"]} == {"adaptation curves", "train vs held-out"}

    experiment = _get_json(f"{tensorboard_url}/data/plugin/hparams/experiment", b'{"experimentName": ""}')
    hparams = {h["name"] for h in experiment["hparamInfos"]}
    assert {"training.lr", "model.hidden_size", "seed"} <= hparams
    metrics = {m["name"]["tag"] for m in experiment["metricInfos"]}
    assert "eval_test/trial_return_mean" in metrics
