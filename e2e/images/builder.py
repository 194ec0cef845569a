"""Build the local node's images offline, each once per content hash, and export them for containerd.

An image's hash covers everything that can change it: the builder's own version, its Dockerfile's
instructions, the
context files that Dockerfile COPYs (and nothing else in the context), the fingerprints of generated files
(the debootstrap recipe, pause.c, queue_proxy.py) and the refs, hence hashes, of the images it builds FROM.
The ref is ``localhost/kserve-py/<name>:<first 12 hex digits>`` and the archive
``<cache>/images/<name>-<tag>.tar`` (docker-archive, which ``ctr images import`` reads with the ref
intact). An existing archive is the cache hit: nothing is built. So a manager code change rebuilds only the
manager, a change of the base recipe rebuilds everything, and editing a test rebuilds nothing.

Builds are serialised by a lock file (two test sessions may build at once). Only the current and the
previous archive of each name are kept, so the cache does not grow with every edit.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import re
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from e2e.images import context as build_context
from e2e.images.buildah import Buildah, CommandError, MissingToolError, run_logged
from e2e.images.dockerfile import DockerfileError, copied_sources, from_arguments, logical_lines
from e2e.images.recipes import InputError, Recipe, recipes

# Bump when a change of the builder changes what it produces from the same inputs.
BUILDER_VERSION = 1
REPOSITORY_PREFIX = "localhost/kserve-py"
TAG_LENGTH = 12
# Superseded archives kept per image (besides the current one).
KEEP_SUPERSEDED = 1

Log = Callable[[str], None]


class ImageBuildError(RuntimeError):
    """An image could not be resolved or built. The message is one line naming the image (and the build
    log when there is one)."""


class ImageStore(Protocol):
    def require(self, tools: Sequence[str]) -> None:
        """Raise MissingToolError unless this machine can build with the store and these host tools."""
        ...

    def has(self, ref: str, log_file: Path) -> bool: ...

    def build(
        self, *, context: Path, dockerfile: Path, ref: str, build_args: Mapping[str, str], log_file: Path
    ) -> None: ...

    def export(self, ref: str, archive: Path, log_file: Path) -> None: ...

    def load(self, archive: Path, log_file: Path) -> None: ...

    def refs(self, repository: str, log_file: Path) -> list[str]: ...

    def remove(self, ref: str, log_file: Path) -> None: ...


@dataclass(frozen=True)
class BuiltImage:
    name: str
    ref: str
    archive: Path
    size: int
    # False when the archive of this hash already existed.
    built: bool
    seconds: float


def cache_root() -> Path:
    """``$KSERVE_PY_CACHE``, else ``$XDG_CACHE_HOME/kserve-py``, else ``~/.cache/kserve-py`` (as the
    control-plane binaries)."""
    root = os.environ.get("KSERVE_PY_CACHE")
    if root:
        return Path(root)
    xdg = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(xdg) / "kserve-py"


def repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def _stderr_log(message: str) -> None:
    print(f"e2e.images: {message}", file=sys.stderr, flush=True)


class Builder:
    def __init__(
        self, recipes_by_name: Mapping[str, Recipe], cache: Path, store: ImageStore, log: Log
    ) -> None:
        self.recipes = dict(recipes_by_name)
        self.images_dir = cache / "images"
        self.store = store
        self.log = log
        self._dockerfiles: dict[str, str] = {}
        self._inputs: dict[str, dict[str, object]] = {}
        self._hashes: dict[str, str] = {}

    # -- planning and hashing (no side effects) --

    def plan(self, names: Sequence[str] | None) -> list[str]:
        """The requested images and everything they build FROM, dependencies first."""
        wanted = list(self.recipes) if names is None else list(names)
        unknown = [name for name in wanted if name not in self.recipes]
        if unknown:
            raise ImageBuildError(f"unknown image {', '.join(unknown)} (known: {', '.join(self.recipes)})")
        ordered: list[str] = []

        def visit(name: str, path: tuple[str, ...]) -> None:
            if name in ordered:
                return
            if name in path:
                raise ImageBuildError(f"{name}: images build FROM each other: {' -> '.join((*path, name))}")
            for dependency in self.recipes[name].dependencies:
                if dependency not in self.recipes:
                    raise ImageBuildError(f"{name}: builds FROM unknown image {dependency}")
                visit(dependency, (*path, name))
            ordered.append(name)

        for name in wanted:
            visit(name, ())
        return ordered

    def _dockerfile(self, recipe: Recipe) -> str:
        if recipe.name not in self._dockerfiles:
            try:
                self._dockerfiles[recipe.name] = recipe.dockerfile.read_text()
            except OSError as exc:
                raise ImageBuildError(f"{recipe.name}: {exc}") from exc
        return self._dockerfiles[recipe.name]

    def _context_files(self, recipe: Recipe) -> list[build_context.ContextFile]:
        generated = {item.filename for item in recipe.generated}
        text = self._dockerfile(recipe)
        try:
            sources = [source for source in copied_sources(text) if source not in generated]
            missing = sorted(set(from_arguments(text)) - set(recipe.images))
            if missing:
                raise InputError(
                    f"{recipe.dockerfile} builds FROM ${{{missing[0]}}}, which the recipe does not set"
                )
            return build_context.collect(recipe.context, sources)
        except (OSError, DockerfileError, build_context.ContextError, InputError) as exc:
            raise ImageBuildError(f"{recipe.name}: {exc}") from exc

    def _generated_fingerprints(self, recipe: Recipe) -> dict[str, str]:
        try:
            return {item.filename: item.fingerprint() for item in recipe.generated}
        except InputError as exc:
            raise ImageBuildError(f"{recipe.name}: {exc}") from exc

    def inputs(self, name: str) -> dict[str, object]:
        """Everything the content hash of ``name`` covers (read once, then kept for the build)."""
        if name not in self._inputs:
            recipe = self.recipes[name]
            self._inputs[name] = {
                "builder": BUILDER_VERSION,
                "name": name,
                # Instructions only: editing a Dockerfile's comments rebuilds nothing.
                "dockerfile": logical_lines(self._dockerfile(recipe)),
                "context": build_context.fingerprint(self._context_files(recipe)),
                "generated": self._generated_fingerprints(recipe),
                "images": {argument: self.ref(image) for argument, image in sorted(recipe.images.items())},
            }
        return self._inputs[name]

    def content_hash(self, name: str) -> str:
        if name not in self._hashes:
            encoded = json.dumps(self.inputs(name), sort_keys=True).encode()
            self._hashes[name] = hashlib.sha256(encoded).hexdigest()
        return self._hashes[name]

    def ref(self, name: str) -> str:
        return f"{REPOSITORY_PREFIX}/{name}:{self.content_hash(name)[:TAG_LENGTH]}"

    def archive(self, name: str) -> Path:
        return self.images_dir / f"{name}-{self.content_hash(name)[:TAG_LENGTH]}.tar"

    def log_file(self, name: str) -> Path:
        return self.images_dir / "logs" / f"{name}-{self.content_hash(name)[:TAG_LENGTH]}.log"

    # -- building --

    def resolve(self, names: Sequence[str] | None) -> dict[str, BuiltImage]:
        order = self.plan(names)
        for name in order:
            self.content_hash(name)
        with self._lock():
            return {name: self._ensure(name) for name in order}

    @contextmanager
    def _lock(self) -> Iterator[None]:
        self.images_dir.mkdir(parents=True, exist_ok=True)
        with (self.images_dir / ".lock").open("w") as lock:
            try:
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                self.log("waiting for another image build to finish")
                fcntl.flock(lock, fcntl.LOCK_EX)
            yield

    def _ensure(self, name: str) -> BuiltImage:
        ref, archive = self.ref(name), self.archive(name)
        if archive.is_file():
            return BuiltImage(name, ref, archive, archive.stat().st_size, built=False, seconds=0.0)
        self._check_tools(name)
        log_file = self.log_file(name)
        log_file.parent.mkdir(parents=True, exist_ok=True)
        log_file.write_text(f"building {ref}\n")
        self.log(f"{name}: building {ref} (log: {log_file})")
        started = time.monotonic()
        try:
            self._build(name, ref, archive, log_file)
        except CommandError as exc:
            raise ImageBuildError(f"{name}: {exc}") from exc
        seconds = time.monotonic() - started
        size = archive.stat().st_size
        self.log(f"{name}: built {ref} in {seconds:.1f}s ({size / 1e6:.1f} MB archive)")
        self._prune(name, ref, archive, log_file)
        return BuiltImage(name, ref, archive, size, built=True, seconds=seconds)

    def _check_tools(self, name: str) -> None:
        try:
            self.store.require([tool for item in self.recipes[name].generated for tool in item.tools])
        except MissingToolError as exc:
            raise ImageBuildError(f"{name}: {exc}") from exc

    def _build(self, name: str, ref: str, archive: Path, log_file: Path) -> None:
        recipe = self.recipes[name]
        for dependency in recipe.dependencies:
            dependency_ref = self.ref(dependency)
            if not self.store.has(dependency_ref, log_file):
                self.store.load(self.archive(dependency), log_file)
        scratch = self.images_dir / "tmp"
        scratch.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(prefix=f"{name}-", dir=scratch) as tmp:
            staged = Path(tmp) / "context"
            staged.mkdir()
            files = self._context_files(recipe)
            build_context.stage(files, staged)
            staged_files = [
                build_context.ContextFile(f.relpath, staged / f.relpath, f.executable, f.link_target)
                for f in files
            ]
            hashed = self.inputs(name)

            def run(command: Sequence[str], timeout: float, what: str) -> None:
                run_logged(command, log_file, timeout=timeout, what=what)

            for item in recipe.generated:
                item.produce(staged / item.filename, run)
            now = (build_context.fingerprint(staged_files), self._generated_fingerprints(recipe))
            if now != (hashed["context"], hashed["generated"]):
                raise ImageBuildError(
                    f"{name}: inputs changed while the build was being prepared; build again"
                )
            dockerfile = Path(tmp) / "Dockerfile"
            dockerfile.write_text(self._dockerfile(recipe))
            build_args = {argument: self.ref(image) for argument, image in recipe.images.items()}
            self.store.build(
                context=staged, dockerfile=dockerfile, ref=ref, build_args=build_args, log_file=log_file
            )
        partial = archive.with_name(f".{archive.name}.partial")
        try:
            self.store.export(ref, partial, log_file)
            partial.rename(archive)
        finally:
            partial.unlink(missing_ok=True)

    def _prune(self, name: str, ref: str, archive: Path, log_file: Path) -> None:
        """Delete all but the newest superseded archive (and log) of ``name``: a consumer that resolved the
        previous ref just before this build can still import it. Store images other than ``ref`` go (the
        kept archive can be loaded again)."""
        ours = re.compile(rf"{re.escape(name)}-([0-9a-f]{{{TAG_LENGTH}}})\.tar")
        superseded = sorted(
            (path for path in self.images_dir.iterdir() if path != archive and ours.fullmatch(path.name)),
            key=lambda path: path.stat().st_mtime,
            reverse=True,
        )
        for old in superseded[KEEP_SUPERSEDED:]:
            old.unlink()
            (log_file.parent / f"{old.stem}.log").unlink(missing_ok=True)
        for old_ref in self.store.refs(f"{REPOSITORY_PREFIX}/{name}", log_file):
            if old_ref != ref:
                self.store.remove(old_ref, log_file)


def new_builder(*, log: Log = _stderr_log, cache: Path | None = None, repo: Path | None = None) -> Builder:
    """A builder over the repository's recipes, with buildah storage under the cache directory."""
    root = cache if cache is not None else cache_root()
    store = Buildah(root / "containers")
    return Builder(recipes(repo if repo is not None else repo_root()), root, store, log)


def build_images(
    names: Sequence[str] | None = None,
    *,
    log: Log = _stderr_log,
    cache: Path | None = None,
    repo: Path | None = None,
) -> dict[str, BuiltImage]:
    """Build (or reuse) the named images and everything they build FROM; all images when ``names`` is
    None. Returns every image of the plan, dependencies first. Blocking: minutes on a cold cache.

    Raises ImageBuildError with a one-line message on an unknown name, a missing tool or a failed build.
    """
    return new_builder(log=log, cache=cache, repo=repo).resolve(names)
