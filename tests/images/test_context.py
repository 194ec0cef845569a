"""Build-context collection: exactly the COPYed files, without ignored ones, with a content fingerprint."""

from __future__ import annotations

from pathlib import Path

import pytest

from e2e.images.context import ContextError, collect, fingerprint, ignore_matcher, stage


def _tree(root: Path, files: dict[str, str]) -> None:
    for relpath, text in files.items():
        path = root / relpath
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


@pytest.mark.parametrize(
    ("pattern", "path", "ignored"),
    [
        ("**/__pycache__", "__pycache__/x.pyc", True),
        ("**/__pycache__", "pkg/sub/__pycache__/x.pyc", True),
        ("**/*.pyc", "pkg/a.pyc", True),
        ("*.egg-info", "kserve_py.egg-info/PKG-INFO", True),
        ("*.egg-info", "pkg/x.egg-info/PKG-INFO", False),
        ("tests", "tests/unit/test_a.py", True),
        ("tests", "pkg/tests/a.py", False),
        ("/docs/", "docs/a.md", True),
        ("a?c", "abc", True),
        ("a?c", "a/c", False),
    ],
)
def test_dockerignore_semantics(pattern: str, path: str, ignored: bool) -> None:
    assert ignore_matcher([pattern])(path) is ignored


def test_dockerignore_exceptions_are_refused() -> None:
    with pytest.raises(ContextError):
        ignore_matcher(["!keep"])


def test_collects_named_files_and_directories_minus_ignored(tmp_path: Path) -> None:
    _tree(
        tmp_path,
        {
            "README.md": "r",
            "pkg/a.py": "a",
            "pkg/sub/b.py": "b",
            "pkg/__pycache__/a.cpython-311.pyc": "x",
            "pkg/notes.tmp": "t",
            "other/c.py": "c",
            ".dockerignore": "**/*.tmp\n",
        },
    )
    files = collect(tmp_path, ["README.md", "pkg/"])
    assert [f.relpath for f in files] == ["README.md", "pkg/a.py", "pkg/sub/b.py"]


def test_glob_sources(tmp_path: Path) -> None:
    _tree(tmp_path, {"a.txt": "", "b.txt": "", "c.md": ""})
    assert [f.relpath for f in collect(tmp_path, ["*.txt"])] == ["a.txt", "b.txt"]


@pytest.mark.parametrize("source", ["missing.txt", "../outside", "*.none"])
def test_missing_or_outside_sources_are_errors(tmp_path: Path, source: str) -> None:
    with pytest.raises(ContextError):
        collect(tmp_path, [source])


def test_fingerprint_covers_content_path_and_executable_bit_only(tmp_path: Path) -> None:
    _tree(tmp_path, {"pkg/a.py": "a"})
    before = fingerprint(collect(tmp_path, ["pkg"]))
    (tmp_path / "pkg/a.py").touch()
    assert fingerprint(collect(tmp_path, ["pkg"])) == before
    (tmp_path / "pkg/a.py").chmod(0o755)
    assert fingerprint(collect(tmp_path, ["pkg"])) != before
    (tmp_path / "pkg/a.py").chmod(0o644)
    (tmp_path / "pkg/a.py").write_text("b")
    assert fingerprint(collect(tmp_path, ["pkg"])) != before


def test_stage_copies_exactly_the_files_with_normalised_modes(tmp_path: Path) -> None:
    source, staged = tmp_path / "src", tmp_path / "staged"
    _tree(source, {"pkg/a.py": "a", "pkg/run.sh": "#!/bin/sh\n", "pkg/__pycache__/a.pyc": "x"})
    (source / "pkg/run.sh").chmod(0o700)
    (source / "pkg/a.py").chmod(0o600)
    files = collect(source, ["pkg/"])
    stage(files, staged)
    assert sorted(p.relative_to(staged).as_posix() for p in staged.rglob("*") if p.is_file()) == [
        "pkg/a.py",
        "pkg/run.sh",
    ]
    assert (staged / "pkg/run.sh").stat().st_mode & 0o777 == 0o755
    assert (staged / "pkg/a.py").stat().st_mode & 0o777 == 0o644
