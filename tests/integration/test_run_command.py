"""`make run` end to end: local control plane, manager, Knative double; a sample goes Ready.

Ctrl-C is sent the way a terminal sends it, to the whole process group.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from e2e.localcluster.binaries import kubectl
from e2e.localcluster.cluster import free_port
from tests.support.process import REPO

pytestmark = pytest.mark.cluster


def wait_for_line(
    proc: subprocess.Popen[str], pattern: str, timeout: float, seen: list[str]
) -> re.Match[str]:
    deadline = time.monotonic() + timeout
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            if proc.poll() is not None:
                raise AssertionError("run exited early:\n" + "".join(seen))
            continue
        seen.append(line)
        match = re.search(pattern, line)
        if match:
            return match
    raise AssertionError(f"no line matching {pattern!r} within {timeout}s:\n" + "".join(seen))


def test_run_serves_a_sample_until_interrupted(tmp_path: Path) -> None:
    workdir = tmp_path / "cluster"
    probe = free_port()
    argv = [
        sys.executable,
        "-m",
        "e2e.localcluster.run",
        f"--dir={workdir}",
        "--",
        f"--metrics-addr=127.0.0.1:{free_port()}",
        f"--health-probe-addr=127.0.0.1:{probe}",
        f"--webhook-port={free_port()}",
        "--webhook-host=127.0.0.1",
    ]
    env = {k: v for k, v in os.environ.items() if k != "KUBECONFIG"}
    proc = subprocess.Popen(
        argv,
        cwd=REPO,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    seen: list[str] = []
    try:
        kubeconfig = wait_for_line(proc, r"export KUBECONFIG=(\S+)", 120, seen).group(1)
        wait_for_line(proc, r"health probe server listening", 60, seen)
        sample = REPO / "config" / "samples" / "sklearn-iris-v2.yaml"
        ctl = [str(kubectl()), f"--kubeconfig={kubeconfig}"]
        subprocess.run([*ctl, "apply", "-n", "default", "-f", str(sample)], check=True, capture_output=True)
        name = subprocess.run(
            [*ctl, "create", "--dry-run=client", "-f", str(sample), "-o", "jsonpath={.metadata.name}"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        deadline = time.monotonic() + 60
        status: dict[str, object] = {}
        while time.monotonic() < deadline:
            out = subprocess.run(
                [*ctl, "get", "isvc", name, "-n", "default", "-o", "json"], capture_output=True, text=True
            )
            if out.returncode == 0:
                status = json.loads(out.stdout).get("status", {})
                ready = [c for c in status.get("conditions", []) if c["type"] == "Ready"]  # type: ignore[attr-defined]
                if ready and ready[0]["status"] == "True":
                    break
            time.sleep(0.5)
        assert status.get("url") == f"http://{name}.default.example.com", status
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        if proc.stdout is not None:
            seen.append(proc.stdout.read())
    assert code in (0, 130), "".join(seen)
    assert "shutdown complete" in "".join(seen)
    leftovers = subprocess.run(["pgrep", "-f", str(workdir)], capture_output=True, text=True).stdout.split()
    assert not leftovers, f"processes still running for {workdir}: {leftovers}"
