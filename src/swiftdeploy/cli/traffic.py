"""`swiftdeploy traffic --rps N --duration S [--path /] [--json]`: bounded load on the manifest's own public port
(library: `ops.traffic`, in `ops/chaos.py`)."""

from __future__ import annotations

from typing import Annotated

import typer

from .common import JsonFlag


def traffic(
    ctx: typer.Context,
    rps: Annotated[float, typer.Option("--rps", help="Requests per second (at most 200).")] = 10.0,
    duration: Annotated[float, typer.Option("--duration", help="Seconds to send for (at most 300).")] = 10.0,
    path: Annotated[str, typer.Option("--path", help="Path to GET on http://127.0.0.1:<nginx.port>.")] = "/",
    json_out: JsonFlag = False,
) -> None:
    """Send GET requests to the public listener on 127.0.0.1 and summarise status codes and X-Mode."""
    from ..ops import traffic as run_traffic
    from .common import load
    from .output import err, json_answer, print_json, render_traffic, success_document

    with json_answer("traffic", json_out):
        m = load(ctx)
        with err().status(f"sending {rps:g} req/s for {duration:g}s to 127.0.0.1:{m.nginx.port}{path}"):
            result = run_traffic(m, rps, duration, path)
    if json_out:
        print_json(success_document("traffic", result.to_dict()))
        return
    render_traffic(result.to_dict())
