"""buildah as the image store and builder, with everything it keeps under our cache directory.

Why these choices:
- Storage (``--root``/``--runroot``) and configuration (storage.conf, registries.conf, signature policy) are
  our own files, so host settings cannot change a build and nothing lands in /var/lib/containers.
- Every buildah and debootstrap command runs in a private mount namespace (``unshare --mount``): whatever
  it mounts disappears with it, even when it is killed, so a build never leaves mounts behind.
- Every command runs in its own process group with a timeout, and is killed as a group on timeout or
  interrupt, so a build never leaves processes behind.
- RUN steps use the host network (PyPI) and see the host's CA bundle in place of the image's (read-only,
  not committed), so a TLS-inspecting proxy the host trusts is trusted by pip in the build too. Base images
  are never pulled from a registry (``--pull=never``): they are built here or loaded from our archives.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

BUILD_TIMEOUT_S = 3600.0
STORE_TIMEOUT_S = 900.0
KILL_GRACE_S = 10.0
HOST_CA_BUNDLE = Path("/etc/ssl/certs/ca-certificates.crt")


class MissingToolError(RuntimeError):
    """Building is impossible on this machine: a tool is missing or we are not root."""


class CommandError(RuntimeError):
    """A command failed or timed out; its output is in ``log_file``."""

    def __init__(self, what: str, detail: str, log_file: Path) -> None:
        super().__init__(f"{what} {detail}; see {log_file}")
        self.log_file = log_file


def run_logged(
    command: Sequence[str],
    log_file: Path,
    *,
    timeout: float,
    what: str,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
) -> str:
    """Run ``command`` with stderr (and stdout unless ``capture``) appended to ``log_file``; return the
    captured stdout. The whole process group is killed on timeout or interrupt."""
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with log_file.open("ab") as log:
        log.write(f"\n$ {' '.join(command)}\n".encode())
        log.flush()
        try:
            process = subprocess.Popen(
                list(command),
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE if capture else log,
                stderr=log,
                env={**os.environ, **env} if env else None,
                start_new_session=True,
            )
        except OSError as exc:
            raise CommandError(what, f"could not start ({exc})", log_file) from exc
        try:
            out, _ = process.communicate(timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            _kill_group(process)
            raise CommandError(what, f"did not finish within {timeout:.0f}s", log_file) from exc
        except BaseException:
            _kill_group(process)
            raise
    if process.returncode != 0:
        raise CommandError(what, f"failed (exit {process.returncode})", log_file)
    return out.decode() if capture and out else ""


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    for signo, grace in ((signal.SIGTERM, KILL_GRACE_S), (signal.SIGKILL, KILL_GRACE_S)):
        try:
            os.killpg(process.pid, signo)
        except ProcessLookupError:
            return
        try:
            process.communicate(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue


class Buildah:
    """The image store: builds, exports (docker-archive), loads and removes images."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.storage = root / "storage"
        self.runroot = root / "run"
        self._policy = root / "policy.json"
        self._registries = root / "registries.conf"
        self._storage_conf = root / "storage.conf"

    def require(self, tools: Sequence[str]) -> None:
        if os.geteuid() != 0:
            raise MissingToolError("building images needs root (buildah with overlay storage, debootstrap)")
        for tool in dict.fromkeys(["buildah", "unshare", *tools]):
            if shutil.which(tool) is None:
                raise MissingToolError(f"{tool} is not installed; run hack/provision-image-tools.sh")

    def _prepare(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        files = {
            self._policy: json.dumps({"default": [{"type": "insecureAcceptAnything"}]}) + "\n",
            self._registries: "unqualified-search-registries = []\n",
            self._storage_conf: (
                f'[storage]\ndriver = "overlay"\ngraphroot = "{self.storage}"\nrunroot = "{self.runroot}"\n'
            ),
        }
        for path, text in files.items():
            if not path.is_file() or path.read_text() != text:
                path.write_text(text)

    def _command(self, *args: str) -> list[str]:
        return [
            "unshare",
            "--mount",
            "--propagation",
            "private",
            "buildah",
            "--root",
            str(self.storage),
            "--runroot",
            str(self.runroot),
            "--storage-driver",
            "overlay",
            "--registries-conf",
            str(self._registries),
            *args,
        ]

    def _run(
        self, log_file: Path, what: str, *args: str, timeout: float = STORE_TIMEOUT_S, capture: bool = True
    ) -> str:
        self._prepare()
        return run_logged(
            self._command(*args),
            log_file,
            timeout=timeout,
            what=what,
            env={"CONTAINERS_STORAGE_CONF": str(self._storage_conf)},
            capture=capture,
        )

    def has(self, ref: str, log_file: Path) -> bool:
        try:
            self._run(log_file, "buildah inspect", "inspect", "--type", "image", ref)
        except CommandError:
            return False
        return True

    def build(
        self, *, context: Path, dockerfile: Path, ref: str, build_args: Mapping[str, str], log_file: Path
    ) -> None:
        volumes: list[str] = []
        if HOST_CA_BUNDLE.is_file():
            volumes += ["--volume", f"{HOST_CA_BUNDLE}:{HOST_CA_BUNDLE}:ro"]
        arguments = [
            item for key, value in sorted(build_args.items()) for item in ("--build-arg", f"{key}={value}")
        ]
        self._run(
            log_file,
            "buildah bud",
            "bud",
            "--signature-policy",
            str(self._policy),
            "--pull=never",
            "--layers=false",
            "--force-rm",
            "--format",
            "docker",
            "--network",
            "host",
            *volumes,
            *arguments,
            "--file",
            str(dockerfile),
            "--tag",
            ref,
            str(context),
            timeout=BUILD_TIMEOUT_S,
            capture=False,
        )

    def export(self, ref: str, archive: Path, log_file: Path) -> None:
        archive.unlink(missing_ok=True)
        self._run(
            log_file,
            "buildah push",
            "push",
            "--signature-policy",
            str(self._policy),
            ref,
            f"docker-archive:{archive}:{ref}",
        )

    def load(self, archive: Path, log_file: Path) -> None:
        self._run(
            log_file,
            "buildah pull",
            "pull",
            "--signature-policy",
            str(self._policy),
            f"docker-archive:{archive}",
        )

    def refs(self, repository: str, log_file: Path) -> list[str]:
        if not self.storage.is_dir():
            return []
        listing = json.loads(self._run(log_file, "buildah images", "images", "--json") or "[]")
        names = [name for image in listing for name in image.get("names") or []]
        return sorted(name for name in names if name.rpartition(":")[0] == repository)

    def remove(self, ref: str, log_file: Path) -> None:
        self._run(log_file, "buildah rmi", "rmi", ref)
