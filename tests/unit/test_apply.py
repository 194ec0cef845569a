"""The write-only-when-owned-fields-differ rule."""

from __future__ import annotations

import copy
from typing import Any

from reconcilers.apply import HASH_ANNOTATION, is_subset, needs_write, with_fingerprint

DESIRED: dict[str, Any] = {
    "apiVersion": "serving.knative.dev/v1",
    "kind": "Service",
    "metadata": {"name": "a-predictor", "namespace": "ns", "labels": {"component": "predictor"}},
    "spec": {"template": {"spec": {"containers": [{"name": "kserve-container", "image": "img:1"}]}}},
}


def live_after_write(desired: dict[str, Any]) -> dict[str, Any]:
    """What the server returns: our fields plus defaults filled in by others."""
    live = copy.deepcopy(with_fingerprint(desired))
    live["metadata"]["resourceVersion"] = "7"
    live["metadata"]["annotations"]["serving.knative.dev/creator"] = "admin"
    container = live["spec"]["template"]["spec"]["containers"][0]
    container["readinessProbe"] = {"successThreshold": 1}
    live["spec"]["template"]["spec"]["timeoutSeconds"] = 300
    return live


def test_missing_object_needs_a_write() -> None:
    assert needs_write(DESIRED, None)


def test_server_defaults_do_not_cause_writes() -> None:
    assert not needs_write(DESIRED, live_after_write(DESIRED))


def test_drift_of_an_owned_field_is_repaired() -> None:
    live = live_after_write(DESIRED)
    live["spec"]["template"]["spec"]["containers"][0]["image"] = "hand-edited"
    assert needs_write(DESIRED, live)


def test_a_field_we_stop_setting_is_noticed_through_the_fingerprint() -> None:
    live = live_after_write(DESIRED)
    smaller = copy.deepcopy(DESIRED)
    del smaller["metadata"]["labels"]
    assert is_subset({k: v for k, v in smaller.items()}, live)
    assert needs_write(smaller, live)


def test_fingerprint_ignores_key_order_and_is_stamped() -> None:
    reordered = {
        "spec": DESIRED["spec"],
        "metadata": DESIRED["metadata"],
        "kind": "Service",
        "apiVersion": "x",
    }
    reordered["apiVersion"] = DESIRED["apiVersion"]
    a = with_fingerprint(DESIRED)["metadata"]["annotations"][HASH_ANNOTATION]
    b = with_fingerprint(reordered)["metadata"]["annotations"][HASH_ANNOTATION]
    assert a == b
    assert len(a) == 16


def test_subset_rules() -> None:
    assert is_subset({"a": 1}, {"a": 1.0, "b": 2})
    assert not is_subset({"a": [1, 2]}, {"a": [1, 2, 3]})
    assert not is_subset({"a": True}, {"a": 1})
    assert not is_subset({"a": {"b": "c"}}, {"a": "c"})
    assert is_subset([], [])
