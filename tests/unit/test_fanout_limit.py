"""Tests for spreading fan-out re-queues through a token bucket: the bucket's decisions on a fake clock, the
work queue scheduling the keys it delays, the Builder wiring it to mapping watches only, and the
InferenceService controller using it for the `inferenceservice-config` fan-out. No test sleeps or times."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry

import controllers.inferenceservice as isvc_controller
from apis import constants as c
from apis.resources import INFERENCE_SERVICES
from manager.cache import Cache
from manager.client import CONFIGMAPS, Client, Object, RequestHook
from manager.controller import Builder, Controller
from manager.handlers import SpreadThroughBucket
from manager.manager import Manager
from manager.metrics import Metrics
from manager.options import ManagerOptions
from manager.ratelimit import TokenBucket
from manager.reconcile import Request, Result
from manager.workqueue import WorkQueue
from tests.support.fakecluster import FakeCluster


class FakeClock:
    def __init__(self) -> None:
        self.now = 500.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def test_bucket_gives_the_burst_at_once_then_one_token_per_interval() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 3, clock=clock)
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert [round(bucket.reserve(), 9) for _ in range(3)] == [0.1, 0.2, 0.3]


def test_bucket_refills_at_its_rate_up_to_the_burst() -> None:
    clock = FakeClock()
    bucket = TokenBucket(10.0, 3, clock=clock)
    for _ in range(3):
        bucket.reserve()
    clock.advance(0.1)  # one token back
    assert bucket.reserve() == 0.0
    assert round(bucket.reserve(), 9) == 0.1
    clock.advance(3600)  # long idle: never more than the burst saved up
    assert [bucket.reserve() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert round(bucket.reserve(), 9) == 0.1


def test_bucket_debt_is_paid_back_before_new_tokens() -> None:
    clock = FakeClock()
    bucket = TokenBucket(2.0, 1, clock=clock)
    assert bucket.reserve() == 0.0
    assert bucket.reserve() == 0.5
    assert bucket.reserve() == 1.0
    clock.advance(1.0)  # the two reserved tokens have been produced; the balance is back at zero
    assert bucket.reserve() == 0.5


@pytest.mark.parametrize(("rate", "burst"), [(0.0, 1), (-1.0, 1), (1.0, 0)])
def test_bucket_rejects_settings_that_would_never_release_a_key(rate: float, burst: int) -> None:
    with pytest.raises(ValueError, match="must be"):
        TokenBucket(rate, burst)


def test_spread_queues_the_burst_now_and_the_rest_at_the_rate() -> None:
    clock = FakeClock()
    queue: WorkQueue[Request] = WorkQueue(clock=clock)
    spread = SpreadThroughBucket(queue, TokenBucket(100.0, 100, clock=clock))
    for i in range(250):
        spread.add(Request("ns", f"isvc-{i}"))
    assert len(queue) == 100
    clock.advance(0.5)
    assert len(queue) == 150
    clock.advance(1.0)
    assert len(queue) == 250


def test_spread_takes_no_token_for_a_key_already_queued() -> None:
    clock = FakeClock()
    queue: WorkQueue[Request] = WorkQueue(clock=clock)
    bucket = TokenBucket(1.0, 2, clock=clock)
    spread = SpreadThroughBucket(queue, bucket)
    spread.add(Request("ns", "a"))
    spread.add(Request("ns", "a"))  # already ready: no token
    spread.add(Request("ns", "b"))
    assert len(queue) == 2
    assert bucket.reserve() == 1.0  # both burst tokens went to a and b, none to the repeat


def test_spread_moves_a_later_requeue_forward_to_its_slot() -> None:
    clock = FakeClock()
    queue: WorkQueue[Request] = WorkQueue(clock=clock)
    key = Request("ns", "a")
    queue.add_after(key, 600.0)  # e.g. a Result(requeue_after=600)
    SpreadThroughBucket(queue, TokenBucket(1.0, 1, clock=clock)).add(key)
    assert len(queue) == 1


class Nothing:
    async def reconcile(self, request: Request) -> Result:
        return Result()


def _builder(cache: Cache, registered: list[Controller]) -> Builder:
    return Builder(cache, Metrics(CollectorRegistry()), registered.append)


def _configmap(name: str, namespace: str) -> Object:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "namespace": namespace}}


def test_builder_spreads_mapping_watches_and_leaves_the_primary_kind_alone() -> None:
    cache = Cache(FakeCluster().client)
    keys = [Request("ns", f"isvc-{i}") for i in range(5)]
    controller = (
        _builder(cache, [])
        .for_(INFERENCE_SERVICES)
        .watches(CONFIGMAPS, lambda obj: keys, namespace="kserve")
        .with_fanout_limit(0.001, 2)  # one token per 1,000 s: only the burst is due during the test
        .complete(Nothing())
    )
    for handler in cache.informer(CONFIGMAPS, "kserve")._handlers:
        handler.on_add(_configmap("any", "kserve"))
    assert len(controller.queue) == 2
    for i in range(5):
        for handler in cache.informer(INFERENCE_SERVICES)._handlers:
            handler.on_add({"metadata": {"name": f"own-{i}", "namespace": "ns"}})
    assert len(controller.queue) == 7  # the primary kind's own events are never delayed


def test_builder_without_a_fanout_limit_queues_every_mapped_key_at_once() -> None:
    cache = Cache(FakeCluster().client)
    keys = [Request("ns", f"isvc-{i}") for i in range(5)]
    controller = (
        _builder(cache, []).for_(INFERENCE_SERVICES).watches(CONFIGMAPS, lambda obj: keys).complete(Nothing())
    )
    for handler in cache.informer(CONFIGMAPS)._handlers:
        handler.on_add(_configmap("any", "ns"))
    assert len(controller.queue) == 5


def test_builder_validates_the_fanout_limit_when_it_is_set() -> None:
    with pytest.raises(ValueError, match="rate must be positive"):
        _builder(Cache(FakeCluster().client), []).with_fanout_limit(0.0, 10)


class ManagedFakeCluster(FakeCluster):
    """The fake cluster plus what `Manager` asks of its client at construction."""

    host = "https://127.0.0.1:6443"

    def set_request_hook(self, hook: RequestHook | None) -> None:
        pass


def test_isvc_controller_spreads_the_config_fanout(monkeypatch: pytest.MonkeyPatch) -> None:
    assert isvc_controller.FANOUT_LIMIT is not None
    monkeypatch.setattr(isvc_controller, "FANOUT_LIMIT", (0.001, 3))
    client: Client = ManagedFakeCluster().client
    manager = Manager(client, ManagerOptions(), metrics=Metrics(CollectorRegistry()))
    controller = isvc_controller.setup_inferenceservice_controller(manager)
    isvcs = manager.cache.informer(INFERENCE_SERVICES)
    for i in range(10):
        isvcs.store.put({"metadata": {"name": f"isvc-{i}", "namespace": "ns", "uid": str(i)}})
    namespace = manager.options.namespace
    configmaps = manager.cache.informer(CONFIGMAPS, namespace)
    for handler in configmaps._handlers:
        handler.on_add(_configmap(c.INFERENCE_SERVICE_CONFIGMAP, namespace))
    assert len(controller.queue) == 3
