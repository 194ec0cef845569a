"""`make run` end to end, as a newcomer uses it: the printed commands work, and Ctrl-C removes everything.

The run starts the local cluster with its node, the manager Deployment, the Knative double and the S3 store;
the test applies the sample file it names, waits for Ready, sends the printed prediction, and then sends
Ctrl-C the way a terminal does (to the whole process group).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from e2e.localcluster.binaries import kubectl
from tests.support.hoststate import HostState, processes_mentioning
from tests.support.process import REPO

pytestmark = [pytest.mark.cluster, pytest.mark.node]


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


def test_run_serves_a_prediction_until_interrupted(tmp_path: Path) -> None:
    before = HostState.capture()
    workdir = tmp_path / "run"
    argv = [sys.executable, "-m", "e2e.localcluster.run", f"--dir={workdir}", "--", "--log-level=debug"]
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
        kubeconfig = wait_for_line(proc, r"export KUBECONFIG=(\S+)", 900, seen).group(1)
        sample = wait_for_line(proc, r"kubectl apply -f (\S+)", 10, seen).group(1)
        wait_for_line(proc, r"Press Ctrl-C", 10, seen)
        ctl = [str(kubectl()), f"--kubeconfig={kubeconfig}"]
        args = subprocess.run(
            [*ctl, "-n", "kserve", "get", "deployment", "kserve-controller-manager", "-o", "json"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        assert "--log-level=debug" in json.loads(args)["spec"]["template"]["spec"]["containers"][0]["args"]
        subprocess.run([*ctl, "apply", "-f", sample], check=True, capture_output=True)
        subprocess.run(
            [*ctl, "wait", "inferenceservice/sklearn-iris", "--for=condition=Ready", "--timeout=300s"],
            check=True,
            capture_output=True,
            timeout=330,
        )
        ip = subprocess.run(
            [
                *ctl,
                "get",
                "service",
                "sklearn-iris-predictor-00001-private",
                "-o",
                "jsonpath={.spec.clusterIP}",
            ],
            check=True,
            capture_output=True,
            text=True,
        ).stdout
        request = urllib.request.Request(
            f"http://{ip}/v1/models/sklearn-iris:predict",
            data=json.dumps({"instances": [[6.8, 2.8, 4.8, 1.4], [6.0, 3.4, 4.5, 1.6]]}).encode(),
            headers={"Content-Type": "application/json"},
            method="POST",
        )
        with urllib.request.urlopen(request, timeout=60) as resp:
            assert json.loads(resp.read()) == {"predictions": [1, 1]}
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        try:
            code = proc.wait(120)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            raise
        if proc.stdout is not None:
            seen.append(proc.stdout.read())
    assert code == 0, "".join(seen)
    assert "shutdown complete" in "".join(seen)
    assert processes_mentioning(str(workdir)) == []
    assert before.differences(HostState.capture()) == []
