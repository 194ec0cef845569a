"""The build-context files an image is made from, and their fingerprint.

The builder stages exactly these files (no more) into a fresh directory and builds from there, so the image
holds what was hashed: a file edited during a build, a stray ``__pycache__`` or an untracked file next to a
COPYed one cannot slip into an image under a hash that does not cover it. ``.dockerignore`` in the context
root is honoured as Docker honours it (without ``!`` exceptions, which no context here uses), and Python
bytecode is always left out.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import stat
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

ALWAYS_IGNORED = ("**/__pycache__", "**/*.pyc", "**/*.pyo")


class ContextError(ValueError):
    """A COPY/ADD source does not exist or cannot be staged."""


@dataclass(frozen=True)
class ContextFile:
    relpath: str
    source: Path
    executable: bool
    link_target: str | None = None


def _glob_regex(pattern: str) -> re.Pattern[str]:
    out: list[str] = []
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out.append("(?:.*/)?")
            i += 3
        elif pattern.startswith("**", i):
            out.append(".*")
            i += 2
        elif pattern[i] == "*":
            out.append("[^/]*")
            i += 1
        elif pattern[i] == "?":
            out.append("[^/]")
            i += 1
        else:
            out.append(re.escape(pattern[i]))
            i += 1
    return re.compile("".join(out))


def ignore_matcher(patterns: Iterable[str]) -> Callable[[str], bool]:
    """A predicate on context-relative paths: true when the path or one of its parents matches."""
    regexes: list[re.Pattern[str]] = []
    for raw in patterns:
        pattern = raw.strip()
        if not pattern or pattern.startswith("#"):
            continue
        if pattern.startswith("!"):
            raise ContextError(f".dockerignore exceptions are not supported: {pattern}")
        regexes.append(_glob_regex(os.path.normpath(pattern).lstrip("/")))

    def ignored(relpath: str) -> bool:
        parts = relpath.split("/")
        return any(
            regex.fullmatch("/".join(parts[:end])) for end in range(1, len(parts) + 1) for regex in regexes
        )

    return ignored


def _dockerignore(context: Path) -> list[str]:
    path = context / ".dockerignore"
    return path.read_text().splitlines() if path.is_file() else []


def _entry(context: Path, path: Path) -> ContextFile:
    relpath = path.relative_to(context).as_posix()
    if path.is_symlink():
        return ContextFile(relpath, path, executable=False, link_target=os.readlink(path))
    mode = path.stat().st_mode
    return ContextFile(relpath, path, executable=bool(mode & stat.S_IXUSR))


def collect(context: Path, sources: Sequence[str]) -> list[ContextFile]:
    """Every file the given COPY/ADD sources name under ``context`` (directories recursively, glob
    patterns expanded), minus ignored paths, sorted by path."""
    ignored = ignore_matcher([*ALWAYS_IGNORED, *_dockerignore(context)])
    root = context.resolve()
    found: dict[str, ContextFile] = {}
    for source in sources:
        normalised = os.path.normpath(source).lstrip("/")
        if normalised.startswith(".."):
            raise ContextError(f"source {source!r} is outside the build context {context}")
        if any(char in normalised for char in "*?["):
            matches = sorted(root.glob(normalised))
        else:
            matches = [root / normalised] if (root / normalised).exists() else []
        matches = [m for m in matches if normalised == "." or not ignored(m.relative_to(root).as_posix())]
        if not matches:
            raise ContextError(f"COPY/ADD source {source!r} does not exist in {context}")
        for match in matches:
            if match.is_dir() and not match.is_symlink():
                for dirpath, dirnames, filenames in os.walk(match):
                    base = Path(dirpath)
                    dirnames[:] = sorted(
                        d for d in dirnames if not ignored((base / d).relative_to(root).as_posix())
                    )
                    for filename in sorted(filenames):
                        path = base / filename
                        relpath = path.relative_to(root).as_posix()
                        if not ignored(relpath):
                            found[relpath] = _entry(root, path)
            else:
                found[match.relative_to(root).as_posix()] = _entry(root, match)
    return [found[key] for key in sorted(found)]


def _file_digest(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fingerprint(files: Iterable[ContextFile]) -> list[list[str]]:
    """Path, kind (file, executable or symlink) and content digest of each file: the part of an image's
    hash inputs that covers its build context. Other metadata (owners, times, other mode bits) is not
    staged either, so it cannot change the image."""
    rows: list[list[str]] = []
    for item in files:
        if item.link_target is not None:
            rows.append([item.relpath, "symlink", item.link_target])
        else:
            kind = "executable" if item.executable else "file"
            rows.append([item.relpath, kind, _file_digest(item.source)])
    return rows


def stage(files: Iterable[ContextFile], destination: Path) -> None:
    """Copy the files into ``destination`` with normalised modes (0755 executables, 0644 others)."""
    for item in files:
        target = destination / item.relpath
        target.parent.mkdir(parents=True, exist_ok=True)
        if item.link_target is not None:
            target.symlink_to(item.link_target)
            continue
        shutil.copyfile(item.source, target)
        target.chmod(0o755 if item.executable else 0o644)
