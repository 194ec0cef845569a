"""The manager as a process: metrics, probes, leader failover, graceful shutdown, and bad start-up input."""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from manager.client import CONFIGMAPS, LEASES, Client
from manager.errors import NotFound
from manager.options import LEADER_ELECTION_ID
from tests.support.marker_manager import BY, LABEL
from tests.support.process import ManagerProcess

CONTROLLER = "configmap-marker"


@pytest.fixture
def spawn(tmp_path: Path, kubeconfig: Path) -> Iterator[Callable[..., ManagerProcess]]:
    started: list[ManagerProcess] = []

    def start(*args: str, namespace: str = "kserve", name: str = "manager") -> ManagerProcess:
        proc = ManagerProcess(kubeconfig, tmp_path, namespace=namespace, args=args, name=name)
        started.append(proc)
        return proc

    yield start
    for proc in started:
        proc.close()


async def eventually(check: Callable[[], object], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if await asyncio.to_thread(check):
            return
        await asyncio.sleep(0.1)
    raise AssertionError(f"not within {timeout}s: {what}")


def marked(namespace: str, name: str, value: str = "x", **extra: str) -> dict[str, object]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": namespace, "labels": {LABEL: "true"}},
        "data": {"value": value, **extra},
    }


async def reconciled_by(client: Client, namespace: str, name: str) -> str | None:
    try:
        obj = await client.get(CONFIGMAPS, name, namespace)
    except NotFound:
        return None
    return (obj["metadata"].get("annotations") or {}).get(BY)


async def wait_marked(client: Client, namespace: str, name: str, timeout: float = 30.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        who = await reconciled_by(client, namespace, name)
        if who:
            return who
        await asyncio.sleep(0.1)
    raise AssertionError(f"{namespace}/{name} was not reconciled within {timeout}s")


async def test_metrics_and_probes_show_live_values(
    client: Client, namespace: str, spawn: Callable[..., ManagerProcess]
) -> None:
    mgr = spawn("--max-concurrent-reconciles=3")
    await asyncio.to_thread(mgr.wait_ready)
    assert mgr.http(mgr.probe_port, "/healthz") == (200, "ok")
    status, text = mgr.http(mgr.probe_port, "/readyz?verbose")
    assert status == 200
    assert "[+]cache-sync ok" in text
    for i in range(5):
        await client.create(CONFIGMAPS, marked(namespace, f"m-{i}"))
    for i in range(5):
        await wait_marked(client, namespace, f"m-{i}")
    m = await asyncio.to_thread(mgr.metrics)
    ctl = (("controller", CONTROLLER),)
    q = (("controller", CONTROLLER), ("name", CONTROLLER))
    assert m[("controller_runtime_reconcile_total", (("controller", CONTROLLER), ("result", "success")))] >= 5
    assert ("controller_runtime_reconcile_total", (("controller", CONTROLLER), ("result", "error"))) in m
    assert m[("controller_runtime_reconcile_errors_total", ctl)] == 0
    assert m[("controller_runtime_max_concurrent_reconciles", ctl)] == 3
    assert m[("controller_runtime_active_workers", ctl)] == 0
    assert m[("controller_runtime_reconcile_time_seconds_count", ctl)] >= 5
    assert m[("workqueue_adds_total", q)] >= 5
    assert m[("workqueue_depth", q)] == 0
    assert m[("workqueue_queue_duration_seconds_count", q)] >= 5
    assert m[("workqueue_work_duration_seconds_count", q)] >= 5
    assert ("workqueue_retries_total", q) in m
    assert ("workqueue_unfinished_work_seconds", q) in m
    assert ("workqueue_longest_running_processor_seconds", q) in m
    assert any(name == "rest_client_requests_total" and dict(lbl).get("method") == "PATCH" for name, lbl in m)
    assert any(name == "process_resident_memory_bytes" for name, _ in m)


async def lease_holder(client: Client, namespace: str) -> str:
    try:
        lease = await client.get(LEASES, LEADER_ELECTION_ID, namespace)
    except NotFound:
        return ""
    return str(lease.get("spec", {}).get("holderIdentity") or "")


async def test_leader_election_failover_and_release(
    client: Client, namespace: str, spawn: Callable[..., ManagerProcess]
) -> None:
    a = spawn("--leader-elect", namespace=namespace, name="a")
    b = spawn("--leader-elect", namespace=namespace, name="b")
    await asyncio.to_thread(a.wait_ready)
    await asyncio.to_thread(b.wait_ready)
    lease = LEADER_ELECTION_ID
    await eventually(lambda: a.is_leader(lease) or b.is_leader(lease), 30, "a leader")
    leader, follower = (a, b) if a.is_leader(lease) else (b, a)
    assert not follower.is_leader(lease)
    holder = await lease_holder(client, namespace)
    assert holder

    # Only the leader reconciles.
    for i in range(4):
        await client.create(CONFIGMAPS, marked(namespace, f"first-{i}"))
    assert {await wait_marked(client, namespace, f"first-{i}") for i in range(4)} == {holder}
    follower_total = follower.sample(
        "controller_runtime_reconcile_total", controller=CONTROLLER, result="success"
    )
    assert follower_total == 0

    # SIGKILL the leader: the lease is not released; the follower takes over once it expires.
    leader.signal(signal.SIGKILL)
    killed_at = time.monotonic()
    await eventually(lambda: follower.is_leader(lease), 20, "the follower leads within 20 s of a SIGKILL")
    took_over = time.monotonic() - killed_at
    new_holder = await lease_holder(client, namespace)
    assert new_holder
    assert new_holder != holder
    await client.create(CONFIGMAPS, marked(namespace, "second"))
    assert await wait_marked(client, namespace, "second") == new_holder

    # SIGTERM the new leader with a fresh follower waiting: it releases the lease and exits 0.
    c = spawn("--leader-elect", namespace=namespace, name="c")
    await asyncio.to_thread(c.wait_ready)
    assert not c.is_leader(lease)
    follower.signal(signal.SIGTERM)
    terminated_at = time.monotonic()
    assert await asyncio.to_thread(follower.wait, 30) == 0, follower.output()
    await eventually(lambda: c.is_leader(lease), 5, "the next replica leads within 5 s of a SIGTERM")
    print(f"takeover after SIGKILL {took_over:.1f}s, after SIGTERM {time.monotonic() - terminated_at:.1f}s")
    assert "released" in follower.output().lower()


async def test_sigterm_lets_in_flight_reconcile_finish(
    client: Client, namespace: str, spawn: Callable[..., ManagerProcess]
) -> None:
    mgr = spawn()
    await asyncio.to_thread(mgr.wait_ready)
    await client.create(CONFIGMAPS, marked(namespace, "slow", sleep="3"))
    # One worker busy for a whole second is the 3 s reconcile: every other ConfigMap of the cluster (a new
    # namespace's kube-root-ca.crt, those of namespaces being deleted) takes milliseconds.
    busy_since: list[float] = []

    def slow_reconcile_running() -> bool:
        if mgr.sample("controller_runtime_active_workers", controller=CONTROLLER) != 1:
            busy_since.clear()
            return False
        busy_since[:] = busy_since[:1] or [time.monotonic()]
        return time.monotonic() - busy_since[0] >= 1.0

    await eventually(slow_reconcile_running, 30, "the slow reconcile running for a second")
    mgr.signal(signal.SIGTERM)
    assert await asyncio.to_thread(mgr.wait, 30) == 0, mgr.output()
    assert await reconciled_by(client, namespace, "slow"), "the in-flight reconcile should have completed"
    assert "shutdown complete" in mgr.output()


def one_line_error(proc: ManagerProcess) -> str:
    code = proc.wait(60)
    out = proc.output()
    assert code != 0, out
    assert "Traceback" not in out, out
    errors = [line for line in out.splitlines() if line.startswith("kserve-manager:")]
    assert len(errors) == 1, out
    return errors[0]


def test_missing_kubeconfig_is_one_clear_line(tmp_path: Path) -> None:
    proc = ManagerProcess(tmp_path / "nope.yaml", tmp_path)
    try:
        assert "does not exist" in one_line_error(proc)
    finally:
        proc.close()


def test_invalid_kubeconfig_is_one_clear_line(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("this: [is not: a kubeconfig")
    proc = ManagerProcess(bad, tmp_path)
    try:
        assert "invalid kubeconfig" in one_line_error(proc)
    finally:
        proc.close()


def test_unreachable_server_is_one_clear_line(tmp_path: Path) -> None:
    port = socket.socket()
    port.bind(("127.0.0.1", 0))
    config = {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": "c", "cluster": {"server": f"https://127.0.0.1:{port.getsockname()[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "x", "context": {"cluster": "c", "user": "u"}}],
        "current-context": "x",
    }
    path = tmp_path / "kubeconfig.json"
    path.write_text(json.dumps(config))
    proc = ManagerProcess(path, tmp_path)
    try:
        assert "unreachable" in one_line_error(proc)
    finally:
        proc.close()
        port.close()


def test_port_in_use_is_one_clear_line(tmp_path: Path, kubeconfig: Path) -> None:
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    proc = ManagerProcess(
        kubeconfig, tmp_path, args=[f"--health-probe-addr=127.0.0.1:{busy.getsockname()[1]}"], name="busy"
    )
    try:
        assert "address already in use" in one_line_error(proc)
    finally:
        proc.close()
        busy.close()
