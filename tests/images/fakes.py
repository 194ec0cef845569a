"""An in-memory image store standing in for buildah, recording what the builder asks of it."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from e2e.images.buildah import CommandError, MissingToolError


@dataclass
class FakeStore:
    images: set[str] = field(default_factory=set)
    built: list[str] = field(default_factory=list)
    loaded: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    build_args: dict[str, Mapping[str, str]] = field(default_factory=dict)
    contexts: dict[str, list[str]] = field(default_factory=dict)
    fail_build: set[str] = field(default_factory=set)
    missing_tool: str | None = None

    def require(self, tools: Sequence[str]) -> None:
        if self.missing_tool is not None:
            raise MissingToolError(f"{self.missing_tool} is not installed; run hack/provision-image-tools.sh")

    def has(self, ref: str, log_file: Path) -> bool:
        return ref in self.images

    def build(
        self, *, context: Path, dockerfile: Path, ref: str, build_args: Mapping[str, str], log_file: Path
    ) -> None:
        if ref.rpartition(":")[0].rpartition("/")[2] in self.fail_build:
            raise CommandError("buildah bud", "failed (exit 1)", log_file)
        missing = [value for value in build_args.values() if value not in self.images]
        assert not missing, f"{ref} built FROM images not in the store: {missing}"
        self.built.append(ref)
        self.build_args[ref] = dict(build_args)
        self.contexts[ref] = sorted(
            p.relative_to(context).as_posix() for p in context.rglob("*") if p.is_file()
        )
        self.images.add(ref)

    def export(self, ref: str, archive: Path, log_file: Path) -> None:
        archive.write_text(ref)

    def load(self, archive: Path, log_file: Path) -> None:
        ref = archive.read_text()
        self.loaded.append(ref)
        self.images.add(ref)

    def refs(self, repository: str, log_file: Path) -> list[str]:
        return sorted(ref for ref in self.images if ref.rpartition(":")[0] == repository)

    def remove(self, ref: str, log_file: Path) -> None:
        self.removed.append(ref)
        self.images.discard(ref)
