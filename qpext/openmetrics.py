"""OpenMetrics input from the app, turned into text format 0.0.4.

Prometheus asks for OpenMetrics first and qpext forwards its ``Accept`` header, so a Python model server
(prometheus-client) answers in OpenMetrics. Its ``# EOF``, ``# UNIT``, ``_created`` samples, exemplars and
second-based timestamps are not text format, and passing them through (as KServe's Go qpext effectively
did) produces a body Prometheus rejects. The conversion uses prometheus-client's own OpenMetrics parser and
text writer: correctness over speed on this path, which stays off the text-format fast path. The series
that result are the ones Prometheus would have stored scraping the app directly (``foo_total``,
``foo_created`` as a gauge, ``foo_info``, ...).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from prometheus_client.exposition import generate_latest
from prometheus_client.openmetrics.parser import text_string_to_metric_families

log = logging.getLogger(__name__)


@dataclass
class Converted:
    text: bytes
    # Families lost to a parse error (the rest of the body after it counts as one) or a write error.
    malformed: int = 0


class _Families:
    """The minimal collector interface generate_latest needs."""

    def __init__(self, families: Iterable[Any]) -> None:
        self._families = list(families)

    def collect(self) -> list[Any]:
        return self._families


def openmetrics_to_text(body: bytes) -> Converted:
    """Convert an OpenMetrics body; families before a parse error are kept."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError as err:
        log.warning("app metrics are not valid UTF-8 OpenMetrics: %s", err)
        return Converted(b"", malformed=1)
    families: list[Any] = []
    malformed = 0
    try:
        for family in text_string_to_metric_families(text):  # type: ignore[no-untyped-call]
            families.append(family)
    except (ValueError, TypeError, KeyError, IndexError) as err:
        log.warning("app OpenMetrics output is malformed after %d families: %s", len(families), err)
        malformed += 1
    parts: list[bytes] = []
    for family in families:
        try:
            parts.append(generate_latest(_Families([family])))
        except (ValueError, TypeError, AttributeError) as err:
            log.warning("app family %s cannot be written as text format: %s", family.name, err)
            malformed += 1
    return Converted(b"".join(parts), malformed)
