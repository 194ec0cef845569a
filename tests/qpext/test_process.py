"""The qpext process: configuration errors at start, and lifetime tied to the queue-proxy child."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from qpext.config import ConfigError, load_config

FAKE_QUEUE_PROXY = """\
import signal, sys, time
def stop(signum, frame):
    sys.exit(int(sys.argv[1]))
signal.signal(signal.SIGTERM, stop)
print("ready", flush=True)
while True:
    time.sleep(0.05)
"""


def qpext_env(**extra: str) -> dict[str, str]:
    ours = ("KSERVE_", "AGGREGATE_", "SERVING_", "QPEXT_")
    env = {k: v for k, v in os.environ.items() if not k.startswith(ours)}
    env.update(extra)
    return env


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"AGGREGATE_PROMETHEUS_METRICS_PORT": "http"}, "AGGREGATE_PROMETHEUS_METRICS_PORT must be a port"),
        ({"AGGREGATE_PROMETHEUS_METRICS_PORT": "70000"}, "must be a port number"),
        ({"KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": "0"}, "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT must"),
        ({"KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH": "metrics"}, "must be a URL path"),
        (
            {"AGGREGATE_PROMETHEUS_METRICS_PORT": "8080", "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": "8080"},
            "collides",
        ),
        ({"QPEXT_QUEUE_PROXY_BINARY": "/nonexistent/queue"}, "does not exist"),
    ],
)
def test_invalid_configuration_is_one_clear_line(env: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        load_config(env)
    proc = subprocess.run(
        [sys.executable, "-m", "qpext"], env=qpext_env(**env), capture_output=True, text=True, timeout=30
    )
    assert proc.returncode == 2
    assert proc.stderr.count("\n") == 1
    assert message.split()[0] in proc.stderr
    assert "Traceback" not in proc.stderr


def test_configuration_from_upstream_env() -> None:
    config = load_config(
        {
            "AGGREGATE_PROMETHEUS_METRICS_PORT": "9088",
            "KSERVE_CONTAINER_PROMETHEUS_METRICS_PORT": "8080",
            "KSERVE_CONTAINER_PROMETHEUS_METRICS_PATH": "/stats",
            "SERVING_SERVICE": "s",
            "SERVING_CONFIGURATION": "c",
            "SERVING_REVISION": "r",
        },
        [sys.executable, "-c", "pass"],
    )
    assert (config.listen_port, config.app_port, config.app_path) == (9088, 8080, "/stats")
    assert (config.queue_proxy_port, config.queue_proxy_path) == (9091, "/metrics")
    assert config.serverless_label_values == ("s", "c", "r")
    assert config.child_command == (sys.executable, "-c", "pass")
    unset = load_config({})
    assert (unset.listen_port, unset.app_port, unset.app_path) == (0, None, "/metrics")
    assert unset.child_command == ()


def _start(tmp_path: Path, child_exit: int) -> subprocess.Popen[str]:
    script = tmp_path / "queue.py"
    script.write_text(FAKE_QUEUE_PROXY)
    return subprocess.Popen(
        [sys.executable, "-m", "qpext", sys.executable, str(script), str(child_exit)],
        env=qpext_env(AGGREGATE_PROMETHEUS_METRICS_PORT="0"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def _child_pid(proc: subprocess.Popen[str]) -> int:
    assert proc.stdout is not None
    assert proc.stdout.readline() == "ready\n"
    children = Path(f"/proc/{proc.pid}/task/{proc.pid}/children").read_text().split()
    assert len(children) == 1
    return int(children[0])


def test_sigterm_stops_child_and_qpext_promptly(tmp_path: Path) -> None:
    proc = _start(tmp_path, child_exit=0)
    try:
        child = _child_pid(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2) == 0
        assert not Path(f"/proc/{child}").exists() or "zombie" in Path(f"/proc/{child}/status").read_text()
    finally:
        proc.kill()
        proc.wait()
    assert proc.stderr is not None
    assert "forwarding SIGTERM to queue-proxy" in proc.stderr.read()


def test_exit_code_is_the_childs(tmp_path: Path) -> None:
    proc = _start(tmp_path, child_exit=3)
    try:
        _child_pid(proc)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=2) == 3
    finally:
        proc.kill()
        proc.wait()
