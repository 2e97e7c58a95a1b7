"""`swiftdeploy history [--event E] [--since T] [-n N] [--json]`: the history as a table (library: `history.read`,
the audit timeline's `audit.describe_record`)."""

from __future__ import annotations

from typing import Annotated

import typer


def history(
    ctx: typer.Context,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            "-e",
            help="Only this event, or a family (deploy, promote, plugin.NAME); repeatable. `status` shows the "
            "status records, which are left out otherwise.",
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option("--since", help="Only records from this time: RFC 3339, a date, or a span back (30m, 2h, 7d)."),
    ] = None,
    last: Annotated[int, typer.Option("--last", "-n", min=1, max=100_000, help="Show the last N records.")] = 50,
    json_out: Annotated[bool, typer.Option("--json", help="Print the records as JSON on stdout.")] = False,
) -> None:
    """Lifecycle events and policy decisions of history.jsonl, oldest first: time, event, details. Status refreshes
    are left out unless `--event status` asks for them."""
    from collections import deque

    from .. import history as history_lib
    from .common import load
    from .output import print_json, render_history, warning

    m = load(ctx)
    patterns = _patterns(event or [])
    start = history_lib.parse_since(since) if since else None
    reader = history_lib.read(m.history_path, since=start)
    kept: deque[dict] = deque(maxlen=last)
    for record in reader:
        if _selected(str(record["event"]), patterns):
            kept.append(record)
    if json_out:
        print_json({"history": str(m.history_path), "records": list(kept), "skipped": reader.skipped})
        return
    if not m.history_path.exists():
        warning(f"no history yet at {m.history_path}")
    render_history(list(kept))
    if reader.skipped:
        warning(
            f"{reader.skipped} invalid line(s) in {m.history_path} skipped "
            "(torn, not JSON, longer than 1 MiB or out of range)"
        )


def _selected(event: str, patterns: list[str]) -> bool:
    if not patterns:
        return event != "status"
    return any(event == p or event.startswith(p + "_") or event.startswith(p + ".") for p in patterns)


def _patterns(values: list[str]) -> list[str]:
    """Each --event value: a registered event, a family its names start with (`promote`), or a plugin's namespace;
    InvalidInput (exit 2) with the closest names otherwise."""
    import difflib

    from ..errors import InvalidInput
    from ..history import EVENTS, PLUGIN_PREFIX

    families = sorted({e.split("_")[0] for e in EVENTS})
    for value in values:
        known = value in EVENTS or any(e.startswith(value + "_") for e in EVENTS)
        if not known and not value.startswith(PLUGIN_PREFIX) and value != PLUGIN_PREFIX.rstrip("."):
            close = difflib.get_close_matches(value, [*EVENTS, *families], n=3)
            suggestion = f"did you mean {', '.join(close)}? " if close else ""
            raise InvalidInput(
                f"--event {value!r} is not an event swiftdeploy records",
                hint=f"{suggestion}events: {', '.join(EVENTS)} (or a family: {', '.join(families)})",
            )
    return values
