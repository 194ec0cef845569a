"""Real builds of the cheap images (pause, base) with buildah, imported into a throwaway containerd.

The heavy images (kserve-runtime and what builds FROM it) take minutes and are exercised by the e2e suite;
these two cover the whole pipeline: debootstrap, gcc, staging, buildah, docker-archive export, the cache,
and containerd's import with the ref intact. The module builds into the user cache, so a second run reuses
the archives (the cold path is covered by building pause into an empty cache).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import tarfile
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from e2e.images import BuiltImage, ImageBuildError, build_images, cache_root
from e2e.images.__main__ import main
from e2e.images.scratch_containerd import ContainerdError, ScratchContainerd, mounts_under

pytestmark = pytest.mark.images
REPO = Path(__file__).resolve().parents[2]
WAIT_S = 30.0


@pytest.fixture(scope="module")
def images() -> dict[str, BuiltImage]:
    try:
        return build_images(["pause", "base"])
    except ImageBuildError as exc:
        pytest.fail(f"building pause and base failed: {exc}", pytrace=False)


@pytest.fixture(scope="module")
def containerd(images: dict[str, BuiltImage]) -> Iterator[ScratchContainerd]:
    try:
        with ScratchContainerd() as scratch:
            for image in images.values():
                scratch.import_archive(image.archive)
            yield scratch
    except ContainerdError as exc:
        pytest.fail(f"scratch containerd: {exc}", pytrace=False)


def _id(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def _wait_for(condition: str, check: object) -> None:
    assert callable(check)
    deadline = time.monotonic() + WAIT_S
    while not check():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {WAIT_S:.0f}s waiting for {condition}")
        time.sleep(0.1)


def _children(pid: int) -> list[tuple[int, str, str]]:
    """(pid, command, state) of the processes whose parent is ``pid``."""
    found: list[tuple[int, str, str]] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        command = stat[stat.index("(") + 1 : stat.rindex(")")]
        state, parent = stat[stat.rindex(")") + 2 :].split()[:2]
        if int(parent) == pid:
            found.append((int(entry.name), command, state))
    return found


def test_archives_import_into_containerd_with_their_refs(
    images: dict[str, BuiltImage], containerd: ScratchContainerd
) -> None:
    assert {image.ref for image in images.values()} <= containerd.refs()
    for image in images.values():
        assert image.ref.startswith(f"localhost/kserve-py/{image.name}:")
        with tarfile.open(image.archive) as archive:
            manifest = archive.extractfile("manifest.json")
            assert manifest is not None
            assert json.load(manifest)[0]["RepoTags"] == [image.ref]


def test_building_leaves_no_mounts_behind(images: dict[str, BuiltImage]) -> None:
    assert mounts_under(cache_root() / "containers") == []
    assert mounts_under(cache_root() / "images") == []


def test_a_second_build_reuses_the_archives(images: dict[str, BuiltImage]) -> None:
    again = build_images(["pause", "base"])
    assert {name: image.ref for name, image in again.items()} == {n: i.ref for n, i in images.items()}
    assert not any(image.built for image in again.values())


def test_the_base_rootfs_carries_no_devices_host_files_or_apt_caches(images: dict[str, BuiltImage]) -> None:
    with tarfile.open(images["base"].archive) as archive:
        manifest = archive.extractfile("manifest.json")
        assert manifest is not None
        (layer_name,) = json.load(manifest)[0]["Layers"]
        layer = archive.extractfile(layer_name)
        assert layer is not None
        with tarfile.open(fileobj=layer) as rootfs:
            members = rootfs.getmembers()
    names = {member.name.removeprefix("./") for member in members}
    assert [m.name for m in members if m.isdev()] == []
    assert not names & {"etc/resolv.conf", "etc/hostname"}
    assert [n for n in names if n.startswith("var/cache/apt/archives/") and n.endswith(".deb")] == []
    assert {"usr/bin/python3", "usr/bin/python", "etc/ssl/certs/ca-certificates.crt"} <= names


def test_base_runs_python_with_venv_and_tls(
    images: dict[str, BuiltImage], containerd: ScratchContainerd
) -> None:
    script = "import ensurepip, ssl, sys, venv; print(sys.version_info[:2], ssl.OPENSSL_VERSION.split()[0])"
    done = containerd.run(images["base"].ref, _id("base"), ["python", "-c", script])
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "(3, 11) OpenSSL"


@pytest.mark.parametrize("signo", [signal.SIGTERM, signal.SIGINT])
def test_pause_exits_zero_on_a_stop_signal(
    images: dict[str, BuiltImage], containerd: ScratchContainerd, signo: signal.Signals
) -> None:
    container_id = _id("pause")
    process = containerd.start_attached(images["pause"].ref, container_id)
    _wait_for("the pause task to run", lambda: containerd.task_pid(container_id) is not None)
    containerd.kill(container_id, signo)
    assert process.wait(timeout=WAIT_S) == 0


def test_pause_reaps_orphans_of_containers_sharing_its_pid_namespace(
    images: dict[str, BuiltImage], containerd: ScratchContainerd
) -> None:
    pause_id, app_id = _id("pause"), _id("app")
    pause = containerd.start_attached(images["pause"].ref, pause_id)
    _wait_for("the pause task to run", lambda: containerd.task_pid(pause_id) is not None)
    pause_pid = containerd.task_pid(pause_id)
    assert pause_pid is not None
    # The subshell exits at once, so its `sleep 2` is orphaned and re-parented to the namespace's init: pause.
    app = containerd.start_attached(
        images["base"].ref,
        app_id,
        ["sh", "-c", "(sleep 2 &); exec sleep 60"],
        options=["--with-ns", f"pid:/proc/{pause_pid}/ns/pid"],
    )
    _wait_for("the orphan to be re-parented to pause", lambda: bool(_children(pause_pid)))
    _wait_for(f"pause to reap its children {_children(pause_pid)}", lambda: not _children(pause_pid))
    containerd.kill(app_id, signal.SIGKILL)
    app.wait(timeout=WAIT_S)
    containerd.kill(pause_id, signal.SIGTERM)
    assert pause.wait(timeout=WAIT_S) == 0


def test_pause_version_flag(images: dict[str, BuiltImage], containerd: ScratchContainerd) -> None:
    done = containerd.run(images["pause"].ref, _id("pause"), ["/pause", "-v"])
    assert (done.returncode, done.stdout) == (0, "kserve-py pause 1\n")


def test_a_cold_build_in_an_empty_cache_builds_exports_and_cleans_up(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    built = build_images(["pause"], cache=cache)["pause"]
    assert built.built
    assert built.archive == cache / "images" / f"pause-{built.ref.rpartition(':')[2]}.tar"
    assert mounts_under(tmp_path) == []
    assert list((cache / "images" / "tmp").iterdir()) == []
    leftovers = subprocess.run(["pgrep", "-f", str(cache)], capture_output=True, text=True, check=False)
    assert leftovers.stdout == ""


def test_a_failed_build_is_one_line_naming_the_image_and_its_log(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    pause = repo / "e2e" / "images" / "pause"
    pause.mkdir(parents=True)
    (pause / "Dockerfile").write_text((REPO / "e2e/images/pause/Dockerfile").read_text())
    (pause / "pause.c").write_text("int main(void) { return missing; }\n")
    with pytest.raises(ImageBuildError) as caught:
        build_images(["pause"], cache=tmp_path / "cache", repo=repo)
    message = str(caught.value)
    assert "\n" not in message
    assert message.startswith("pause: gcc failed (exit 1); see ")
    log = Path(message.rpartition("see ")[2])
    assert "undeclared" in log.read_text()
    assert os.listdir(tmp_path / "cache" / "images" / "tmp") == []


def test_cli_check_import_prints_name_ref_archive(
    images: dict[str, BuiltImage], capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["check-import", "pause"]) == 0
    pause = images["pause"]
    assert capsys.readouterr().out == f"pause {pause.ref} {pause.archive}\n"
