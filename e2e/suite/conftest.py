"""Options and fixtures of the e2e suite.

`--target local` (default) builds the offline, node-less deployment (see `e2e.suite.env.LocalEnv`);
`--target node` the offline deployment on the local cluster's real node (`e2e.suite.node_env.NodeEnv`);
`--target kind` uses the cluster in `--kubeconfig` / `$KUBECONFIG` as prepared by e2e/kind/setup.sh.
One deployment serves the whole session; each test gets a fresh namespace (prepared by the target, e.g. with
model credentials); a failed test's namespace is collected (objects, events, container logs) before it is
deleted. Diagnostics go to `--artifacts-dir` (default: a temporary directory, removed when every
test passed and kept, with its path printed, otherwise).
"""

from __future__ import annotations

import asyncio
import os
import re
import secrets
import shutil
from collections.abc import AsyncIterator, Generator, Iterator
from pathlib import Path

import pytest

from e2e.localcluster.apply import ApplyError
from e2e.localcluster.cluster import LocalClusterError
from e2e.suite.env import Env, EnvError, KindEnv, LocalEnv, make_artifacts_dir
from e2e.suite.manifests import RenderError
from e2e.suite.node_env import NodeEnv
from manager.client import NAMESPACES, Client, load_client
from manager.errors import ApiError, NotFound

TARGETS = ("local", "node", "kind")
ARTIFACTS_KEY = pytest.StashKey[Path]()
CALL_REPORT_KEY = pytest.StashKey[pytest.TestReport]()
DEPLOYED_TEST_TIMEOUT = 900
"""pytest-timeout's limit per test on a node or kind, where every wait for pods is bounded by itself."""


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("e2e", "KServe e2e suite")
    group.addoption(
        "--target", choices=TARGETS, default="local", help="local control plane, local node or kind [local]"
    )
    group.addoption(
        "--kubeconfig", default=None, help="cluster for --target kind [$KUBECONFIG]; local mode makes its own"
    )
    group.addoption("--kubectl", default="kubectl", help="kubectl for --target kind [kubectl on PATH]")
    group.addoption("--artifacts-dir", default=None, help="where logs and diagnostics go [temporary]")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # A test on a node waits for real pods, each wait bounded by the target's `ready_timeout` (300 s), so
    # pytest's own 300 s limit would cut the test's wait short and report a stack instead of what was awaited.
    if config.getoption("--target") == "local":
        return
    for item in items:
        if item.get_closest_marker("timeout") is None:
            item.add_marker(pytest.mark.timeout(DEPLOYED_TEST_TIMEOUT))


@pytest.fixture(scope="session")
def env(request: pytest.FixtureRequest) -> Iterator[Env]:
    config = request.config
    target = str(config.getoption("--target"))
    artifacts, created = make_artifacts_dir(config.getoption("--artifacts-dir"))
    environment: Env
    if target in ("local", "node"):
        if config.getoption("--kubeconfig"):
            pytest.exit(f"--kubeconfig is for --target kind: {target} mode starts its own cluster", 4)
        environment = LocalEnv(artifacts) if target == "local" else NodeEnv(artifacts)
    else:
        kubeconfig = config.getoption("--kubeconfig") or os.environ.get("KUBECONFIG")
        if not kubeconfig or not Path(kubeconfig).is_file():
            pytest.exit("--target kind needs --kubeconfig or $KUBECONFIG naming an existing file", 4)
        environment = KindEnv(Path(kubeconfig), str(config.getoption("--kubectl")), artifacts)
    try:
        environment.start()
    except (EnvError, LocalClusterError, ApplyError, RenderError, OSError) as exc:
        environment.collect(f"set-up failed: {exc}")
        environment.close()
        pytest.fail(f"e2e set-up failed ({target}); artifacts in {artifacts}: {exc}", pytrace=False)
    try:
        yield environment
    finally:
        failed = request.session.testsfailed > 0
        if failed:
            environment.collect(f"{request.session.testsfailed} test(s) failed")
        environment.close()
        if created and not failed:
            shutil.rmtree(artifacts, ignore_errors=True)
        else:
            config.stash[ARTIFACTS_KEY] = artifacts


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter, config: pytest.Config) -> None:
    artifacts = config.stash.get(ARTIFACTS_KEY, None)
    if artifacts is not None:
        terminalreporter.write_line(f"e2e artifacts (logs, manifests, diagnostics): {artifacts}")


@pytest.fixture
async def admin(env: Env) -> AsyncIterator[Client]:
    client = await load_client(str(env.kubeconfig))
    try:
        yield client
    finally:
        await client.close()


def _namespace_name(test_name: str) -> str:
    stem = re.sub(r"[^a-z0-9-]+", "-", test_name.lower()).strip("-")[:30].strip("-") or "test"
    return f"e2e-{stem}-{secrets.token_hex(3)}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    if report.when == "call":
        item.stash[CALL_REPORT_KEY] = report
    return report


@pytest.fixture
async def namespace(env: Env, admin: Client, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    name = _namespace_name(request.node.name)
    await admin.create(NAMESPACES, {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    await env.prepare_namespace(admin, name)
    try:
        yield name
    finally:
        report = request.node.stash.get(CALL_REPORT_KEY, None)
        if report is not None and report.failed:
            await asyncio.to_thread(env.collect_namespace, name)
        # Asynchronous: the manager removes the InferenceService finalizers, the GC the children.
        try:
            await admin.delete(NAMESPACES, name)
        except NotFound:
            pass
        except ApiError as exc:
            pytest.fail(f"cannot delete namespace {name}: {exc}")
