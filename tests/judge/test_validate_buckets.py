"""`validate` warns when the latency threshold is not a bucket bound of the histogram (and says which bounds the
gate uses), and when a threshold that no longer has an effect is set."""

from __future__ import annotations

import socket

import httpx

from swiftdeploy.checks import run_checks
from swiftdeploy.judge import threshold_checks


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # nothing listens there once the socket is closed


def test_a_bucket_bound_threshold_is_exact(write_manifest) -> None:
    m = write_manifest(admin_port=closed_port())
    [(check, ok, detail, fix)] = threshold_checks(m)
    assert (check, ok, fix) == ("latency buckets", True, "")
    assert detail.startswith("max_p99_latency_ms 500 ms is a bucket bound of the demo API's histogram")


def test_a_threshold_between_bounds_warns_naming_the_bounds_used(write_manifest) -> None:
    m = write_manifest("{max_p99_latency_ms: 450}", admin_port=closed_port())
    [(check, ok, detail, fix)] = threshold_checks(m)
    assert ok and detail.startswith("warning: max_p99_latency_ms 450 ms is not a bucket bound")
    assert "counts requests slower than 500 ms to deny and slower than 400 ms to allow" in detail
    assert "(400 ms, 500 ms)" in fix


def test_the_scraped_histogram_is_preferred(write_manifest, exposition) -> None:
    m = write_manifest("{max_p99_latency_ms: 450}", admin_port=18083)
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(str(request.url))
        text = exposition(10).replace('le="0.5"', 'le="0.45"')  # this app has a 450 ms bucket
        return httpx.Response(200, text=text)

    [(_, ok, detail, _)] = threshold_checks(m, transport=httpx.MockTransport(handler))
    assert seen == ["http://127.0.0.1:18083/stable/metrics"]
    assert ok and detail.startswith("max_p99_latency_ms 450 ms is a bucket bound of the histogram scraped from")


def test_a_retired_threshold_warns(write_manifest) -> None:
    m = write_manifest("{max_error_rate_increase_percent: 0.5}", admin_port=closed_port())
    rows = {row[0]: row for row in threshold_checks(m)}
    assert rows["canary thresholds"][1] is True
    assert "max_error_rate_increase_percent no longer has an effect" in rows["canary thresholds"][2]


def test_validate_shows_the_rows(write_manifest) -> None:
    m = write_manifest("{max_p99_latency_ms: 450}", admin_port=closed_port())
    rows = {row.check: row for row in run_checks(m.source_path).rows}
    assert rows["latency buckets"].ok and rows["latency buckets"].detail.startswith("warning:")
