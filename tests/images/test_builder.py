"""The builder's caching: what a change rebuilds, what is reused, and how failures are reported."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

from e2e.images.builder import Builder, ImageBuildError
from e2e.images.recipes import Recipe, Runner
from tests.images.fakes import FakeStore


@dataclass(frozen=True)
class FakeGenerated:
    """A generated file whose fingerprint is a source file's content."""

    source: Path
    filename: str = "generated.bin"
    tools: tuple[str, ...] = ()

    def fingerprint(self) -> str:
        return self.source.read_text()

    def produce(self, destination: Path, run: Runner) -> None:
        destination.write_text(self.source.read_text())


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)


@pytest.fixture
def tree(tmp_path: Path) -> Path:
    """base (FROM scratch + generated file) <- app (COPY src/) <- tool; lonely (no dependencies)."""
    root = tmp_path / "tree"
    _write(root / "base/Dockerfile", "FROM scratch\nADD generated.bin /\n")
    _write(root / "base/recipe.txt", "v1")
    _write(root / "app/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY src/ /app/\n")
    _write(root / "app/src/main.py", "print(1)\n")
    _write(root / "app/tests/test_main.py", "assert True\n")
    _write(root / "tool/Dockerfile", "ARG BASE_IMAGE\nFROM ${BASE_IMAGE}\nCOPY tool.py /\n")
    _write(root / "tool/tool.py", "print(2)\n")
    _write(root / "lonely/Dockerfile", "FROM scratch\nCOPY x /\n")
    _write(root / "lonely/x", "x")
    return root


def _recipes(root: Path) -> dict[str, Recipe]:
    def own(name: str, base: str | None) -> Recipe:
        images = {"BASE_IMAGE": base} if base else {}
        return Recipe(name, root / name, root / name / "Dockerfile", images)

    return {
        "base": Recipe(
            "base",
            root / "base",
            root / "base/Dockerfile",
            generated=(FakeGenerated(root / "base/recipe.txt"),),
        ),
        "app": own("app", "base"),
        "tool": own("tool", "app"),
        "lonely": own("lonely", None),
    }


def _builder(root: Path, cache: Path, store: FakeStore, log: list[str] | None = None) -> Builder:
    messages = log if log is not None else []
    return Builder(_recipes(root), cache, store, messages.append)


def _built_names(store: FakeStore) -> list[str]:
    return [ref.rpartition(":")[0].rpartition("/")[2] for ref in store.built]


def test_plan_includes_dependencies_first_and_rejects_unknown_names(tree: Path, tmp_path: Path) -> None:
    builder = _builder(tree, tmp_path / "cache", FakeStore())
    assert builder.plan(["tool"]) == ["base", "app", "tool"]
    assert builder.plan(None) == ["base", "app", "tool", "lonely"]
    with pytest.raises(ImageBuildError, match="unknown image nope"):
        builder.plan(["nope"])


def test_cold_build_builds_everything_in_order_then_everything_is_reused(tree: Path, tmp_path: Path) -> None:
    cache, store = tmp_path / "cache", FakeStore()
    first = _builder(tree, cache, store).resolve(None)
    assert _built_names(store) == ["base", "app", "tool", "lonely"]
    assert all(image.built and image.archive.read_text() == image.ref for image in first.values())
    assert store.build_args[first["tool"].ref] == {"BASE_IMAGE": first["app"].ref}

    again = FakeStore()
    second = _builder(tree, cache, again).resolve(None)
    assert again.built == []
    assert again.loaded == []
    assert {name: image.ref for name, image in second.items()} == {n: i.ref for n, i in first.items()}
    assert not any(image.built for image in second.values())


def test_refs_are_content_addressed(tree: Path, tmp_path: Path) -> None:
    refs = {
        name: image.ref for name, image in _builder(tree, tmp_path / "c", FakeStore()).resolve(None).items()
    }
    assert refs["app"].startswith("localhost/kserve-py/app:")
    assert len(refs["app"].rpartition(":")[2]) == 12
    assert len(set(refs.values())) == len(refs)


def test_only_the_context_files_the_dockerfile_copies_are_staged(tree: Path, tmp_path: Path) -> None:
    store = FakeStore()
    images = _builder(tree, tmp_path / "cache", store).resolve(["app"])
    assert store.contexts[images["app"].ref] == ["src/main.py"]
    assert store.contexts[images["base"].ref] == ["generated.bin"]


def _rebuilt_after(tree: Path, tmp_path: Path, change: Path, text: str) -> list[str]:
    cache = tmp_path / "cache"
    _builder(tree, cache, FakeStore()).resolve(None)
    _write(change, text)
    store = FakeStore()
    _builder(tree, cache, store).resolve(None)
    return _built_names(store)


def test_a_code_change_rebuilds_only_that_image_and_its_dependents(tree: Path, tmp_path: Path) -> None:
    assert _rebuilt_after(tree, tmp_path, tree / "app/src/main.py", "print(3)\n") == ["app", "tool"]


def test_a_leaf_change_rebuilds_only_the_leaf(tree: Path, tmp_path: Path) -> None:
    assert _rebuilt_after(tree, tmp_path, tree / "tool/tool.py", "print(4)\n") == ["tool"]


def test_a_base_recipe_change_rebuilds_everything_built_from_it(tree: Path, tmp_path: Path) -> None:
    assert _rebuilt_after(tree, tmp_path, tree / "base/recipe.txt", "v2") == ["base", "app", "tool"]


def test_a_dockerfile_change_rebuilds(tree: Path, tmp_path: Path) -> None:
    changed = "FROM scratch\nCOPY x /x\n"
    assert _rebuilt_after(tree, tmp_path, tree / "lonely/Dockerfile", changed) == ["lonely"]


@pytest.mark.parametrize(
    "change",
    ["app/tests/test_main.py", "app/src/__pycache__/main.cpython-311.pyc", "app/README.md"],
)
def test_files_that_are_not_copied_rebuild_nothing(tree: Path, tmp_path: Path, change: str) -> None:
    assert _rebuilt_after(tree, tmp_path, tree / change, "changed") == []


def test_a_rebuild_loads_missing_parents_from_their_archives(tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    first = _builder(tree, cache, FakeStore()).resolve(None)
    _write(tree / "tool/tool.py", "print(5)\n")
    empty_store = FakeStore()  # e.g. the buildah storage was deleted, the archives were not
    _builder(tree, cache, empty_store).resolve(["tool"])
    assert empty_store.loaded == [first["app"].ref]
    assert _built_names(empty_store) == ["tool"]


def test_only_the_current_and_the_previous_archive_are_kept(tree: Path, tmp_path: Path) -> None:
    cache, store = tmp_path / "cache", FakeStore()
    versions = []
    for version in range(3):
        _write(tree / "tool/tool.py", f"print({version})\n")
        versions.append(_builder(tree, cache, store).resolve(["tool"])["tool"])
        os.utime(versions[-1].archive, (version, version))  # creation order, whatever the clock resolution
    oldest, previous, current = versions
    assert sorted(p.name for p in (cache / "images").glob("tool-*")) == sorted(
        [previous.archive.name, current.archive.name]
    )
    assert sorted(p.stem for p in (cache / "images/logs").glob("tool-*")) == sorted(
        [previous.archive.stem, current.archive.stem]
    )
    assert store.removed == [oldest.ref, previous.ref]
    assert store.refs("localhost/kserve-py/tool", Path()) == [current.ref]


@pytest.mark.parametrize("edited", ["app/src/main.py", "base/recipe.txt"])
def test_inputs_edited_after_hashing_fail_the_build_rather_than_mislabel_it(
    tree: Path, tmp_path: Path, edited: str
) -> None:
    store = FakeStore()
    builder = _builder(tree, tmp_path / "cache", store)
    builder.ref("app")  # the hashes are computed here, before anything is built
    _write(tree / edited, "edited\n")
    with pytest.raises(
        ImageBuildError, match=r"inputs changed while the build was being prepared; build again$"
    ):
        builder.resolve(["app"])
    assert "app" not in _built_names(store)


def test_a_failed_build_is_one_line_naming_the_image_and_its_log(tree: Path, tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    builder = _builder(tree, cache, FakeStore(fail_build={"app"}))
    with pytest.raises(ImageBuildError) as caught:
        builder.resolve(["tool"])
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("app: buildah bud failed (exit 1); see ")
    assert message.endswith(str(builder.log_file("app")))
    assert not builder.archive("app").exists()
    assert list((cache / "images").glob(".*.partial")) == []
    assert builder.archive("base").exists()  # what was built before the failure is kept


def test_a_missing_tool_names_the_image_and_the_provisioning_script(tree: Path, tmp_path: Path) -> None:
    builder = _builder(tree, tmp_path / "cache", FakeStore(missing_tool="buildah"))
    with pytest.raises(
        ImageBuildError, match=r"^base: buildah is not installed; run hack/provision-image-tools.sh"
    ):
        builder.resolve(["app"])


def test_missing_context_source_is_reported_before_building(tree: Path, tmp_path: Path) -> None:
    (tree / "tool/tool.py").unlink()
    store = FakeStore()
    with pytest.raises(ImageBuildError, match=r"^tool: COPY/ADD source 'tool.py' does not exist"):
        _builder(tree, tmp_path / "cache", store).resolve(None)
    assert store.built == []


def test_from_argument_not_set_by_the_recipe_is_an_error(tree: Path, tmp_path: Path) -> None:
    _write(tree / "lonely/Dockerfile", "ARG OTHER\nFROM ${OTHER}\nCOPY x /\n")
    with pytest.raises(ImageBuildError, match=r"^lonely: .* builds FROM \$\{OTHER\}"):
        _builder(tree, tmp_path / "cache", FakeStore()).resolve(["lonely"])


def test_progress_is_logged(tree: Path, tmp_path: Path) -> None:
    messages: list[str] = []
    _builder(tree, tmp_path / "cache", FakeStore(), messages).resolve(["lonely"])
    assert messages[0].startswith("lonely: building localhost/kserve-py/lonely:")
    assert messages[1].startswith("lonely: built localhost/kserve-py/lonely:")
