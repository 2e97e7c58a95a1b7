"""Fixtures shared by the demo API tests.

Helpers are handed out as fixtures (not imported from a module) so the tests work under any pytest import mode.
"""

from __future__ import annotations

import pytest
from prometheus_client.parser import text_string_to_metric_families

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


class Prom:
    """Reads scrapes with prometheus_client's own parser."""

    @staticmethod
    def parse(text: str) -> Samples:
        samples: Samples = {}
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                samples[(sample.name, frozenset(sample.labels.items()))] = sample.value
        return samples

    @staticmethod
    def value(samples: Samples, name: str, **labels: str) -> float:
        """The sample's value; 0.0 when the series does not exist (a counter that never moved)."""
        return samples.get((name, frozenset(labels.items())), 0.0)

    @staticmethod
    def label_sets(samples: Samples, name: str) -> list[dict[str, str]]:
        return [dict(labels) for (sample_name, labels) in samples if sample_name == name]


@pytest.fixture
def prom() -> type[Prom]:
    return Prom


@pytest.fixture
def anyio_backend() -> str:
    return "asyncio"
