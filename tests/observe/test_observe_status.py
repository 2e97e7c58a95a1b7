"""status: snapshots against real demo API processes (direct and through real nginx), dead tracks, the live view
under a pseudo-terminal."""

from __future__ import annotations

import json
import os
import re
import threading
import time
from pathlib import Path

import httpx
from support import HEALTHY_HOST, cli, free_port

from swiftdeploy import audit, dashboard, history
from swiftdeploy.manifest import load_manifest

REQUESTS = 60  # bounded traffic per track per test


def _traffic(url: str, n: int = REQUESTS) -> None:
    with httpx.Client(timeout=5.0) as client:
        for _ in range(n):
            client.get(f"{url}/")


def test_snapshot_shows_canary_deny_with_violations(demo_api, manifest_file, tmp_path: Path) -> None:
    m = load_manifest(manifest_file("canary"))
    stable, canary = demo_api("stable"), demo_api("canary")
    assert httpx.post(f"{canary.url}/chaos", json={"mode": "error", "rate": 0.5}).status_code == 200
    collector = dashboard.StatusCollector(m, urls={"stable": stable.url, "canary": canary.url})

    first = collector.collect()
    assert first.baseline and first.tracks["canary"].interval is None
    assert first.decisions["canary"].verdict == dashboard.BASELINE  # no meaningless rates on the first refresh
    assert first.exit_code() == 3

    _traffic(stable.url)
    _traffic(canary.url)
    snap = collector.collect()
    data = json.loads(json.dumps(snap.to_dict()))  # JSON-serialisable as is
    assert not data["baseline"] and data["interval_seconds"] > 0
    s, c = data["tracks"]["stable"], data["tracks"]["canary"]
    assert s["state"] == c["state"] == "up" and s["health"] == "ok"
    assert (s["mode"], c["mode"]) == ("stable", "canary")
    assert c["chaos"]["mode"] == "error" and c["chaos"]["rate"] == 0.5 and s["chaos"]["mode"] == "none"
    # status's own /healthz and /chaos probes are not counted: exactly the traffic sent
    assert s["interval"]["requests"] == REQUESTS and c["interval"]["requests"] == REQUESTS
    assert s["interval"]["errors"] == 0 and 0 < c["interval"]["errors"] < REQUESTS
    assert c["interval"]["error_rate_percent"] > 1 and c["interval"]["rps"] > 0
    assert c["window"]["requests"] == REQUESTS and c["uptime_seconds"] > 0
    assert len(c["trend"]["rps"]) == 1
    canary_decision = data["decisions"]["canary"]
    assert canary_decision["verdict"] == "deny" and canary_decision["allow"] is False
    assert canary_decision["engine"] == "embedded" and data["engines"] == ["embedded"]
    error_rule = [v for v in canary_decision["violations"] if v["unit"] == "%" and v["threshold"] == 1]
    assert error_rule and error_rule[0]["observed"] == c["window"]["error_rate_percent"]
    assert canary_decision["input"]["canary"]["requests"] == REQUESTS
    assert data["decisions"]["infrastructure"]["verdict"] == "allow"  # lenient host thresholds in the manifest
    assert snap.exit_code() == 3

    # the status record: what audit charts and counts
    path = tmp_path / "history.jsonl"
    history.append(path, "status", **snap.record())
    (rec,) = list(history.read(path))
    assert "ts" in rec and "trend" not in rec["tracks"]["canary"] and "input" not in rec["decisions"]["canary"]
    report = audit.build(path)
    assert {b["canary_err"] for b in report.chart.buckets.values()} == {c["interval"]["error_rate_percent"]}
    assert ("canary", error_rule[0]["rule"], "status") in report.violations

    text = _render_text(snap)
    assert "DENY" in text and error_rule[0]["rule"] in text and "error 50%" in text


def test_dead_track_is_shown_as_down_and_the_collector_keeps_going(demo_api, manifest_file) -> None:
    m = load_manifest(manifest_file("canary"))
    stable, canary = demo_api("stable"), demo_api("canary")
    collector = dashboard.StatusCollector(m, urls={"stable": stable.url, "canary": canary.url}, timeout=1.0)
    collector.collect()
    canary.stop()  # the canary dies between two refreshes
    _traffic(stable.url, 25)
    snap = collector.collect()
    c = snap.tracks["canary"]
    assert c.state == "down" and canary.url in (c.error or "") and c.interval is None
    assert snap.tracks["stable"].state == "up" and snap.tracks["stable"].interval["requests"] == 25
    decision = snap.decisions["canary"]
    # an outage, not a policy block: the policy is not asked about a track that does not answer
    assert decision.verdict == dashboard.NOT_EVALUATED and not decision.violations and decision.input is None
    assert "canary is down" in decision.message and snap.exit_code() == 1
    assert "DOWN" in _render_text(snap)
    assert json.loads(json.dumps(snap.to_dict()))["tracks"]["canary"]["up"] is False
    again = collector.collect()  # still no crash on the next refresh
    assert again.tracks["canary"].state == "down"


def test_once_exit_code_is_1_when_the_stable_track_is_down_even_though_the_policy_allows(manifest_file) -> None:
    m = load_manifest(manifest_file("stable"))
    nobody = f"http://127.0.0.1:{free_port()}"  # a port that was free a moment ago: nothing listens there
    collector = dashboard.StatusCollector(m, urls={"stable": nobody, "canary": nobody}, timeout=0.5,
                                          host_facts=lambda: dict(HEALTHY_HOST))  # fmt: skip
    collector.collect()
    snap = collector.collect()
    assert snap.tracks["stable"].state == "down" and snap.tracks["canary"].state == "absent"
    assert snap.decisions["infrastructure"].verdict == "allow"
    assert snap.exit_code() == 1


def test_engine_unavailable_is_shown_not_raised(demo_api, manifest_file) -> None:
    from swiftdeploy.errors import PolicyEngineUnavailable

    m = load_manifest(manifest_file("stable"))
    stable = demo_api("stable")

    def broken(*_args):
        raise PolicyEngineUnavailable("OPA at http://127.0.0.1:1 is unreachable")

    collector = dashboard.StatusCollector(m, urls={"stable": stable.url}, evaluate=broken)
    snap = collector.collect()
    assert snap.decisions["infrastructure"].verdict == dashboard.UNAVAILABLE
    assert "unreachable" in snap.decisions["infrastructure"].message
    assert snap.decisions["canary"].verdict == dashboard.NOT_APPLICABLE
    assert snap.exit_code() == 4
    assert "engine unavailable" in _render_text(snap)


def test_cli_json_through_the_admin_listener(demo_api, manifest_file, local_nginx, tmp_path: Path) -> None:
    manifest = manifest_file("canary")
    m = load_manifest(manifest)
    stable, canary = demo_api("stable"), demo_api("canary")
    server = local_nginx(m, stable.port, canary.port)
    assert httpx.post(f"{server.admin}/canary/chaos", json={"mode": "error", "rate": 0.5}).status_code == 200
    stop = threading.Event()

    def load() -> None:  # bounded background traffic while the CLI takes its two scrapes
        with httpx.Client(timeout=5.0) as client:
            for _ in range(400):
                if stop.is_set():
                    return
                client.get(f"{canary.url}/")
                time.sleep(0.002)

    worker = threading.Thread(target=load)
    worker.start()
    try:
        result = cli(manifest, "status", "--json", "--interval", "1", timeout=60)
    finally:
        stop.set()
        worker.join()
    assert result.returncode == 3, result.stderr
    data = json.loads(result.stdout)  # JSON only on stdout
    assert data["tracks"]["canary"]["chaos"]["mode"] == "error"
    decision = data["decisions"]["canary"]
    assert decision["verdict"] == "deny" and any(v["unit"] == "%" for v in decision["violations"])
    records = list(history.read(m.history_path))
    assert [r["event"] for r in records] == ["status"] and records[0]["decisions"]["canary"]["verdict"] == "deny"


def test_cli_once_in_stable_mode_exits_0_and_shows_no_canary(demo_api, manifest_file, local_nginx) -> None:
    manifest = manifest_file("stable")
    m = load_manifest(manifest)
    stable = demo_api("stable")
    local_nginx(m, stable.port)
    result = cli(manifest, "status", "--once", "--interval", "0.3", timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "ABSENT" in result.stdout and "not applicable" in result.stdout and "ALLOW" in result.stdout
    (rec,) = list(history.read(m.history_path))
    assert rec["tracks"]["canary"]["state"] == "absent" and rec["tracks"]["stable"]["state"] == "up"


def test_live_view_under_a_pty_exits_0_on_sigint(demo_api, manifest_file, local_nginx, live_status) -> None:
    manifest = manifest_file("stable")
    m = load_manifest(manifest)
    stable = demo_api("stable")
    local_nginx(m, stable.port)
    live = live_status(manifest, 0.5)
    live.wait_for(lambda: live.refreshes() >= 3, "3 refreshes")
    assert sum(1 for _ in history.read(m.history_path)) >= 2  # the baseline and the first one with rates
    rc = live.interrupt()
    text = live.text
    assert rc == 0, text
    assert "\x1b[" in text  # a real terminal view (ANSI), not the plain snapshot
    assert "stable" in text and "Ctrl-C to quit" in text and "Traceback" not in text


class _StartingApp:
    """An app that is starting: it serves its metrics (those of a real demo API, fetched once) but its health
    check answers 503 — the state the demo API never shows, so this one real HTTP server on 127.0.0.1 shows it."""

    def __init__(self, metrics: bytes) -> None:
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:  # noqa: N802 - the http.server API
                path = self.path.split("?")[0]
                if path == "/metrics":
                    status, body, kind = 200, metrics, "text/plain; version=0.0.4"
                elif path == "/chaos":
                    status, body, kind = 200, b'{"mode": "none"}', "application/json"
                else:
                    status, body, kind = 503, b'{"status": "starting"}', "application/json"
                self.send_response(status)
                self.send_header("Content-Type", kind)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, *_args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(timeout=5)


def test_cli_once_on_a_canary_stack_that_is_down_is_an_outage_not_a_policy_block(manifest_file) -> None:
    manifest = manifest_file("canary")  # canary mode, and nothing runs: no nginx on the admin port, no app
    m = load_manifest(manifest)
    result = cli(manifest, "status", "--once", "--interval", "0.2", timeout=60)
    out = result.stdout + result.stderr
    assert result.returncode == 1, out  # an outage (exit 1), not a policy block (3)
    assert out.count("DOWN") == 2 and "not evaluated" in out and "canary is down" in out
    assert "input_type" not in out and "must be an object" not in out  # the policy was not asked about it
    (rec,) = list(history.read(m.history_path))
    assert rec["mode"] == "canary" and rec["tracks"]["canary"]["state"] == rec["tracks"]["stable"]["state"] == "down"
    assert rec["decisions"]["canary"]["verdict"] == "not evaluated" and rec["decisions"]["canary"]["violations"] == []
    audit = cli(manifest, "audit", "--json", timeout=60)
    assert audit.returncode == 0 and json.loads(audit.stdout)["violations"] == 0  # none landed in the audit either
    assert "input_type" not in (m.out_dir / "audit_report.md").read_text()


def test_cli_once_reports_a_starting_canary_as_an_outage(demo_api, manifest_file, local_nginx) -> None:
    manifest = manifest_file("canary")
    m = load_manifest(manifest)
    stable, real = demo_api("stable"), demo_api("canary")
    starting = _StartingApp(httpx.get(f"{real.url}/metrics").content)
    try:
        local_nginx(m, stable.port, starting.port)
        result = cli(manifest, "status", "--once", "--interval", "0.2", timeout=60)
    finally:
        starting.close()
    assert result.returncode == 1, result.stdout + result.stderr
    assert "starting, HTTP 503" in result.stdout and "canary is starting" in result.stdout
    (rec,) = list(history.read(m.history_path))
    assert rec["tracks"]["canary"]["state"] == "starting" and rec["tracks"]["stable"]["state"] == "up"
    assert rec["decisions"]["canary"]["verdict"] == "not evaluated" and not rec["decisions"]["canary"]["violations"]


def _rewrite(manifest: Path, pattern: str, new: str) -> None:
    """Edit the manifest in place (same inode), the way an editor saving over it would."""
    text = manifest.read_text(encoding="utf-8")
    edited = re.sub(pattern, new, text, count=1)
    assert edited != text, pattern
    with open(manifest, "r+", encoding="utf-8") as handle:
        handle.write(edited)
        handle.truncate()


def test_live_dashboard_follows_the_manifest(demo_api, manifest_file, local_nginx, live_status) -> None:
    manifest = manifest_file("stable")
    m = load_manifest(manifest)
    stable = demo_api("stable")
    server = local_nginx(m, stable.port)
    live = live_status(manifest, 0.3)

    def recorded(check) -> bool:
        return any(check(r) for r in history.read(m.history_path))

    live.wait_for(lambda: recorded(lambda r: not r["baseline"]), "a first refresh with rates")
    assert all(r["mode"] == "stable" for r in history.read(m.history_path))

    # `promote canary` elsewhere: a canary starts, nginx routes to it, the manifest says mode: canary
    canary = demo_api("canary", "1.1.0")
    server.stop()
    _rewrite(manifest, r"mode: stable", "mode: canary")
    local_nginx(load_manifest(manifest), stable.port, canary.port)
    live.wait_for(
        lambda: recorded(lambda r: r["mode"] == "canary" and r["tracks"]["canary"]["state"] == "up"),
        "a status record in canary mode with the canary up",
    )
    live.wait_for(lambda: "mode canary" in live.text, "the view in canary mode")  # drawn after the record

    # a threshold edit takes effect at the next refresh: the infrastructure policy now denies
    _rewrite(manifest, r"min_disk_free_gb: [0-9.]+", "min_disk_free_gb: 1000000")
    live.wait_for(
        lambda: recorded(lambda r: r["decisions"]["infrastructure"]["verdict"] == "deny"), "a deny after the edit"
    )
    denied = [r for r in history.read(m.history_path) if r["decisions"]["infrastructure"]["verdict"] == "deny"]
    assert [v["threshold"] for v in denied[-1]["decisions"]["infrastructure"]["violations"]] == [1000000]

    # an invalid edit keeps the last valid manifest and says so; the dashboard keeps running
    manifest.write_text("services: {image: [not an image}\n", encoding="utf-8")
    live.wait_for(lambda: "showing its last valid version" in live.text, "the invalid-manifest note")
    assert live.interrupt() == 0
    last = list(history.read(m.history_path))[-1]
    assert last["mode"] == "canary" and last["manifest_error"]


def test_live_dashboard_records_changes_not_every_refresh(demo_api, manifest_file, local_nginx, live_status) -> None:
    manifest = manifest_file("stable", extra="history: {status_every: 1h}\n")
    m = load_manifest(manifest)
    stable = demo_api("stable")
    local_nginx(m, stable.port)
    live = live_status(manifest, 0.2)
    live.wait_for(lambda: sum(1 for _ in history.read(m.history_path)) >= 2, "the baseline and first records")
    start = live.refreshes()
    _traffic(stable.url, REQUESTS)  # steady traffic, nothing else changes
    seen = live.refreshes()
    live.wait_for(lambda: live.refreshes() >= max(start + 12, seen + 2), "a dozen refreshes after the traffic")
    refreshes = live.refreshes()
    assert live.interrupt() == 0
    records = list(history.read(m.history_path))
    # the baseline, the first refresh with rates, and the last one (recorded when the dashboard stopped)
    assert len(records) == 3 and refreshes >= 12, (len(records), refreshes)
    assert records[-1]["refreshes"] >= 10  # ... which covers every refresh since the previous record
    requests = [r["tracks"]["stable"]["interval"]["requests"] for r in records if r["tracks"]["stable"]["interval"]]
    assert sum(requests) == REQUESTS  # thinning lost no request: the last record's figures span all of them
    assert records[-1]["interval_seconds"] >= 10 * 0.2


def _render_text(snapshot: dashboard.Snapshot) -> str:
    from rich.console import Console

    from swiftdeploy.cli.output import render_snapshot

    console = Console(width=200, record=True, file=open(os.devnull, "w"))  # noqa: SIM115
    console.print(render_snapshot(snapshot))
    text = console.export_text()
    console.file.close()
    return text
