"""`swiftdeploy deploy [--timeout S] [--json]` and the rendering shared by the lifecycle commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import typer

from .app import app


def run_operation(call: Callable[[Callable[[str], None]], Any], *, title: str, json_out: bool = False) -> Any:
    """Run an operation with a spinner on stderr (stdout stays clean for --json); print each step, warnings in
    yellow, and every violation of a blocked decision before re-raising (cli.run maps errors to exit codes)."""
    from ..errors import PolicyBlocked, SwiftDeployError
    from .common import err_console, print_json

    err = err_console()
    with err.status(title, spinner="dots") as status:

        def progress(message: str) -> None:
            if getattr(message, "transient", False):  # a ticker (the canary watch): the spinner line only
                status.update(f"{title}: {message}")
                return
            if message.startswith("warning: "):
                err.print(f"[yellow]{message}[/yellow]")
            else:
                err.print(f"  [dim]•[/dim] {message}")
                status.update(f"{title}: {message}")

        try:
            return call(progress)
        except PolicyBlocked as exc:
            print_violations(exc.decision)
            if json_out:
                decision = exc.decision.to_dict() if exc.decision is not None else None
                print_json({"ok": False, "blocked": True, "error": str(exc), "decision": decision})
            raise
        except SwiftDeployError as exc:
            if json_out:
                print_json({"ok": False, "blocked": False, "error": str(exc)})
            raise


def print_violations(decision: Any, out: Any = None) -> None:
    """A table of every violation (rule, observed vs threshold, message), on stderr unless `out` is given."""
    from rich.table import Table

    from .common import err_console

    if decision is None:
        return
    table = Table(title=f"{decision.domain} policy: {decision.verdict.upper()} ({decision.engine} engine)")
    for column in ("rule", "observed vs threshold", "why"):
        table.add_column(column)
    for v in decision.violations:
        table.add_row(v.rule, v.figures(), v.message)  # figures: observed (confidence bound) vs threshold
    (out or err_console()).print(table)


def render_result(result: Any) -> None:
    """The human summary of an OpResult on stdout."""
    from .common import console

    out = console()
    out.print(f"[green]✓[/green] {result.message} [dim]({result.seconds:.1f}s)[/dim]")
    for line in result.details:
        out.print(f"  {line}")
    for name, state in result.services.items():
        mark = "[green]healthy[/green]" if state.get("healthy") else "[red]unhealthy[/red]"
        where = f" 127.0.0.1:{state['port']}" if state.get("port") else ""
        pid = f" pid {state['pid']}" if state.get("pid") else ""
        out.print(f"  {name}: {mark}{where}{pid}")


@app.command()
def deploy(
    ctx: typer.Context,
    timeout: float = typer.Option(60.0, "--timeout", min=1, max=3600, help="Seconds to wait until healthy."),
    json_out: bool = typer.Option(False, "--json", help="Print the result as JSON on stdout."),
) -> None:
    """Write generated files, pass the infrastructure gate, start the stack and wait until healthy."""
    from ..ops import deploy as run_deploy
    from .common import manifest_path, print_json

    path = manifest_path(ctx)
    result = run_operation(
        lambda progress: run_deploy(path, timeout=timeout, progress=progress), title="deploying", json_out=json_out
    )
    if json_out:
        print_json(result.to_dict())
    else:
        render_result(result)
