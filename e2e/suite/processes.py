"""Child processes of the local e2e deployment: the manager replicas and the Knative Serving double.

Each child runs in its own session so it (and anything it forks) can be signalled as a group, writes to its
own log file under the artifacts directory, and is killed when the suite ends. The manager wrapper knows the
manager's ports and reads its Prometheus metrics, which is how the suite tells which replica leads.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from e2e.localcluster.cluster import free_port

HTTP_TIMEOUT_S = 5.0
TAIL_LINES = 40


def http_get(url: str, timeout: float = HTTP_TIMEOUT_S) -> tuple[int, str]:
    """GET `url`; (status, body). Connection errors raise OSError."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        body = exc.read().decode(errors="replace")
        exc.close()
        return exc.code, body


def http_post_json(
    url: str, payload: object, timeout: float = HTTP_TIMEOUT_S, headers: Mapping[str, str] | None = None
) -> tuple[int, Any]:
    """POST `payload` as JSON; (status, decoded JSON body, or the text when it is not JSON)."""
    request = urllib.request.Request(
        url,
        data=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as resp:
            status, raw = resp.status, resp.read()
    except urllib.error.HTTPError as exc:
        status, raw = exc.code, exc.read()
        exc.close()
    try:
        return status, json.loads(raw)
    except ValueError:
        return status, raw.decode(errors="replace")


class ChildProcess:
    """One child process with its output in `log_path`."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str], cwd: Path
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.proc = subprocess.Popen(
            self.argv,
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    @property
    def pid(self) -> int:
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc.poll() is None

    def signal(self, sig: signal.Signals) -> None:
        if self.alive():
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, sig)

    def stop(self, grace: float = 10.0) -> int:
        """SIGTERM, then SIGKILL after `grace` seconds; returns the exit code."""
        self.signal(signal.SIGTERM)
        try:
            code = self.proc.wait(grace)
        except subprocess.TimeoutExpired:
            self.signal(signal.SIGKILL)
            code = self.proc.wait(grace)
        self._log.close()
        return code

    def kill(self) -> None:
        """SIGKILL (no chance to release the lease or finish work), and reap."""
        self.signal(signal.SIGKILL)
        self.proc.wait(10)
        self._log.close()

    def tail(self, lines: int = TAIL_LINES) -> str:
        with contextlib.suppress(ValueError):
            self._log.flush()
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


class ManagerProcess(ChildProcess):
    """`python -m controllers.main` with loopback metrics, probe and webhook ports."""

    def __init__(
        self,
        name: str,
        *,
        kubeconfig: Path,
        namespace: str,
        cert_dir: Path,
        log_dir: Path,
        cwd: Path,
        extra_args: Sequence[str] = (),
    ) -> None:
        self.metrics_port = free_port()
        self.probe_port = free_port()
        self.webhook_port = free_port()
        argv = [
            sys.executable,
            "-m",
            "controllers.main",
            f"--kubeconfig={kubeconfig}",
            f"--metrics-addr=127.0.0.1:{self.metrics_port}",
            f"--health-probe-addr=127.0.0.1:{self.probe_port}",
            f"--webhook-port={self.webhook_port}",
            "--webhook-host=127.0.0.1",
            "--webhook-self-signed",
            "--webhook-cert-ip=127.0.0.1",
            f"--webhook-cert-dir={cert_dir}",
            *extra_args,
        ]
        env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
        env["POD_NAMESPACE"] = namespace
        super().__init__(name, argv, log_dir, env, cwd)

    def url(self, port: int, path: str) -> str:
        return f"http://127.0.0.1:{port}{path}"

    def ready(self) -> bool:
        try:
            return http_get(self.url(self.probe_port, "/readyz"), timeout=2.0)[0] == 200
        except OSError:
            return False

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                raise RuntimeError(f"manager {self.name} exited with {self.proc.returncode}:\n{self.tail()}")
            if self.ready():
                return
            time.sleep(0.2)
        raise RuntimeError(f"manager {self.name} not ready within {timeout:.0f}s:\n{self.tail()}")

    def metrics_text(self) -> str:
        status, text = http_get(self.url(self.metrics_port, "/metrics"))
        if status != 200:
            raise RuntimeError(f"manager {self.name} /metrics answered HTTP {status}")
        return text

    def sample(self, metric: str, **labels: str) -> float | None:
        """One sample's value from /metrics, or None when absent or the manager is unreachable."""
        try:
            text = self.metrics_text()
        except (OSError, RuntimeError):
            return None
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                if s.name == metric and all(s.labels.get(k) == v for k, v in labels.items()):
                    return float(s.value)
        return None

    def is_leader(self, lease: str) -> bool:
        return self.alive() and self.sample("leader_election_master_status", name=lease) == 1.0
