#!/usr/bin/env python
"""Cost of the GRU's forward + backward pass on one PPO minibatch, the bulk of the learner
update on ``configs/tabular_mdp_n10.yaml`` (``learner_throughput.md``), eager and compiled.

Three ways to run the same math on whole trials (``[trials, steps, width]`` inputs):
``nn.GRU`` as the meta-policy uses it; the GRU written as a Python loop over steps; and that
loop through ``torch.compile`` (inductor), which can fuse each step's gate arithmetic. Each is
timed on one thread (the learner's setting), best of ``--repeats`` rounds of ``--passes``
passes, rounds of the three alternating so that other jobs on the machine slow them alike.
The compile time is that of the first call, shorter when inductor's on-disk cache already
holds the kernels.

How to run (each trial count compiles anew, minutes on one core)::

    python benchmarks/gru_cost.py --trials 20

Results: a table on stdout and ``benchmarks/results/gru_cost.md``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import torch
from torch import nn
from torch.nn import functional as F

RESULTS = Path(__file__).resolve().parent / "results"


def gru_loop(weights: list[torch.Tensor], x: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
    """``gru(x, h)[0]`` for a one-layer GRU whose ``all_weights[0]`` are ``weights``, one step at
    a time (PyTorch's gate order r, z, n). It takes the weights, not the module: dynamo refuses
    to trace through an ``nn.GRU`` ("Attempted to wrap RNN, GRU, or LSTM"), so
    ``torch.compile`` of the meta-policy as it is (RLlib's ``torch_compile_learner``) leaves
    the GRU eager."""
    w_ih, w_hh, b_ih, b_hh = weights
    input_gates = F.linear(x, w_ih, b_ih)
    outputs = []
    for t in range(x.shape[1]):
        ir, iz, i_n = input_gates[:, t].chunk(3, -1)
        hr, hz, h_n = F.linear(h, w_hh, b_hh).chunk(3, -1)
        r, z = torch.sigmoid(ir + hr), torch.sigmoid(iz + hz)
        h = (1 - z) * torch.tanh(i_n + r * h_n) + z * h
        outputs.append(h)
    return torch.stack(outputs, 1)


def mean_ms(step, passes: int) -> float:
    start = time.perf_counter()
    for _ in range(passes):
        step()
    return (time.perf_counter() - start) / passes * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, nargs="+", default=[20],
                        help="trials per minibatch (20 is tabular_mdp_n10's 2,000-step minibatch)")
    parser.add_argument("--steps", type=int, default=100, help="steps per trial (the BPTT length)")
    parser.add_argument("--width", type=int, default=128, help="input and hidden width")
    parser.add_argument("--passes", type=int, default=10)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    gru = nn.GRU(args.width, args.width, batch_first=True)
    weights = gru.all_weights[0]
    compiled = torch.compile(gru_loop, fullgraph=True)
    rows = []
    for trials in args.trials:
        x = torch.randn(trials, args.steps, args.width)
        h = torch.zeros(trials, args.width)
        reference = gru(x, h[None])[0]
        assert torch.allclose(gru_loop(weights, x, h), reference, atol=1e-5)
        start = time.perf_counter()
        assert torch.allclose(compiled(weights, x, h), reference, atol=1e-5)
        compile_s = time.perf_counter() - start
        ways = {
            "nn.GRU": lambda: gru(x, h[None])[0].sum().backward(),
            "Python loop": lambda: gru_loop(weights, x, h).sum().backward(),
            "compiled loop": lambda: compiled(weights, x, h).sum().backward(),
        }
        for step in ways.values():  # warm-up: the compiled backward is built on its first call
            step()
        best = {name: min(mean_ms(step, args.passes) for _ in range(args.repeats)) for name, step in ways.items()}
        rows.append((trials, best, compile_s))
    lines = [
        f"# GRU forward + backward per minibatch ({args.steps} steps, width {args.width}, one thread)", "",
        f"Best of {args.repeats} rounds of {args.passes} passes. Command: `python benchmarks/gru_cost.py "
        f"--trials {' '.join(map(str, args.trials))}`.", "",
        "| trials | nn.GRU, ms | Python loop, ms | compiled loop, ms | compiled / nn.GRU | compile, s |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for trials, best, compile_s in rows:
        lines.append(f"| {trials} | {best['nn.GRU']:.1f} | {best['Python loop']:.1f} | {best['compiled loop']:.1f} "
                     f"| {best['compiled loop'] / best['nn.GRU']:.2f} | {compile_s:.0f} |")
    text = "\n".join(lines) + "\n"
    print(text)
    (RESULTS / "gru_cost.md").write_text(text)


if __name__ == "__main__":
    main()
