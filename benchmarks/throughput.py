#!/usr/bin/env python
"""Env-step throughput of metaray vs. a plain RLlib script, over a small grid.

For every task family (bandit; point navigation when ``envs/point_nav.py`` exists) and every
grid point (remote env runners x vectorised envs per runner), both systems are built fresh
``--repeats`` times, alternately, and the best rates are kept (other jobs on the machine can
only slow a measurement down). Each measurement times:

* **sample**: env steps/s of the env runners alone (``EnvRunner.sample`` on all runners in
  parallel, the learner idle);
* **train**: env steps/s of full PPO iterations (sampling, then learning in the driver).

metaray runs the trial env with its LSTM core; the plain baseline is RLlib's PPO with the
stock LSTM module and the previous-action/reward connector on a hand-written bandit env
(see ``benchmarks/plain_rllib.py``). Both use the same network width, sequence length, train
batch, minibatch and epochs. Peak memory is the largest resident set size seen, sampled
every 0.2 s, of the driver (which also hosts the learner) and of each env-runner actor.
Point navigation has no plain-RLlib counterpart here; its rows show metaray alone.

How to run (about 5 minutes for the default grid on an idle 2-core machine)::

    python benchmarks/throughput.py
    python benchmarks/throughput.py --runners 1 --envs 8 --repeats 1   # a quick look

Results: a table on stdout and in ``benchmarks/results/throughput.md`` (every measurement in
``throughput.json``). What to expect on 2 CPU cores: sampling throughput grows with envs per
runner (batched inference: about 0.8k steps/s with 1 env, 4-5k with 8, 8k with 64 per runner
for metaray); metaray samples at least as fast as plain RLlib (its trial env builds the
previous action/reward input in numpy, where the plain script runs two extra connector
pieces per step), and PPO iterations run at the same speed for both. The committed table was
measured while other jobs shared the 2 cores: single measurements swing by 2x or more.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT, ROOT / "benchmarks"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import ray  # noqa: E402  (puts Ray's bundled psutil on the path)
import psutil  # noqa: E402
from ray import cloudpickle  # noqa: E402

from metaray.rllib_config import build_algorithm_config  # noqa: E402
from metaray.cluster import init_ray  # noqa: E402
from metaray.config import ExperimentConfig, load_config  # noqa: E402
import plain_rllib  # noqa: E402
from plain_rllib import plain_ppo_config  # noqa: E402

# Ray workers cannot import benchmarks/: ship the plain env and connector by value.
cloudpickle.register_pickle_by_value(plain_rllib)

RESULTS = ROOT / "benchmarks" / "results"
FAMILIES = {"bandit": {"num_arms": 5}, "point_nav": {}}
PULLS = 10  # bandit trial length: 10 one-pull episodes


class PeakRSS:
    """Background sampler of the peak resident set size of a set of processes."""

    def __init__(self, pids: dict[str, int], interval_s: float = 0.2):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items()}
        self.peak = {name: 0 for name in pids}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for name, proc in self.procs.items():
                try:
                    self.peak[name] = max(self.peak[name], proc.memory_info().rss)
                except psutil.NoSuchProcess:
                    pass
            self._stop.wait(0.2)

    def __enter__(self) -> "PeakRSS":
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def metaray_config(family: str, args, runners: int, envs: int):
    overrides = [
        f"task.family={family}", f"task.params={json.dumps(FAMILIES[family])}",
        "model.arch=lstm", f"model.hidden_size={args.hidden}", f"model.encoder_layers=[{args.hidden}]",
        f"model.max_seq_len={PULLS}", f"training.train_batch_size={args.train_batch}",
        f"training.minibatch_size={args.minibatch}", f"training.num_epochs={args.epochs}",
        f"env_runners.num_env_runners={runners}", f"env_runners.num_envs_per_env_runner={envs}",
        "evaluation.interval=1000000000",  # no evaluation inside the measured iterations
    ]
    return build_algorithm_config(load_config(ROOT / "configs" / "quickstart.yaml", overrides))


def sample_steps(env_runner, num_timesteps: int) -> int:
    return sum(len(episode) for episode in env_runner.sample(num_timesteps=num_timesteps))


def measure(algo_config, args) -> dict:
    algo = algo_config.build_algo()
    try:
        group = algo.env_runner_group
        pids = {"driver": os.getpid()}
        for i, pid in enumerate(group.foreach_env_runner(lambda r: os.getpid(), local_env_runner=False)):
            pids[f"runner{i + 1}"] = pid
        with PeakRSS(pids) as memory:
            chunk = args.sample_chunk

            def sample_round() -> int:
                return sum(group.foreach_env_runner(lambda r: sample_steps(r, chunk), local_env_runner=False))

            sample_round()  # warm-up: first forward passes, episode setup
            steps, start = 0, time.perf_counter()
            while time.perf_counter() - start < args.sample_seconds:
                steps += sample_round()
            sample_rate = steps / (time.perf_counter() - start)

            algo.train()  # warm-up: learner connector and optimizer state
            steps, start = 0, time.perf_counter()
            for _ in range(args.train_iterations):
                steps += algo.train()["env_runners"]["num_env_steps_sampled"]
            train_rate = steps / (time.perf_counter() - start)
        return {
            "sample_steps_per_s": sample_rate,
            "train_steps_per_s": train_rate,
            "peak_rss_mib": {name: rss / 2**20 for name, rss in memory.peak.items()},
        }
    finally:
        algo.stop()


def best_of(runs: list[dict]) -> dict:
    """Highest rates and peak memory over repeats: other jobs on the machine only slow a run down."""
    return {
        "sample_steps_per_s": max(r["sample_steps_per_s"] for r in runs),
        "train_steps_per_s": max(r["train_steps_per_s"] for r in runs),
        "peak_rss_mib": {k: max(r["peak_rss_mib"][k] for r in runs) for k in runs[0]["peak_rss_mib"]},
    }


def format_table(rows: list[dict]) -> str:
    def mem(r):
        if r is None:
            return "-"
        runners = [v for k, v in r["peak_rss_mib"].items() if k.startswith("runner")]
        return f"{r['peak_rss_mib']['driver']:.0f} / {max(runners):.0f}"

    def rate(r, key):
        return f"{r[key]:,.0f}" if r else "-"

    def ratio(row, key):
        return f"{row['metaray'][key] / row['plain'][key]:.2f}" if row["plain"] else "-"

    lines = [
        "| family | runners | envs/runner | sample metaray | sample plain | ratio | train metaray | "
        "train plain | ratio | peak RSS MiB metaray (driver / runner) | plain (driver / runner) |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for row in rows:
        m, p = row["metaray"], row["plain"]
        lines.append(
            f"| {row['family']} | {row['runners']} | {row['envs']} | {rate(m, 'sample_steps_per_s')} | "
            f"{rate(p, 'sample_steps_per_s')} | {ratio(row, 'sample_steps_per_s')} | "
            f"{rate(m, 'train_steps_per_s')} | {rate(p, 'train_steps_per_s')} | "
            f"{ratio(row, 'train_steps_per_s')} | {mem(m)} | {mem(p)} |"
        )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--families", nargs="+", default=["bandit", "point_nav"], choices=sorted(FAMILIES))
    parser.add_argument("--runners", nargs="+", type=int, default=[1, 2])
    parser.add_argument("--envs", nargs="+", type=int, default=[1, 8, 64])
    parser.add_argument("--hidden", type=int, default=64, help="LSTM width of both systems")
    parser.add_argument("--train-batch", type=int, default=2000)
    parser.add_argument("--minibatch", type=int, default=500)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--train-iterations", type=int, default=2, help="timed PPO iterations per measurement")
    parser.add_argument("--sample-seconds", type=float, default=2.0, help="timed sampling per measurement")
    parser.add_argument("--sample-chunk", type=int, default=1000, help="env steps per sample() call")
    parser.add_argument("--repeats", type=int, default=2, help="alternating measurements per system (best kept)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "throughput")
    args = parser.parse_args(argv)

    notes = []
    families = [f for f in args.families if f != "point_nav" or (ROOT / "envs" / "point_nav.py").is_file()]
    if len(families) < len(args.families):
        notes.append("point_nav skipped: envs/point_nav.py does not exist in this checkout.")
    init_ray(ExperimentConfig(), num_cpus=args.num_cpus)
    rows = []
    for family in families:
        for runners in args.runners:
            for envs in args.envs:
                row = {"family": family, "runners": runners, "envs": envs}
                configs = {"metaray": metaray_config(family, args, runners, envs)}
                if family == "bandit":
                    configs["plain"] = plain_ppo_config(configs["metaray"], num_arms=FAMILIES["bandit"]["num_arms"],
                                                        pulls=PULLS, hidden_size=args.hidden)
                runs = {name: [] for name in configs}
                for _ in range(args.repeats):  # alternate the systems so both meet the same load
                    for name, config in configs.items():
                        runs[name].append(measure(config, args))
                row["metaray"] = best_of(runs["metaray"])
                row["plain"] = best_of(runs["plain"]) if "plain" in runs else None
                row["runs"] = runs
                rows.append(row)
                print(format_table([row]).splitlines()[-1], flush=True)
    ray.shutdown()

    table = format_table(rows)
    load = os.getloadavg()
    header = (
        f"# Throughput: metaray vs plain RLlib (env steps/s)\n\n"
        f"Command: `python benchmarks/throughput.py {' '.join(sys.argv[1:] if argv is None else argv)}`  \n"
        f"Machine: {psutil.cpu_count()} CPUs, load average at the end {load[0]:.1f} "
        f"(other jobs on the machine make these numbers noisy).  \n"
        f"Both: LSTM {args.hidden}, max_seq_len {PULLS}, train batch {args.train_batch}, "
        f"minibatch {args.minibatch}, epochs {args.epochs}, learner in the driver; best of "
        f"{args.repeats} alternating measurements per system.\n"
    )
    text = header + "\n" + table + "\n" + "".join(f"\n{n}\n" for n in notes)
    print("\n" + text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text(text)
    args.out.with_suffix(".json").write_text(json.dumps({"args": {k: str(v) for k, v in vars(args).items()},
                                                         "notes": notes, "rows": rows}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
