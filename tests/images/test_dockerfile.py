"""Which context paths a Dockerfile reads: the input of every image's content hash."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.images.dockerfile import DockerfileError, copied_sources, from_arguments

REPO = Path(__file__).resolve().parents[2]


def test_sources_of_copy_and_add_in_order_without_stage_copies() -> None:
    text = """
# comment
ARG BASE
FROM ${BASE} AS build
COPY pyproject.toml README.md ./
copy --chown=1:1 apis/ apis/
ADD rootfs.tar /
COPY --from=build /opt/venv /opt/venv
COPY ["with space.txt", "README.md", "/dst/"]
"""
    assert copied_sources(text) == ["pyproject.toml", "README.md", "apis/", "rootfs.tar", "with space.txt"]


def test_continuation_lines_and_comments_inside_them() -> None:
    text = "COPY a \\\n  # not an argument\n  b \\\n  /dst/\nRUN echo COPY x /y\n"
    assert copied_sources(text) == ["a", "b"]


@pytest.mark.parametrize(
    "line",
    [
        "COPY $SRC /dst",
        "ADD https://example.invalid/file /dst",
        "COPY <<EOF /dst",
        "COPY onlyone",
        'COPY ["a", 1]',
    ],
)
def test_forms_that_cannot_be_resolved_offline_are_errors(line: str) -> None:
    with pytest.raises(DockerfileError):
        copied_sources(line)


def test_from_arguments() -> None:
    text = "ARG A\nARG B\nFROM ${A} AS one\nFROM $B\nFROM one\nFROM --platform=x ${A}\nFROM scratch\n"
    assert from_arguments(text) == ["A", "B"]


def test_repository_dockerfiles() -> None:
    """The manager and qpext Dockerfiles copy only sources; the queue image is a FROM argument."""
    manager = (REPO / "Dockerfile").read_text()
    qpext = (REPO / "qpext" / "Dockerfile").read_text()
    assert copied_sources(manager) == [
        "pyproject.toml",
        "README.md",
        "apis/",
        "manager/",
        "controllers/",
        "reconcilers/",
        "webhooks/",
    ]
    assert copied_sources(qpext) == ["pyproject.toml", "README.md", "qpext/"]
    assert from_arguments(manager) == ["PYTHON_IMAGE"]
    assert from_arguments(qpext) == ["QUEUE_IMAGE", "PYTHON_IMAGE"]
