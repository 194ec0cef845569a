"""Run a manager as a real child process and talk to it over its HTTP endpoints."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from prometheus_client.parser import text_string_to_metric_families

from e2e.localcluster.cluster import free_port

REPO = Path(__file__).resolve().parents[2]


class ManagerProcess:
    """A `tests.support.marker_manager` (or any manager module) child process."""

    def __init__(
        self,
        kubeconfig: Path | None,
        log_dir: Path,
        *,
        namespace: str = "kserve",
        args: Sequence[str] = (),
        module: str = "tests.support.marker_manager",
        name: str = "manager",
    ) -> None:
        self.metrics_port = free_port()
        self.probe_port = free_port()
        self.log_path = log_dir / f"{name}-{self.metrics_port}.log"
        argv = [
            sys.executable,
            "-m",
            module,
            f"--metrics-addr=127.0.0.1:{self.metrics_port}",
            f"--health-probe-addr=127.0.0.1:{self.probe_port}",
            *args,
        ]
        if kubeconfig is not None:
            argv.append(f"--kubeconfig={kubeconfig}")
        env = dict(os.environ, POD_NAMESPACE=namespace)
        env.pop("KUBECONFIG", None)
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(argv, cwd=REPO, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def http(self, port: int, path: str, timeout: float = 2.0) -> tuple[int, str]:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as r:
                return r.status, r.read().decode()
        except urllib.error.HTTPError as e:
            return e.code, e.read().decode()

    def wait_ready(self, timeout: float = 60.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"manager exited with {self.proc.returncode}:\n{self.output()}")
            try:
                if self.http(self.probe_port, "/readyz")[0] == 200:
                    return
            except OSError:
                pass
            time.sleep(0.1)
        raise AssertionError(f"manager not ready within {timeout}s:\n{self.output()}")

    def metrics(self) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        status, text = self.http(self.metrics_port, "/metrics")
        assert status == 200, text
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float] = {}
        for family in text_string_to_metric_families(text):
            for s in family.samples:
                samples[(s.name, tuple(sorted(s.labels.items())))] = s.value
        return samples

    def sample(self, metric: str, /, **labels: str) -> float | None:
        try:
            return self.metrics().get((metric, tuple(sorted(labels.items()))))
        except OSError:
            return None

    def is_leader(self, lease: str) -> bool:
        return self.sample("leader_election_master_status", name=lease) == 1.0

    def signal(self, sig: signal.Signals) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(sig)

    def wait(self, timeout: float) -> int:
        return self.proc.wait(timeout)

    def output(self) -> str:
        self._log.flush()
        return self.log_path.read_text(errors="replace")

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)
        self._log.close()
