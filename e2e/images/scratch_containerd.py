"""A throwaway containerd (own root, state and socket in a temp dir) to prove that archives import with their
refs and that images run.

The node's containerd is the real consumer, but checking an archive there would need the whole node; this
one starts in a second, needs no systemd and no CRI, and is removed with everything it created. ``stop``
fails if a mount under its directory survived, because a leaked overlay mount is exactly the kind of debris
that breaks the next run on a shared machine.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from types import TracebackType

START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0
IMPORT_TIMEOUT_S = 900.0
NAMESPACE = "k8s.io"


class ContainerdError(RuntimeError):
    """The scratch containerd failed to start, a ctr command failed, or it left mounts behind."""


def mounts_under(directory: Path) -> list[str]:
    """Mount points at or below ``directory`` in this process's mount namespace."""
    prefix = str(directory.resolve())
    points: list[str] = []
    with open("/proc/self/mountinfo") as mountinfo:
        for line in mountinfo:
            point = line.split()[4].replace("\\040", " ")
            if point == prefix or point.startswith(prefix + "/"):
                points.append(point)
    return points


class ScratchContainerd:
    def __init__(self) -> None:
        self.directory: Path | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._attached: list[subprocess.Popen[str]] = []

    @property
    def socket(self) -> Path:
        if self.directory is None:
            raise ContainerdError("containerd is not started")
        return self.directory / "containerd.sock"

    def __enter__(self) -> ScratchContainerd:
        self.start()
        return self

    def __exit__(
        self, kind: type[BaseException] | None, value: BaseException | None, traceback: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> None:
        for tool in ("containerd", "ctr", "runc"):
            if shutil.which(tool) is None:
                raise ContainerdError(f"{tool} is not installed; run hack/provision-image-tools.sh")
        # Short path: the socket address must fit in 108 bytes.
        self.directory = Path(tempfile.mkdtemp(prefix="kserve-py-ctrd-"))
        config = self.directory / "config.toml"
        config.write_text(
            "\n".join(
                [
                    "version = 2",
                    f'root = "{self.directory / "root"}"',
                    f'state = "{self.directory / "state"}"',
                    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
                    "[grpc]",
                    f'  address = "{self.socket}"',
                    "[ttrpc]",
                    f'  address = "{self.socket}.ttrpc"',
                    '[plugins."io.containerd.internal.v1.opt"]',
                    f'  path = "{self.directory / "opt"}"',
                    "",
                ]
            )
        )
        with (self.directory / "containerd.log").open("ab") as log:
            self._process = subprocess.Popen(
                ["containerd", "--config", str(config)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                start_new_session=True,
            )
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise ContainerdError(
                    f"containerd exited with {self._process.returncode}: {self._log_tail()}"
                )
            if self.socket.exists() and self.ctr(["version"], check=False).returncode == 0:
                return
            time.sleep(0.2)
        raise ContainerdError(f"containerd did not answer within {START_TIMEOUT_S:.0f}s: {self._log_tail()}")

    def _log_tail(self) -> str:
        if self.directory is None:
            return ""
        lines = (self.directory / "containerd.log").read_text(errors="replace").splitlines()
        return " | ".join(lines[-5:])

    def ctr(
        self, args: Sequence[str], *, timeout: float = 120.0, check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        command = ["ctr", "--address", str(self.socket), "--namespace", NAMESPACE, *args]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
        except subprocess.TimeoutExpired as exc:
            raise ContainerdError(f"{' '.join(command)} did not finish within {timeout:.0f}s") from exc
        if check and done.returncode != 0:
            raise ContainerdError(f"{' '.join(command)} failed ({done.returncode}): {done.stderr.strip()}")
        return done

    def import_archive(self, archive: Path) -> None:
        self.ctr(["images", "import", str(archive)], timeout=IMPORT_TIMEOUT_S)

    def refs(self) -> set[str]:
        return set(self.ctr(["images", "ls", "--quiet"]).stdout.split())

    def run(
        self,
        ref: str,
        container_id: str,
        args: Sequence[str] = (),
        *,
        options: Sequence[str] = (),
        timeout: float = 120.0,
    ) -> subprocess.CompletedProcess[str]:
        """Run a container to completion (``ctr run --rm``); the result carries its exit code and output."""
        return self.ctr(["run", "--rm", *options, ref, container_id, *args], timeout=timeout, check=False)

    def start_attached(
        self, ref: str, container_id: str, args: Sequence[str] = (), *, options: Sequence[str] = ()
    ) -> subprocess.Popen[str]:
        """Start ``ctr run --rm`` in the background; its exit code is the container's. ``stop`` ends it."""
        process = subprocess.Popen(
            [
                "ctr",
                "--address",
                str(self.socket),
                "--namespace",
                NAMESPACE,
                "run",
                "--rm",
                *options,
                ref,
                container_id,
                *args,
            ],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        self._attached.append(process)
        return process

    def task_pid(self, container_id: str) -> int | None:
        """Host PID of a running task, or None."""
        for line in self.ctr(["tasks", "ls"]).stdout.splitlines()[1:]:
            fields = line.split()
            if len(fields) >= 3 and fields[0] == container_id and fields[2] == "RUNNING":
                return int(fields[1])
        return None

    def kill(self, container_id: str, signo: signal.Signals) -> None:
        self.ctr(["tasks", "kill", "--signal", signo.name, container_id])

    def stop(self) -> None:
        """Remove every task and container, stop containerd, and delete its directory. Raises if a mount
        under the directory was left behind (after unmounting it)."""
        if self.directory is None:
            return
        leftovers: list[str] = []
        try:
            if self._process is not None and self._process.poll() is None:
                self._remove_containers()
            for process in self._attached:
                _end(process)
            if self._process is not None:
                _end(self._process, STOP_TIMEOUT_S)
            leftovers = mounts_under(self.directory)
            for point in sorted(leftovers, reverse=True):
                subprocess.run(["umount", "--lazy", point], check=False, timeout=30)
        finally:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None
            self._process = None
            self._attached = []
        if leftovers:
            raise ContainerdError(f"containerd left mounts behind: {', '.join(leftovers)}")

    def _remove_containers(self) -> None:
        for line in self.ctr(["tasks", "ls", "--quiet"], check=False).stdout.split():
            self.ctr(["tasks", "kill", "--signal", "SIGKILL", line], check=False)
            self.ctr(["tasks", "delete", "--force", line], check=False)
        for line in self.ctr(["containers", "ls", "--quiet"], check=False).stdout.split():
            self.ctr(["containers", "delete", line], check=False)


def _end(process: subprocess.Popen[bytes] | subprocess.Popen[str], grace: float = 10.0) -> None:
    if process.poll() is not None:
        return
    for signo in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signo)
        try:
            process.wait(timeout=grace)
            return
        except subprocess.TimeoutExpired:
            continue
