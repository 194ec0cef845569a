"""What each image is built from: a Dockerfile, its build context, the images it builds FROM, and the files
the builder generates into the context first (the debootstrap root filesystem, the static pause binary, the
queue-proxy script).

A generated file has a cheap ``fingerprint`` (its recipe or its source, which goes into the image's content
hash) and an expensive ``produce`` that runs only when the image is actually built. So deciding that
nothing needs rebuilding never runs debootstrap or gcc.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import shutil
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

# Runs a command with its output in the image's build log; raises on failure.
Runner = Callable[[Sequence[str], float, str], None]

DEBIAN_MIRROR_ENV = "KSERVE_PY_DEBIAN_MIRROR"
DEFAULT_DEBIAN_MIRROR = "http://deb.debian.org/debian"
DEBOOTSTRAP_TIMEOUT_S = 1800.0
TAR_TIMEOUT_S = 600.0
GCC_TIMEOUT_S = 120.0


class InputError(ValueError):
    """An input of an image is missing or unusable (raised while hashing, before anything is built)."""


class Generated(Protocol):
    @property
    def filename(self) -> str: ...

    @property
    def tools(self) -> tuple[str, ...]:
        """Host programs ``produce`` runs."""
        ...

    def fingerprint(self) -> str: ...

    def produce(self, destination: Path, run: Runner) -> None: ...


@dataclass(frozen=True)
class DebootstrapRootfs:
    """A minbase Debian root filesystem as a tarball, without what a container image must not carry: device
    nodes (the runtime provides /dev), the host's resolv.conf and hostname (which debootstrap copies in),
    apt's downloaded packages and indexes, logs, and documentation other than copyright notices."""

    suite: str
    packages: tuple[str, ...]
    filename: str = "rootfs.tar"
    tools: tuple[str, ...] = ("debootstrap", "tar")
    # Bump when the clean-up below changes: the base (and so every image) must rebuild.
    recipe_version: int = 1

    def fingerprint(self) -> str:
        return json.dumps(
            {
                "debootstrap": "--variant=minbase",
                "suite": self.suite,
                "packages": sorted(self.packages),
                "machine": platform.machine(),
                "recipe": self.recipe_version,
            },
            sort_keys=True,
        )

    def produce(self, destination: Path, run: Runner) -> None:
        rootfs = destination.parent / "rootfs"
        mirror = os.environ.get(DEBIAN_MIRROR_ENV) or DEFAULT_DEBIAN_MIRROR
        # A private mount namespace: the /proc and /sys debootstrap mounts inside the target go away with it
        # even if debootstrap is killed half-way.
        run(
            [
                "unshare",
                "--mount",
                "--propagation",
                "private",
                "debootstrap",
                "--variant=minbase",
                f"--include={','.join(self.packages)}",
                self.suite,
                str(rootfs),
                mirror,
            ],
            DEBOOTSTRAP_TIMEOUT_S,
            "debootstrap",
        )
        _clean_rootfs(rootfs)
        run(["tar", "--numeric-owner", "-C", str(rootfs), "-cf", str(destination), "."], TAR_TIMEOUT_S, "tar")
        shutil.rmtree(rootfs)


def _empty_directory(path: Path) -> None:
    if not path.is_dir():
        return
    for child in path.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
        else:
            child.unlink()


def _clean_rootfs(rootfs: Path) -> None:
    for directory in (
        "dev",
        "var/log",
        "var/cache/apt",
        "usr/share/man",
        "usr/share/info",
        "usr/share/locale",
    ):
        _empty_directory(rootfs / directory)
    lists = rootfs / "var/lib/apt/lists"
    if lists.is_dir():
        for child in lists.iterdir():
            if child.is_file():
                child.unlink()
    docs = rootfs / "usr/share/doc"
    if docs.is_dir():
        for path in sorted(docs.rglob("*"), reverse=True):
            if path.is_dir() and not path.is_symlink():
                if not any(path.iterdir()):
                    path.rmdir()
            elif path.name != "copyright":
                path.unlink()
    for name in ("etc/resolv.conf", "etc/hostname"):
        (rootfs / name).unlink(missing_ok=True)


@dataclass(frozen=True)
class StaticBinary:
    """A C program compiled statically with the host's gcc."""

    source: Path
    filename: str
    flags: tuple[str, ...] = ("-static", "-Os", "-s", "-Wall", "-Wextra", "-Werror")
    tools: tuple[str, ...] = ("gcc",)

    def fingerprint(self) -> str:
        if not self.source.is_file():
            raise InputError(f"{self.source} does not exist")
        return json.dumps(
            {"source": hashlib.sha256(self.source.read_bytes()).hexdigest(), "flags": list(self.flags)}
        )

    def produce(self, destination: Path, run: Runner) -> None:
        run(["gcc", *self.flags, "-o", str(destination), str(self.source)], GCC_TIMEOUT_S, "gcc")


@dataclass(frozen=True)
class PythonExecutable:
    """A Python script made directly executable: a python3 shebang is added when it has none."""

    source: Path
    filename: str
    tools: tuple[str, ...] = ()

    def content(self) -> bytes:
        if not self.source.is_file():
            raise InputError(f"{self.source} does not exist")
        text = self.source.read_bytes()
        return text if text.startswith(b"#!") else b"#!/usr/bin/env python3\n" + text

    def fingerprint(self) -> str:
        return hashlib.sha256(self.content()).hexdigest()

    def produce(self, destination: Path, run: Runner) -> None:
        destination.write_bytes(self.content())
        destination.chmod(0o755)


@dataclass(frozen=True)
class Recipe:
    name: str
    context: Path
    dockerfile: Path
    # Build argument -> name of the image (built here) it must point to.
    images: Mapping[str, str] = field(default_factory=dict)
    generated: tuple[Generated, ...] = ()

    @property
    def dependencies(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(self.images.values()))


BASE_PACKAGES = ("python3", "python3-venv", "python-is-python3", "ca-certificates")


def recipes(repo: Path) -> dict[str, Recipe]:
    """Every image, in an order where each comes after the images it builds FROM."""
    here = repo / "e2e" / "images"

    def own(name: str, base: str, *generated: Generated) -> Recipe:
        return Recipe(name, here / name, here / name / "Dockerfile", {"BASE_IMAGE": base}, generated)

    return {
        "base": Recipe(
            "base",
            here / "base",
            here / "base" / "Dockerfile",
            generated=(DebootstrapRootfs("bookworm", BASE_PACKAGES),),
        ),
        "pause": Recipe(
            "pause",
            here / "pause",
            here / "pause" / "Dockerfile",
            generated=(StaticBinary(here / "pause" / "pause.c", "pause"),),
        ),
        "manager": Recipe("manager", repo, repo / "Dockerfile", {"PYTHON_IMAGE": "base"}),
        "queue-proxy": own(
            "queue-proxy",
            "base",
            PythonExecutable(repo / "e2e" / "knative_double" / "queue_proxy.py", "queue"),
        ),
        "qpext": Recipe(
            "qpext",
            repo,
            repo / "qpext" / "Dockerfile",
            {"PYTHON_IMAGE": "base", "QUEUE_IMAGE": "queue-proxy"},
        ),
        "kserve-runtime": own("kserve-runtime", "base"),
        "sklearnserver": own("sklearnserver", "kserve-runtime"),
        "storage-initializer": own("storage-initializer", "kserve-runtime"),
        "s3": own("s3", "kserve-runtime"),
    }
