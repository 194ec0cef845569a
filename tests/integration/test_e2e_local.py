"""What the e2e suite's local mode changes in the shipped manifests, checked without a cluster.

The suite itself (`e2e/suite`) runs from `make test` as its own pytest invocations (`--target local` and
`--target node`), so each e2e failure is reported under its own test name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from e2e.suite.manifests import unpatched_webhook_configurations, url_webhook_configurations

REPO = Path(__file__).resolve().parents[2]


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
