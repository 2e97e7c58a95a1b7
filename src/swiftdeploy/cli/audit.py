"""`swiftdeploy audit`: render audit_report.md from the history, rotated files included (library:
`swiftdeploy.audit`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer


def audit(
    ctx: typer.Context,
    out: Annotated[
        Path | None,
        typer.Option("--out", "-o", help="Report path (default: audit_report.md in the manifest's output folder)."),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since", help="Only records from this time: RFC 3339, a date, or a span back from now (30m, 2h, 7d)."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print a JSON summary instead of a sentence.")] = False,
) -> None:
    """Render audit_report.md (GitHub Markdown) from history.jsonl and its rotated files (oldest first): summary,
    timeline, mode changes, chaos, policy violations, charts of P99 and error rate over time, and each promotion
    window's evidence."""
    from .. import audit as audit_lib
    from .. import history
    from . import output
    from .common import load

    m = load(ctx)
    start = history.parse_since(since) if since else None
    target = out if out is not None else m.out_dir / "audit_report.md"
    if not history.files(m.history_path):
        output.warning(f"no history yet at {m.history_path}; the report will be empty")
    path, report = audit_lib.write(m.history_path, target, since=start)
    if json_output:
        output.print_json(
            {
                "out": str(path),
                "history": str(m.history_path),
                "files": report.files,
                "records": report.records,
                "skipped": report.skipped,
                "filtered": report.filtered,
                "events": dict(report.events),
                "chaos_episodes": report.chaos_total,
                "violations": len(report.violations),
            }
        )
        return
    skipped = f", {report.skipped} unreadable lines skipped" if report.skipped else ""
    files = f" from {len(report.files)} files" if len(report.files) > 1 else ""
    output.out().print(f"wrote {path} ({report.records} records{files}{skipped})")
