"""A plain local run exposes nothing: every TCP socket that launch.py's process tree listens on
(the driver, and the embedded Ray's GCS, raylet, agents and workers) is bound to loopback."""

from __future__ import annotations

import ipaddress
import os
import subprocess
import time

import ray  # noqa: F401  (puts Ray's bundled psutil on sys.path)
import psutil

from conftest import ROOT, free_port, launch_command, stop_process_group, tiny_run_args

Listener = tuple[str, str, int]  # process name, local address, port


def is_loopback(ip: str) -> bool:
    """127.0.0.0/8 and ::1, also as IPv4-mapped IPv6 (grpc listens on ``::ffff:127.0.0.1``).

    >>> [is_loopback(ip) for ip in ("127.0.0.1", "::ffff:127.0.0.1", "::1", "0.0.0.0", "::", "192.0.2.2")]
    [True, True, True, False, False, False]
    """
    address = ipaddress.ip_address(ip)
    return (getattr(address, "ipv4_mapped", None) or address).is_loopback


def listeners(root: psutil.Process) -> set[Listener]:
    """The listening TCP sockets (IPv4 and IPv6) of ``root`` and all its descendants."""
    found = set()
    for proc in [root, *root.children(recursive=True)]:
        try:
            name = proc.name()
            found |= {(name, conn.laddr.ip, conn.laddr.port) for conn in proc.net_connections(kind="tcp")
                      if conn.status == psutil.CONN_LISTEN}
        except psutil.Error:  # it exited between the listing and the reading
            continue
    return found


def test_local_run_listens_on_loopback_only(tmp_path):
    """The union of the listeners seen during a whole tiny run, polled every 0.2 s.

    The autoscaler's and the dashboard's Prometheus endpoints get free ports (Ray's env vars):
    on their fixed defaults they would not start while another Ray on this machine holds them,
    and the test would not see them. (The agent's HTTP port, 52365, has no such switch.)
    """
    command = launch_command(*tiny_run_args(total_env_steps=1000, final_num_trials=20),
                             "--run-dir", tmp_path / "run", "--num-cpus", 2)
    env = {key: value for key, value in os.environ.items() if key != "RAY_ADDRESS"}
    env["RAY_AUTH_MODE"] = "disabled"  # as for every test Ray; token mode binds the same sockets
    metrics_ports = {"AUTOSCALER_METRIC_PORT": free_port(), "DASHBOARD_METRIC_PORT": free_port()}
    env.update({name: str(port) for name, port in metrics_ports.items()})
    log = tmp_path / "launch.log"
    with log.open("w") as out:
        driver = subprocess.Popen(command, cwd=ROOT, env=env, start_new_session=True, stdout=out, stderr=out)
    seen: set[Listener] = set()
    try:
        root = psutil.Process(driver.pid)
        deadline = time.monotonic() + 180
        while driver.poll() is None and time.monotonic() < deadline:
            seen |= listeners(root)
            time.sleep(0.2)
        driver.wait(timeout=30)
    finally:
        stop_process_group(driver.pid)
    assert driver.returncode == 0, log.read_text()[-3000:]
    assert {"gcs_server", "raylet"} <= {name for name, _, _ in seen}, seen  # Ray ran and was seen
    assert set(metrics_ports.values()) <= {port for _, _, port in seen}, seen
    exposed = sorted(f"{name} {ip}:{port}" for name, ip, port in seen if not is_loopback(ip))
    assert not exposed, f"listening beyond loopback: {exposed}"
