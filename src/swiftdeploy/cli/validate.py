"""`swiftdeploy validate [--json]`: pre-flight checks as a table (people) or a JSON list (machines) (library:
`checks.py`)."""

from __future__ import annotations

from typing import Annotated

import typer


def validate(
    ctx: typer.Context,
    as_json: Annotated[bool, typer.Option("--json", help="Print a JSON list of {check, ok, detail, fix}.")] = False,
) -> None:
    """Pre-flight checks: manifest, images or app command, ports, nginx -t, files, policies. Exit 1 on a failure."""
    from ..checks import run_checks
    from ..errors import ManifestError, OperationFailed
    from .common import manifest_path
    from .output import out, print_json

    report = run_checks(manifest_path(ctx))
    if as_json:
        print_json([row.to_dict() for row in report.rows])
    else:
        _table(out(), report.rows)
    if report.manifest_error is not None:
        err = report.manifest_error
        # The table's manifest row already shows every problem; the JSON list carries them too, for machines.
        problems = err.problems if as_json else []
        raise ManifestError(err.message if as_json else f"{err.message}: shown above", problems=problems, hint=err.hint)
    failed = [row.check for row in report.rows if not row.ok]
    if failed:
        noun = "check" if len(failed) == 1 else "checks"
        raise OperationFailed(f"{len(failed)} {noun} failed: {', '.join(failed)}", hint="see the fix column")


def _table(out, rows) -> None:  # noqa: ANN001 - rich types stay out of the module's top-level imports
    from rich.markup import escape
    from rich.table import Table

    from .output import print_table

    table = Table(title="swiftdeploy validate", show_lines=False, expand=False)
    table.add_column("", no_wrap=True)
    table.add_column("check", no_wrap=True)
    table.add_column("detail", overflow="fold")
    table.add_column("fix", overflow="fold")
    for row in rows:
        mark = "[green]ok[/green]" if row.ok else "[red]FAIL[/red]"
        table.add_row(mark, escape(row.check), escape(row.detail), escape(row.fix))
    print_table(table, out)
