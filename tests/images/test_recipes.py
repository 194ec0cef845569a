"""The real recipes: which edits of the repository rebuild which images (hashes only; nothing is built)."""

from __future__ import annotations

import dataclasses
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from e2e.images.builder import Builder, ImageBuildError
from e2e.images.recipes import DebootstrapRootfs, Recipe, recipes
from tests.images.fakes import FakeStore

REPO = Path(__file__).resolve().parents[2]
ALL = {
    "base",
    "pause",
    "manager",
    "queue-proxy",
    "qpext",
    "kserve-runtime",
    "sklearnserver",
    "storage-initializer",
    "s3",
}
KSERVE = {"kserve-runtime", "sklearnserver", "storage-initializer", "s3"}


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """A copy of the repository's sources (the queue-proxy script stubbed if it does not exist yet)."""
    copy = tmp_path / "repo"
    shutil.copytree(
        REPO,
        copy,
        ignore=shutil.ignore_patterns(
            ".git", ".venv", "__pycache__", ".mypy_cache", ".ruff_cache", ".pytest_cache", "*.egg-info"
        ),
    )
    queue = copy / "e2e/knative_double/queue_proxy.py"
    if not queue.exists():
        queue.write_text("print('queue-proxy stand-in')\n")
    return copy


def _hashes(repo: Path, cache: Path) -> dict[str, str]:
    builder = Builder(recipes(repo), cache, FakeStore(), lambda _: None)
    return {name: builder.ref(name) for name in builder.plan(None)}


def _changed_by(repo: Path, tmp_path: Path, edit: Callable[[Path], None]) -> set[str]:
    before = _hashes(repo, tmp_path / "cache")
    edit(repo)
    after = _hashes(repo, tmp_path / "cache")
    return {name for name in before if before[name] != after[name]}


def _append(relpath: str, text: str = "\n# edited\n") -> Callable[[Path], None]:
    def edit(repo: Path) -> None:
        with (repo / relpath).open("a") as handle:
            handle.write(text)

    return edit


def test_every_image_has_a_recipe_in_dependency_order(repo: Path, tmp_path: Path) -> None:
    builder = Builder(recipes(repo), tmp_path, FakeStore(), lambda _: None)
    order = builder.plan(None)
    assert set(order) == ALL
    for name in order:
        for dependency in builder.recipes[name].dependencies:
            assert order.index(dependency) < order.index(name)


@pytest.mark.parametrize(
    ("relpath", "rebuilt"),
    [
        ("controllers/main.py", {"manager"}),
        ("webhooks/__init__.py", {"manager"}),
        ("qpext/__main__.py", {"qpext"}),
        ("README.md", {"manager", "qpext"}),
        ("pyproject.toml", {"manager", "qpext"}),
        ("Dockerfile", set()),
        # qpext/Dockerfile is inside qpext/, which qpext/Dockerfile COPYs: even a comment is an input.
        ("qpext/Dockerfile", {"qpext"}),
        ("e2e/knative_double/queue_proxy.py", {"queue-proxy", "qpext"}),
        ("e2e/images/pause/pause.c", {"pause"}),
        ("e2e/images/base/Dockerfile", set()),
        ("e2e/images/kserve-runtime/requirements.txt", KSERVE),
        ("e2e/images/sklearnserver/sklearnserver/model.py", {"sklearnserver"}),
        ("e2e/images/storage-initializer/initializer_entrypoint.py", {"storage-initializer"}),
        ("e2e/images/s3/s3_server.py", {"s3"}),
        ("e2e/images/builder.py", set()),
        ("tests/images/test_recipes.py", set()),
        ("e2e/knative_double/double.py", set()),
        ("docs/e2e.md", set()),
        ("config/runtimes/kserve-sklearnserver.yaml", set()),
    ],
)
def test_an_edit_rebuilds_exactly_the_images_that_contain_it(
    repo: Path, tmp_path: Path, relpath: str, rebuilt: set[str]
) -> None:
    assert _changed_by(repo, tmp_path, _append(relpath)) == rebuilt


@pytest.mark.parametrize(
    ("relpath", "rebuilt"),
    [
        ("Dockerfile", {"manager"}),
        ("qpext/Dockerfile", {"qpext"}),
        ("e2e/images/base/Dockerfile", ALL - {"pause"}),
        ("e2e/images/queue-proxy/Dockerfile", {"queue-proxy", "qpext"}),
    ],
)
def test_a_dockerfile_instruction_rebuilds_its_image_and_the_images_built_from_it(
    repo: Path, tmp_path: Path, relpath: str, rebuilt: set[str]
) -> None:
    assert _changed_by(repo, tmp_path, _append(relpath, "\nLABEL edited=1\n")) == rebuilt


def test_bytecode_and_untracked_files_next_to_copied_sources_rebuild_nothing(
    repo: Path, tmp_path: Path
) -> None:
    def edit(repo: Path) -> None:
        (repo / "controllers/__pycache__").mkdir(exist_ok=True)
        (repo / "controllers/__pycache__/main.cpython-311.pyc").write_bytes(b"\0")
        (repo / "tests/new_test.py").write_text("")

    assert _changed_by(repo, tmp_path, edit) == set()


def test_a_new_file_in_a_copied_directory_rebuilds(repo: Path, tmp_path: Path) -> None:
    def edit(repo: Path) -> None:
        (repo / "reconcilers/new_module.py").write_text("")

    assert _changed_by(repo, tmp_path, edit) == {"manager"}


def test_the_debootstrap_package_list_rebuilds_every_image_but_pause(repo: Path, tmp_path: Path) -> None:
    original = recipes(repo)
    rootfs = original["base"].generated[0]
    assert isinstance(rootfs, DebootstrapRootfs)
    more = dataclasses.replace(rootfs, packages=(*rootfs.packages, "curl"))
    changed = {**original, "base": dataclasses.replace(original["base"], generated=(more,))}

    def refs(recipes_by_name: dict[str, Recipe]) -> dict[str, str]:
        builder = Builder(recipes_by_name, tmp_path, FakeStore(), lambda _: None)
        return {name: builder.ref(name) for name in builder.plan(None)}

    before, after = refs(original), refs(changed)
    assert {name for name in before if before[name] != after[name]} == ALL - {"pause"}


def test_the_queue_proxy_image_needs_the_knative_double_script(repo: Path, tmp_path: Path) -> None:
    (repo / "e2e/knative_double/queue_proxy.py").unlink()
    builder = Builder(recipes(repo), tmp_path, FakeStore(), lambda _: None)
    with pytest.raises(
        ImageBuildError, match=r"^queue-proxy: .*e2e/knative_double/queue_proxy.py does not exist"
    ):
        builder.ref("qpext")
