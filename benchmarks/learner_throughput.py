#!/usr/bin/env python
"""Training throughput (sampling + learning, env steps/s) of one config under several settings,
measured side by side in one run, with a profile of where an iteration's time goes.

Each variant is the config plus ``--set``-style overrides. Variants are built and timed in
turn, ``--repeats`` times (other jobs on the machine can only slow a measurement down, so the
best repeat is kept), each for ``--iterations`` PPO iterations after one warm-up iteration;
evaluation is switched off. The profile (cProfile of one iteration of each variant) splits the
time into sampling and learning, and within learning into the forward pass, the backward
pass, the optimizer step and the learner connectors.

How to run (about 10 minutes for the default variants on an idle 2-core machine)::

    python benchmarks/learner_throughput.py --config configs/tabular_mdp_n10.yaml \\
        --variant main= --variant fast=env_runners.num_envs_per_env_runner=256

``--variant NAME=KEY=VALUE,KEY=VALUE`` (an empty list: the config as it is). Results: a table on
stdout and ``benchmarks/results/learner_throughput.md`` (every measurement and the profiles in
``learner_throughput.json``).
"""

from __future__ import annotations

import argparse
import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
for path in (ROOT / "platform", ROOT):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

import torch  # noqa: E402

from metaray.cluster import init_ray  # noqa: E402
from metaray.config import load_config  # noqa: E402
from metaray.rllib_config import build_algorithm_config  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
NO_EVALUATION = "evaluation.interval=1000000000"
#: Profile buckets: the cumulative time of one (file, function) of RLlib's each.
BUCKETS = {
    "sampling": ("rollout_ops.py", "synchronous_parallel_sample"),
    "learning, total": ("learner_group.py", "update"),
    "learner connectors (GAE, batching)": ("learner_connector_pipeline.py", "__call__"),
    "forward pass": ("torch_rl_module.py", "forward_train"),
    "backward pass": ("torch_learner.py", "compute_gradients"),
    "optimizer step": ("torch_learner.py", "apply_gradients"),
}


def parse_variant(text: str) -> tuple[str, list[str]]:
    name, _, overrides = text.partition("=")
    return name, [o for o in overrides.split(",") if o]


def profile_buckets(profile: cProfile.Profile) -> dict[str, float]:
    """Seconds of one iteration per bucket (the largest cumulative time of its function)."""
    stats = pstats.Stats(profile).stats
    return {bucket: round(max((cumulative for (filename, _, function), (_, _, _, cumulative, _) in stats.items()
                               if Path(filename).name == file and function == name), default=0.0), 2)
            for bucket, (file, name) in BUCKETS.items()}


def time_calls(obj, method: str) -> list[float]:
    """Wrap ``obj.method`` so that every call appends its wall seconds to the returned list."""
    seconds: list[float] = []
    inner = getattr(obj, method)

    def timed(*args, **kwargs):
        start = time.perf_counter()
        try:
            return inner(*args, **kwargs)
        finally:
            seconds.append(time.perf_counter() - start)

    setattr(obj, method, timed)
    return seconds


def measure(config: str, overrides: list[str], iterations: int, profile: bool) -> dict:
    cfg = load_config(config, [*overrides, NO_EVALUATION])
    torch.set_num_threads(cfg.learners.num_cpus_per_learner)
    algo = build_algorithm_config(cfg).build_algo()
    learning_s = time_calls(algo.learner_group, "update")
    try:
        algo.train()  # warm-up: first-call costs
        learning_s.clear()
        steps, start = 0, time.perf_counter()
        for _ in range(iterations):
            steps += int(algo.train()["env_runners"]["num_env_steps_sampled"])
        wall = time.perf_counter() - start
        # Without the profiler's overhead, which inflates Python-heavy sampling most.
        record = {"env_steps": steps, "wall_s": round(wall, 2), "env_steps_per_s": round(steps / wall, 1),
                  "learning_s": round(sum(learning_s), 2), "rest_s": round(wall - sum(learning_s), 2)}
        if profile:
            profiler = cProfile.Profile()
            profiler.enable()
            result = algo.train()
            profiler.disable()
            record["profile_s"] = profile_buckets(profiler)
            record["profile_env_steps"] = int(result["env_runners"]["num_env_steps_sampled"])
    finally:
        algo.stop()
    return record


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--config", default=str(ROOT / "configs" / "tabular_mdp_n10.yaml"))
    parser.add_argument("--variant", action="append", required=True, help="NAME=KEY=VALUE,KEY=VALUE")
    parser.add_argument("--iterations", type=int, default=3, help="timed iterations per measurement")
    parser.add_argument("--repeats", type=int, default=2, help="measurements per variant (best kept)")
    parser.add_argument("--num-cpus", type=int, default=2)
    parser.add_argument("--out", type=Path, default=RESULTS / "learner_throughput")
    args = parser.parse_args(argv)

    variants = dict(parse_variant(v) for v in args.variant)
    base = load_config(args.config)
    init_ray(base, num_cpus=args.num_cpus)
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for repeat in range(args.repeats):
        for name, overrides in variants.items():
            record = measure(args.config, overrides, args.iterations, profile=repeat == 0)
            runs[name].append(record)
            print(f"{name}: {record}", flush=True)
    first = next(iter(variants))
    best = {name: max(r["env_steps_per_s"] for r in records) for name, records in runs.items()}
    lines = [f"# Training throughput: {args.config}", "",
             f"{args.iterations} PPO iterations per measurement after one warm-up, {args.repeats} "
             f"measurements per variant alternating (best kept), evaluation off, `--num-cpus {args.num_cpus}`.", "",
             "| variant | overrides | env steps/s (best) | every measurement | ratio to " + first
             + " | learner update / rest of the iterations, s (best measurement) |",
             "|---|---|---|---|---|---|"]
    for name, overrides in variants.items():
        every = ", ".join(f"{r['env_steps_per_s']:.0f}" for r in runs[name])
        top = max(runs[name], key=lambda r: r["env_steps_per_s"])
        lines.append(f"| {name} | {' '.join(overrides) or '(config as is)'} | {best[name]:.0f} | {every} | "
                     f"{best[name] / best[first]:.2f} | {top['learning_s']} / {top['rest_s']} |")
    lines += ["", "Profile of one iteration (cProfile, cumulative seconds; learning, total holds the "
              "four rows below it):", "",
              "| bucket | " + " | ".join(variants) + " |", "|---|" + "---|" * len(variants)]
    for bucket in BUCKETS:
        lines.append(f"| {bucket} | " + " | ".join(str(runs[n][0]["profile_s"][bucket]) for n in variants) + " |")
    lines.append("| env steps in the profiled iteration | "
                 + " | ".join(str(runs[n][0]["profile_env_steps"]) for n in variants) + " |")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.with_suffix(".md").write_text("\n".join(lines) + "\n")
    args.out.with_suffix(".json").write_text(json.dumps({"config": args.config, "variants": variants,
                                                         "runs": runs}, indent=2))
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
