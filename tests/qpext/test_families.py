"""The parser reads a body as it arrives: any split into chunks must give the same output as the whole."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from qpext.families import ParsedBody, Parser, Relabeller, parse_text
from qpext.merge import Drops, render

BODY = (
    b"# HELP requests_total Requests.\n# TYPE requests_total counter\n"
    b'requests_total{code="200",path="/a"} 3\r\nrequests_total{code="500",path="/b"} 1 1700000000000\n'
    b"# TYPE latency_seconds histogram\n"
    b'latency_seconds_bucket{le="0.1"} 1\nlatency_seconds_bucket{le="+Inf"} 2\n'
    b"latency_seconds_sum 0.3\nlatency_seconds_count 2\n"
    b"# A comment that is neither HELP nor TYPE\n\n"
    b'escaped{msg="a \\"quoted\\" word\\n"} NaN\n'
    b'caf\xc3\xa9_label{name="caf\xc3\xa9"} 1\n'
    b'not_utf8{v="\xff"} 1\n'
    b'raw_cr{v="a\rb"} 1\n'
    b"# TYPE summary_seconds summary\n"
    b'summary_seconds{quantile="0.5"} 0.1\nsummary_seconds_sum 1\nsummary_seconds_count 10\n'
    b'broken{a="1" 2\nuntyped_total 7\nrequests_total{code="404",path="/c"} 2\n'
    b"# TYPE requests_total gauge\nrequests_total 9\n"
    b"last_line_without_newline 5"
)


def rendered(parsed: ParsedBody) -> bytes:
    drops = Drops()
    out = b"".join(render(None, parsed, Drops(), drops))
    return out + repr(sorted(drops.items())).encode()


@settings(max_examples=300, deadline=None)
@given(st.lists(st.integers(min_value=0, max_value=len(BODY)), max_size=12))
def test_any_chunking_gives_the_same_output(cuts: list[int]) -> None:
    relabeller = Relabeller(("revision_name",), ("r",))
    whole = rendered(parse_text(BODY, relabeller))
    parser = Parser(relabeller)
    start = 0
    for cut in sorted(cuts):
        parser.feed(BODY[start:cut])
        start = cut
    parser.feed(BODY[start:])
    assert rendered(parser.close()) == whole


def test_the_whole_body_is_read_as_expected() -> None:
    out = rendered(parse_text(BODY, Relabeller(("revision_name",), ("r",))))
    text = out.decode()
    assert 'requests_total{code="404",path="/c",revision_name="r"} 2\n' in text
    assert 'requests_total{code="200",path="/a",revision_name="r"} 3\n' in text
    assert 'escaped{msg="a \\"quoted\\" word\\n",revision_name="r"} NaN\n' in text
    assert 'café_label{name="café",revision_name="r"} 1\n' not in text  # not a valid metric name
    assert "not_utf8" not in text
    assert 'raw_cr{v="a\rb",revision_name="r"} 1\n' in text
    assert "broken" not in text
    assert 'last_line_without_newline{revision_name="r"} 5\n' in text
    assert "('malformed', 3)" in text
    assert "('type_clash', 1)" in text


@pytest.mark.parametrize(
    "value", [b"1", b"1.5", b"-2e5", b"+Inf", b"-inf", b"NaN", b"Infinity", b".5", b"5.", b"1E-3", b"+0.1"]
)
def test_values_prometheus_accepts_are_kept(value: bytes) -> None:
    parsed = parse_text(b"m " + value + b"\n")
    assert parsed.families[b"m"].runs == [b"m " + value + b"\n"]


@pytest.mark.parametrize("value", [b"1e", b"--1", b"+NaN", b"1.2.3", b"e5", b"0x10", b"1_000", b"one"])
def test_values_prometheus_rejects_make_the_family_malformed(value: bytes) -> None:
    assert parse_text(b"m " + value + b"\n").families[b"m"].malformed
