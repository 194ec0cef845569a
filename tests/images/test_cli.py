"""``python -m e2e.images``: output lines and one-line errors."""

from __future__ import annotations

import re

import pytest

from e2e.images.__main__ import main


def test_an_unknown_image_is_one_error_line_and_exit_1(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["build", "nope"]) == 1
    out, err = capsys.readouterr()
    assert out == ""
    assert err.startswith("e2e.images: error: unknown image nope (known: base, pause, manager, ")
    assert err.count("\n") == 1


def test_list_prints_name_ref_and_cache_state_without_building(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["list", "pause"]) == 0
    out, err = capsys.readouterr()
    assert re.fullmatch(r"pause localhost/kserve-py/pause:[0-9a-f]{12} (cached|missing)\n", out)
    assert err == ""


def test_an_unknown_command_is_a_usage_error() -> None:
    with pytest.raises(SystemExit) as caught:
        main(["frobnicate"])
    assert caught.value.code == 2
