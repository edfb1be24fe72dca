"""Re-run issue 12's bad-input probes through ``launch.py`` and write their table.

    .venv/bin/python benchmarks/bad_input_probes.py [--out benchmarks/results/bad_input_probes.md]

Each probe is ``python launch.py ...`` from the repository root in a subprocess, without the
caller's ``RAY_ADDRESS`` and with a private ``RAY_TMPDIR``, so that ``--address auto`` finds no
cluster but the one this script starts (loopback, explicit ports, no auth, stopped by its process
group). The table gives the issue item, the input, the exit code, the seconds until exit (for
Ctrl-C: from the signal) and the line the run ended with (stderr's last line; for
``--address auto``, the line naming the cluster joined). Paths of the scratch folder read ``$TMP``;
``--address auto`` sees other users' Ray instances on this machine too (Ray finds their GCS
processes), which this table shows when there are any.
About 6 minutes on 2 cores; everything is written under a temporary folder that is removed at
the end, except the table.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
#: A tiny quickstart run: a few seconds of training once Ray is up.
TINY = ["--config", "configs/quickstart.yaml", "--set", "training.total_env_steps=2000",
        "--set", "training.train_batch_size=1000", "--set", "training.minibatch_size=500",
        "--set", "training.num_epochs=1", "--set", "model.hidden_size=16",
        "--set", "env_runners.num_envs_per_env_runner=8", "--set", "evaluation.interval=100",
        "--set", "evaluation.num_trials=20", "--set", "evaluation.final_num_trials=20"]
#: A task family module, after a line ``BROKEN = "RAISES"`` (its env passes the one trial that
#: launch.py plays before Ray starts, then raises after 50 steps) or ``BROKEN = "WIDE"``
#: (observations of shape (2,) for a Box of shape (1,)).
FAMILY_SOURCE = '''
import gymnasium as gym
import numpy as np

from metaray.tasks import TaskFamily


class Env(gym.Env):
    def __init__(self):
        self.observation_space = gym.spaces.Box(0.0, 100.0, (1,), np.float32)
        self.action_space = gym.spaces.Discrete(3)
        self.task, self.t, self.steps = 0.0, 0, 0

    def set_task(self, task):
        self.task = float(task)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return np.array([0.0], np.float32), {}

    def step(self, action):
        self.t += 1
        self.steps += 1
        if BROKEN == "RAISES" and self.steps > 50:
            raise RuntimeError("sensor unplugged")
        width = 2 if BROKEN == "WIDE" else 1
        return np.full(width, self.t, np.float32), self.task + self.t, self.t >= 3, False, {}


class Family(TaskFamily):
    def sample_task(self, rng):
        return float(rng.random())

    def make_env(self):
        return Env()


FAMILY = Family
'''


class NotRay:
    """A loopback TCP server that is not Ray: silent, or answering HTTP (a proxy's error page)."""

    def __init__(self, http: bool):
        self.http = http
        self.server = socket.create_server(("127.0.0.1", 0))
        self.server.settimeout(0.2)
        self.address = "127.0.0.1:%d" % self.server.getsockname()[1]
        self.stopped = threading.Event()
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        held = []
        while not self.stopped.is_set():
            try:
                connection, _ = self.server.accept()
            except OSError:
                continue
            if self.http:
                connection.sendall(b"HTTP/1.1 502 Bad Gateway\r\nContent-Length: 0\r\n\r\n")
            held.append(connection)
        for connection in held:
            connection.close()

    def close(self) -> None:
        self.stopped.set()
        self.server.close()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Prober:
    def __init__(self, scratch: Path):
        self.scratch = scratch
        self.env = {k: v for k, v in os.environ.items() if k != "RAY_ADDRESS"}
        self.env.update({"RAY_TMPDIR": str(scratch), "RAY_AUTH_MODE": "disabled"})
        self.rows: list[tuple[str, str, str, str, str]] = []

    def shown(self, text: str) -> str:
        return text.replace(str(self.scratch), "$TMP").replace(str(ROOT) + "/", "").replace("|", "\\|")

    def record(self, item: str, what: str, args: list, code: int | str, seconds: float, line: str) -> None:
        command = "python launch.py " + " ".join(map(str, args)).replace(" ".join(TINY), "TINY")
        print(f"[{item}] exit {code} in {seconds:.1f} s: {line}", flush=True)
        self.rows.append((item, f"{what}: `{self.shown(command)}`", str(code), f"{seconds:.1f}", self.shown(line)))

    def launch(self, item: str, what: str, *args, env: dict | None = None, shown_args: list | None = None,
               line_prefix: str | None = None, timeout: float = 600) -> int | str:
        """Run launch.py to its end and record it; returns the exit code."""
        args = [str(a) for a in args]
        start = time.monotonic()
        try:
            proc = subprocess.run([sys.executable, "launch.py", *args], cwd=ROOT, env=env or self.env,
                                  capture_output=True, text=True, timeout=timeout)
            code, out, err = proc.returncode, proc.stdout, proc.stderr
        except subprocess.TimeoutExpired as exc:
            code, out, err = f"hung (killed after {timeout:g} s)", exc.stdout or "", exc.stderr or ""
            out, err = (s.decode() if isinstance(s, bytes) else s for s in (out, err))
        seconds = time.monotonic() - start
        lines = [l for l in out.splitlines() if line_prefix and l.startswith(line_prefix)]
        lines = lines or [l for l in err.splitlines() if l.strip()]
        self.record(item, what, shown_args or args, code, seconds, lines[-1] if lines else "(nothing)")
        return code

    def ctrl_c(self) -> None:
        """Ctrl-C in a terminal: SIGINT to the driver's process group once iteration 1 is printed."""
        run_dir = self.scratch / "interrupted"
        args = [*TINY, "--set", "training.total_env_steps=10000000", "--set", "checkpoint_interval=0",
                "--run-dir", str(run_dir)]
        stderr = self.scratch / "interrupted.stderr"
        with stderr.open("w") as err:  # a file, not a pipe: nobody reads stderr while training runs
            driver = subprocess.Popen([sys.executable, "launch.py", *args], cwd=ROOT, env=self.env, text=True,
                                      stdout=subprocess.PIPE, stderr=err, start_new_session=True)
        for line in driver.stdout:
            if line.startswith("iter    1 |"):
                break
        start = time.monotonic()
        os.killpg(driver.pid, signal.SIGINT)
        driver.communicate(timeout=300)
        lines = [l for l in stderr.read_text().splitlines() if l.strip()]
        self.record("14", "Ctrl-C after iteration 1 (SIGINT to the process group)", args, driver.returncode,
                    time.monotonic() - start, lines[-1] if lines else "(nothing)")

    def write(self, out: Path) -> None:
        table = ["| item | input | exit code | seconds | message |", "|---|---|---|---|---|"]
        table += [f"| {' | '.join(row)} |" for row in self.rows]
        out.write_text(
            "# Issue 12: bad-input probes\n\n"
            f"Made by `.venv/bin/python benchmarks/bad_input_probes.py` ({time.strftime('%Y-%m-%d')}, 2-core "
            "machine shared with other runs, so seconds are upper bounds). Message: the last line on stderr "
            "(item 11, `--address auto` with a cluster: the line naming it); `$TMP` is the script's scratch "
            "folder; for Ctrl-C the seconds run from the signal to the exit.\n\n"
            f"`TINY` in an input stands for the tiny quickstart run `{' '.join(TINY)}`.\n\n"
            + "\n".join(table) + "\n")


def truncate_weights(checkpoint: Path) -> None:
    (weights,) = checkpoint.glob("learner_group/learner/rl_module/*/module_state.pkl")
    weights.write_bytes(weights.read_bytes()[:1000])


def start_head(env: dict) -> tuple[subprocess.Popen, str]:
    """A private ``ray start --head`` on loopback with explicit ports, in a process group of its own."""
    port = free_port()
    ports = ["--node-manager-port", "--object-manager-port", "--runtime-env-agent-port", "--metrics-export-port",
             "--dashboard-agent-listen-port", "--dashboard-agent-grpc-port", "--ray-client-server-port"]
    command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--node-ip-address=127.0.0.1",
               f"--port={port}", "--num-cpus=2", "--num-gpus=0", "--include-dashboard=false",
               "--disable-usage-stats", *(f"{p}={free_port()}" for p in ports)]
    head = subprocess.Popen(command, env=env, start_new_session=True,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = head.communicate(timeout=120)[0]
    if head.returncode != 0:
        raise RuntimeError(output)
    return head, f"127.0.0.1:{port}"


def stop_group(pgid: int) -> None:
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            return
        time.sleep(5)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results" / "bad_input_probes.md")
    out = parser.parse_args().out
    scratch = Path(tempfile.mkdtemp(prefix="mrp", dir="/tmp"))  # short: Ray's socket paths must fit 107 bytes
    prober = Prober(scratch)
    servers = [NotRay(http=False), NotRay(http=True)]
    head = None
    try:
        (scratch / "empty.yaml").write_text("")
        (scratch / "file").write_text("")
        for name, broken in (("raising_family.py", "RAISES"), ("wide_observation_family.py", "WIDE")):
            (scratch / name).write_text(f"BROKEN = {broken!r}\n" + FAMILY_SOURCE)
        trained = scratch / "trained"
        code = prober.launch("setup", "a finished tiny run to probe its checkpoints", *TINY,
                             "--set", "checkpoint_interval=1", "--run-dir", trained)
        assert code == 0, "the tiny run failed"
        own_family = ["--set", "evaluation.baselines=[]", "--set", "task.params={}"]
        locked = scratch / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        unwritable = locked if not os.access(locked, os.W_OK) else Path("/proc/1")  # root writes anywhere else

        prober.launch("6", "empty YAML file", "--config", scratch / "empty.yaml")
        prober.launch("6", "--trials 0", "--eval-only", "--checkpoint", trained, "--trials", 0)
        prober.launch("8", "env raises, default num_env_runners 0", *TINY, *own_family,
                      "--set", f"task.family={scratch / 'raising_family.py'}", "--run-dir", scratch / "raises")
        prober.launch("8", "env raises in 1 remote env runner (max_restarts 1)", *TINY, *own_family,
                      "--set", f"task.family={scratch / 'raising_family.py'}", "--set", "env_runners.num_env_runners=1",
                      "--set", "env_runners.num_cpus_per_env_runner=0.5", "--set", "env_runners.max_restarts=1",
                      "--set", "env_runners.restart_delay_s=0", "--run-dir", scratch / "raises_remote")
        prober.launch("8", "observation of shape (2,) for a Box of shape (1,)", *TINY, *own_family,
                      "--set", f"task.family={scratch / 'wide_observation_family.py'}")
        prober.launch("9", "misspelled family file", *TINY, "--set", "task.family=path/to/file.py")
        shutil.copytree(trained, scratch / "corrupt")
        for checkpoint in sorted((scratch / "corrupt" / "checkpoints").iterdir()):
            truncate_weights(checkpoint)
        newest = sorted((scratch / "corrupt" / "checkpoints").iterdir())[-1]
        prober.launch("10", "--eval-only, truncated module_state.pkl", "--eval-only", "--checkpoint", newest,
                      "--trials", 10, "--run-dir", scratch / "report")
        prober.launch("10", "--resume, every checkpoint truncated", "--resume", scratch / "corrupt")
        prober.launch("11", "--run-dir under a file", *TINY, "--run-dir", scratch / "file" / "run")
        prober.launch("11", "--run-dir in an unwritable folder", *TINY, "--run-dir", unwritable / "run")
        prober.launch("11", "port out of range", *TINY, "--address", "127.0.0.1:99999")
        prober.launch("11", "--num-cpus -1", *TINY, "--num-cpus", -1)
        prober.launch("11", "a silent TCP server (not Ray)", *TINY, "--address", servers[0].address)
        prober.launch("11", "a proxy that accepts any TCP and answers HTTP", *TINY, "--address", servers[1].address)
        # Ray's temp folder of their own: `ray start` names its cluster there for `auto` to find.
        cluster_env = {**prober.env, "RAY_TMPDIR": str(scratch / "cluster")}
        prober.launch("11", "--address auto, no cluster started", *TINY, "--address", "auto", env=cluster_env)
        # A loopback cluster: Ray swaps 127.0.0.1 for the machine's address unless told not to.
        cluster_env["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
        head, address = start_head(cluster_env)
        prober.launch("11", f"--address auto with a cluster started at {address} (2 CPUs)", *TINY,
                      "--address", "auto", "--run-dir", scratch / "joined", env=cluster_env, line_prefix="joined")
        stop_group(head.pid)
        head = None
        prober.launch("12", "a model that cannot be allocated", *TINY, "--set", "model.hidden_size=10000000")
        prober.launch("12", "more env runners than CPUs", *TINY, "--set", "env_runners.num_env_runners=1000")
        prober.launch("13", "total_env_steps 10^30", *TINY, "--set", f"training.total_env_steps={10**30}")
        prober.launch("13", "nan learning rate", *TINY, "--set", "training.lr=.nan")
        prober.ctrl_c()
        prober.write(out)
        print(f"table: {out}")
    finally:
        if head is not None:
            stop_group(head.pid)
        for server in servers:
            server.close()
        (scratch / "locked").chmod(0o700)
        shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
