"""The e2e suite (`e2e/suite`) in local mode, run from the main test command.

The suite lives outside `tests/` so a plain `pytest` does not collect it twice and so it can also target a
kind cluster; here it runs as its own pytest process (its own control plane, manager replicas and Knative
double), and this test passes only if every e2e test passed. Its artifacts directory is kept on failure
and named in the output.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from e2e.suite.manifests import unpatched_webhook_configurations, url_webhook_configurations

REPO = Path(__file__).resolve().parents[2]
SUITE_TIMEOUT_S = 280.0
OUTPUT_TAIL = 80


def shipped_webhook_configurations() -> list[dict[str, Any]]:
    text = (REPO / "config" / "webhook" / "manifests.yaml").read_text()
    return [doc for doc in yaml.safe_load_all(text) if isinstance(doc, dict)]


def test_local_webhook_configurations_are_the_ones_the_manager_patches() -> None:
    shipped = shipped_webhook_configurations()
    assert unpatched_webhook_configurations(shipped) == []
    rendered = url_webhook_configurations(shipped, "https://127.0.0.1:1234")
    assert [(o["kind"], o["metadata"]["name"]) for o in rendered] == [
        (o["kind"], o["metadata"]["name"]) for o in shipped
    ]
    urls = [w["clientConfig"]["url"] for o in rendered for w in o["webhooks"]]
    assert "https://127.0.0.1:1234/mutate-pods" in urls
    assert all(u.startswith("https://127.0.0.1:1234/") for u in urls)
    assert not any("service" in w["clientConfig"] for o in rendered for w in o["webhooks"])


@pytest.mark.cluster
def test_e2e_suite_passes_on_the_local_control_plane() -> None:
    argv = [
        sys.executable,
        "-m",
        "pytest",
        "e2e/suite",
        "--target=local",
        "-p",
        "no:cacheprovider",
        "-q",
        "-rfEs",
    ]
    try:
        done = subprocess.run(
            argv, cwd=REPO, capture_output=True, text=True, timeout=SUITE_TIMEOUT_S, check=False
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode(errors="replace") if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        pytest.fail(f"the e2e suite did not finish within {SUITE_TIMEOUT_S:.0f}s:\n{out[-5000:]}")
    tail = "\n".join(done.stdout.splitlines()[-OUTPUT_TAIL:])
    assert done.returncode == 0, f"e2e suite failed (exit {done.returncode}):\n{tail}\n{done.stderr[-2000:]}"
    assert " passed" in done.stdout, tail
