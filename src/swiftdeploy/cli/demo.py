"""`swiftdeploy demo`: the whole story on the local runtime, narrated (library: `ops/demo.py`). Exit 0 only if
every step behaved."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer


class RichNarrator:
    """The demo's `Narrator`: every step, progress line and outcome on the run's stdout console."""

    def __init__(self) -> None:
        from .output import out

        self.out = out()

    def step(self, number: int, title: str, explanation: str) -> None:
        self.out.print()
        self.out.rule(f"[bold]{number}. {title}[/bold]", align="left")
        self.out.print(f"[dim]{explanation}[/dim]")

    def progress(self, message: str) -> None:
        if getattr(message, "transient", False):  # the canary watch's ticker: its final line follows
            return
        from rich.markup import escape

        style = "yellow" if message.startswith("warning: ") else "dim"
        self.out.print(f"  [{style}]• {escape(message)}[/{style}]")

    def outcome(self, ok: bool, text: str) -> None:
        from rich.markup import escape

        mark = "[green]✓[/green]" if ok else "[red]✗[/red]"
        self.out.print(f"{mark} {escape(text)}")

    def blocked(self, decision: Any) -> None:
        from .output import print_decision

        self.out.print("[yellow]The policy refused the promotion:[/yellow]")
        print_decision(decision, self.out)

    def traffic(self, summary: dict[str, Any]) -> None:
        from .output import render_traffic

        render_traffic(summary)


def demo(
    keep: Annotated[
        Path | None,
        typer.Option("--keep", help="Run in this (new or empty) folder and keep it: manifest, history, audit report."),
    ] = None,
    window: Annotated[
        float, typer.Option("--window", min=1, max=600, help="Longest each promotion watches the canary (seconds).")
    ] = 60.0,
    port: Annotated[
        int | None,
        typer.Option(
            "--port",
            min=1024,
            max=65530,
            help="Base port: public listener PORT, admin PORT+1, the apps PORT+2 to PORT+5 (default: a free block).",
        ),
    ] = None,
) -> None:
    """Deploy, traffic, canary, chaos, blocked promote, recover, promote, audit, teardown: unattended, local."""
    import tempfile

    from ..errors import InvalidInput, OperationFailed
    from ..ops.demo import demo_ports, run_demo
    from .output import out as stdout

    if port is not None:
        demo_ports(port)  # a busy port is named before anything is printed or started
    narrator = RichNarrator()
    out = stdout()
    out.print(
        "[bold]swiftdeploy demo[/bold]: a stable API behind nginx, a canary, a fault, a policy that refuses to "
        "promote it, and the promotion once it is fixed. Local runtime (real nginx + uvicorn on 127.0.0.1)."
    )
    out.print(
        "[yellow]Note:[/yellow] the demo manifest relaxes the HOST thresholds (CPU load, disk, memory) so it "
        "passes on a busy laptop; the CANARY thresholds (error rate 1 %, P99 500 ms, 20 requests) are the defaults."
    )
    if keep is not None:
        keep.mkdir(parents=True, exist_ok=True)
        if any(keep.iterdir()):
            raise InvalidInput(f"{keep} is not empty", hint="pass a new or empty folder to --keep")
        run = run_demo(keep, narrator, window=window, base_port=port)
    else:
        with tempfile.TemporaryDirectory(prefix="swiftdeploy-demo-") as folder:
            run = run_demo(Path(folder), narrator, window=window, base_port=port)
    out.print()
    passed = sum(s.ok for s in run.steps)
    if keep is not None:
        out.print(f"kept {keep}: manifest.yaml, history.jsonl" + (", audit_report.md" if run.audit_report else ""))
    if not run.ok:
        failed = next(s for s in run.steps if not s.ok)
        raise OperationFailed(f"demo failed at step '{failed.title}' ({passed}/{len(run.steps)} steps ok)")
    out.print(f"[bold green]demo passed[/bold green]: all {passed} steps behaved as expected")
