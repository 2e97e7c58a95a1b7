"""`swiftdeploy traffic --rps N --duration S [--path /]`: bounded load on the manifest's own public port."""

from __future__ import annotations

import typer

from .app import app


@app.command()
def traffic(
    ctx: typer.Context,
    rps: float = typer.Option(10.0, "--rps", help="Requests per second (at most 200)."),
    duration: float = typer.Option(10.0, "--duration", help="Seconds to send for (at most 300)."),
    path: str = typer.Option("/", "--path", help="Path to GET on http://127.0.0.1:<nginx.port>."),
    json_out: bool = typer.Option(False, "--json", help="Print the summary as JSON on stdout."),
) -> None:
    """Send GET requests to the public listener on 127.0.0.1 and summarise status codes and X-Mode."""
    from ..ops import traffic as run_traffic
    from .common import err_console, load, print_json

    m = load(ctx)
    with err_console().status(f"sending {rps:g} req/s for {duration:g}s to 127.0.0.1:{m.nginx.port}{path}"):
        result = run_traffic(m, rps, duration, path)
    if json_out:
        print_json(result.to_dict())
        return
    render_traffic(result.to_dict())


def render_traffic(summary: dict) -> None:
    from .common import console

    out = console()
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["by_status"].items()) or "none"
    modes = ", ".join(f"{k}: {v}" for k, v in summary["by_mode"].items()) or "none"
    out.print(f"sent {summary['sent']} requests to {summary['url']} in {summary['seconds']:.1f}s")
    out.print(f"  by status: {statuses}")
    out.print(f"  by X-Mode: {modes}")
    if summary["errors"]:
        out.print("  [red]no answer:[/red] " + ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()))
    if summary["p50_ms"] is not None:
        out.print(f"  latency: p50 {summary['p50_ms']:.1f} ms, p99 {summary['p99_ms']:.1f} ms")
