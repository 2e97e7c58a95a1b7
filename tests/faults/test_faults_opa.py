"""A misbehaving OPA on 127.0.0.1 (issue 14 item 5): whatever the server at opa.url sends - a trickle, silence, a
hang-up, a cut body, a gzip bomb, a huge body, the wrong content type, JSON nested 100 000 deep, a 500 with junk -
`swiftdeploy policy check` with `policy.engine: opa` exits 4 with one line, no traceback, within opa.timeout plus
a generous margin (a hang detector, not a performance assertion), and never accepts the answer (never exit 0).

The stub answers /health at once with what OPA answers, so every case reaches the decision query; the control case
(`well behaved`) shows the stub's decision is one the CLI accepts (exit 0), so each refusal below is the client's
bound, not a broken stub. The same bounds hold for localhttp's other users: a /metrics scrape over the cap is a
clear error.
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from conftest_io import (
    answer,
    cut,
    gzip_bomb,
    hang_up,
    opa_manifest,
    response_head,
    run_cli,
    silent,
    stream,
    stub_server,
    trickle,
)

from swiftdeploy.errors import OperationFailed
from swiftdeploy.localhttp import TimedOut, Unacceptable, fetch
from swiftdeploy.manifest import load_manifest
from swiftdeploy.metrics.scrape import MAX_BYTES, scrape
from swiftdeploy.policy.bundle import expected_revision

# opa.timeout of the manifests below: a healthy stub answers well within it even on a 2-core machine running the
# suite on 4 workers (with 1 s the health check itself timed out there); the hanging cases end soon after it.
TIMEOUT = 2.0
MARGIN = 10.0  # "within the deadline": the CLI starts in ~1 s; a hang is 60 s (the trickle) or forever
HEALTH = answer(b"{}")
DECISION = "/v1/data/swiftdeploy/"


def allow_body(manifest: Path) -> bytes:
    """OPA's answer allowing the infrastructure decision, decided by the bundle this manifest generates."""
    revision = expected_revision(load_manifest(manifest))
    result = {"allow": True, "verdict": "allow", "violations": []}
    return json.dumps({"result": result, "provenance": {"bundles": {"/b": {"revision": revision}}}}).encode()


def deep_json(depth: int) -> bytes:
    return b'{"result": ' + b"[" * depth + b"]" * depth + b"}"


def cases(allow: bytes) -> dict[str, object]:
    head = response_head(200, len(allow))
    return {
        # the whole answer (head and body) one byte a second: per-read timeouts never fire
        "trickle whole answer": trickle(head + allow),
        # the head at once, the (valid, allowing) body one byte a second
        "trickle body": lambda conn, request, stop: (conn.sendall(head), trickle(allow)(conn, request, stop)),
        "never answers": silent,
        "accepts then closes": hang_up,
        "closes mid-body": cut(response_head(200, len(allow)), allow[:20]),
        "gzip bomb": answer(gzip_bomb(), content_type="application/json", Content_Encoding="gzip"),
        "deflate encoded": answer(allow, Content_Encoding="deflate"),
        "huge declared body": stream(response_head(200, 64 << 20), b" " * 65536, 64 << 20),
        "huge chunked body": stream(
            b"HTTP/1.1 200 X\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"10000\r\n" + b" " * 65536 + b"\r\n",
            64 << 20,
        ),
        "wrong content type": answer(allow, content_type="text/html"),
        "deeply nested JSON": answer(deep_json(100_000)),
        "HTTP 500 with junk": answer(bytes(range(256)) * 4, status=500, content_type="text/html"),
        "not JSON": answer(b"<html>proxy error</html>"),
    }


CASES = list(cases(b"").keys())


@pytest.mark.parametrize("case", CASES)
def test_a_misbehaving_opa_is_exit_4_in_bounded_time(tmp_path: Path, case: str) -> None:
    with stub_server({"/health": HEALTH}) as server:
        manifest = opa_manifest(tmp_path, server.port, timeout=TIMEOUT)
        server.routes[DECISION] = cases(allow_body(manifest))[case]  # type: ignore[assignment]
        run = run_cli("-m", str(manifest), "policy", "check", timeout=120)
    assert run.returncode == 4, (case, run.returncode, run.stderr)
    assert run.seconds < TIMEOUT + MARGIN, (case, run.seconds)
    assert "Traceback" not in run.stderr and "this is a bug" not in run.stderr
    assert len(run.error_lines) == 1 and run.error_lines[0].startswith("error: "), run.stderr
    assert f"127.0.0.1:{server.port}" in run.stderr
    # every request asked for no content encoding
    assert server.requests and all(r.headers.get("accept-encoding") == "identity" for r in server.requests)


def test_the_messages_name_the_problem(tmp_path: Path) -> None:
    """Each refusal says what was wrong: the deadline (the whole request), the encoding, the size, the type."""
    expected = {
        "trickle body": f"did not answer POST {DECISION}infrastructure/decision within {TIMEOUT:g} s",
        "gzip bomb": "gzip-encoded",
        "huge chunked body": "more than 1048576 bytes",
        "wrong content type": "content type text/html",
        "deeply nested JSON": "nested deeper than",
    }
    for case, words in expected.items():
        with stub_server({"/health": HEALTH}) as server:
            manifest = opa_manifest(tmp_path, server.port, timeout=TIMEOUT)
            server.routes[DECISION] = cases(allow_body(manifest))[case]  # type: ignore[assignment]
            run = run_cli("-m", str(manifest), "policy", "check", timeout=120)
        assert run.returncode == 4 and words in run.stderr, (case, run.stderr)


def test_a_trickling_health_check_is_bounded_too(tmp_path: Path) -> None:
    with stub_server({"/health": trickle(response_head(200, 2) + b"{}")}) as server:
        run = run_cli("-m", str(opa_manifest(tmp_path, server.port, timeout=TIMEOUT)), "policy", "check")
    assert run.returncode == 4 and run.seconds < TIMEOUT + MARGIN
    assert f"did not answer the health check within {TIMEOUT:g} s" in run.stderr


def test_control_a_well_behaved_stub_is_accepted(tmp_path: Path) -> None:
    """The stub's allow is a valid decision of this manifest's bundle: the refusals above are the bounds."""
    with stub_server({"/health": HEALTH}) as server:
        manifest = opa_manifest(tmp_path, server.port, timeout=TIMEOUT)
        server.routes[DECISION] = answer(allow_body(manifest))
        run = run_cli("-m", str(manifest), "policy", "check", "--json")
    assert run.returncode == 0, run.stderr
    assert json.loads(run.stdout)["engine"] == "opa"


# --- localhttp itself: the one bounded client ---


def test_the_deadline_covers_a_trickled_head() -> None:
    """The status line and headers trickled 10 bytes a second: no read waits long, the whole takes 7 s; the
    request ends at its 0.5 s deadline."""
    head = response_head(200, 2) + b"{}"
    with stub_server({"/": trickle(head, every=0.1)}) as server:
        started = time.monotonic()
        with pytest.raises(TimedOut):
            fetch("GET", f"http://127.0.0.1:{server.port}/", timeout=0.5)
        assert time.monotonic() - started < 0.5 + MARGIN


def test_a_body_over_the_limit_is_refused_not_truncated_when_asked() -> None:
    with stub_server({"/": answer(b"x" * 5000)}) as server:
        url = f"http://127.0.0.1:{server.port}/"
        assert fetch("GET", url, limit=100).body == b"x" * 100  # health polls: the first bytes
        with pytest.raises(Unacceptable, match="more than 100 bytes"):
            fetch("GET", url, limit=100, truncate=False)


def test_a_metrics_scrape_bigger_than_the_cap_is_a_clear_error() -> None:
    line = b"app_uptime_seconds 1\n"
    body_size = MAX_BYTES + len(line)
    handler = stream(response_head(200, None, "text/plain"), line, body_size)
    with stub_server({"/": handler}) as server, pytest.raises(OperationFailed, match=rf"more than {MAX_BYTES} bytes"):
        scrape(f"http://127.0.0.1:{server.port}/metrics", timeout=5)
