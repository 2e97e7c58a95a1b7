"""Everything the CLI shows people, in one place: one stdout and one stderr Rich console per command run, the
`error:`/`warning:` lines, machine JSON, and the renderers (decisions, operation results, traffic, the status
dashboard). Numbers go through `swiftdeploy.format.format_number`, violations through `Violation.summary()`.

Rich loads on first use, never at import: `swiftdeploy --help` must stay as light as a bare Typer app.
Colour follows Rich's rules: only on a terminal, never with NO_COLOR set (https://no-color.org), always with
FORCE_COLOR. Off a terminal (a pipe, `make demo > log`, CI) and without COLUMNS nothing is wrapped: text keeps its
lines whole, and tables (`print_table`) take the width their cells need.

`--json` on a command that acts answers on stdout in every case (docs/contracts.md#cli): `success_document` when it
worked, `failure_document` (through `json_answer`) when it failed, was blocked or was interrupted, each with its
`exit_code`; stderr keeps the one `error:` line.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..format import format_number

if TYPE_CHECKING:
    from rich.console import Console, RenderableType
    from rich.table import Table

    from ..dashboard import Snapshot, TrackView
    from ..lock import LockStatus
    from ..manifest import Manifest
    from ..ops.base import OpResult
    from ..policy import Decision, Violation
    from ..runtime.base import LogLine, ServiceInfo

_consoles: dict[str, Console] = {}


def reset() -> None:
    """A new command run: the next `out()`/`err()` builds its console again (terminal, width, NO_COLOR read now)."""
    _consoles.clear()


def out() -> Console:
    """The run's stdout console (what the command answers)."""
    return _console("stdout")


def err() -> Console:
    """The run's stderr console (progress, warnings, errors): stdout stays clean for --json."""
    return _console("stderr")


# Off a terminal: the width tables and rules lay out in (text is never wrapped there, see _console).
PIPE_WIDTH = 120


def _console(stream: str) -> Console:
    console = _consoles.get(stream)
    if console is None:
        from rich.console import Console

        console = Console(stderr=stream == "stderr", highlight=False)
        if not console.is_terminal and "COLUMNS" not in os.environ:
            # Rich's 80-column default would cut every long sentence of a log in two: no wrapping at all.
            console = Console(stderr=stream == "stderr", highlight=False, soft_wrap=True, width=PIPE_WIDTH)
        _consoles[stream] = console
    return console


def print_table(table: Table, console: Console | None = None) -> None:
    """A table on a terminal fits it; off a terminal it takes the width its cells need, so no cell is folded."""
    target = console if console is not None else out()
    if target.is_terminal or "COLUMNS" in os.environ:
        target.print(table)
        return
    from rich.measure import Measurement

    natural = Measurement.get(target, target.options.update(width=10_000), table).maximum
    saved = target.width  # print(width=...) is capped at the console's width: widen the console for this table
    target.width = max(natural, saved)
    try:
        target.print(table)
    finally:
        target.width = saved


def print_json(data: Any) -> None:
    """Machine output: JSON only on stdout, never styled."""
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=False, default=str) + "\n")
    sys.stdout.flush()


def exit_code_of(exc: BaseException) -> int:
    """The exit code cli.run maps an exception to."""
    from ..errors import EXIT_INTERRUPTED, OperationFailed, OperationInterrupted, SwiftDeployError

    if isinstance(exc, SwiftDeployError | OperationInterrupted):
        return exc.exit_code
    if isinstance(exc, KeyboardInterrupt):
        return EXIT_INTERRUPTED
    return OperationFailed.exit_code


def success_document(operation: str, data: dict[str, Any]) -> dict[str, Any]:
    """A --json answer of a command that worked: its result, `ok: true`, `exit_code: 0`."""
    return {"operation": operation, **data, "ok": True, "exit_code": 0}


def failure_document(operation: str, exc: BaseException) -> dict[str, Any]:
    """A --json answer of a command that failed: what the operation got done (its partial result, when it ran),
    `ok: false`, the `exit_code`, the `error` and its `hint`, whether a policy `blocked` it (and the `decision` with
    every violation) or Ctrl-C `interrupted` it."""
    from ..errors import PolicyBlocked, SwiftDeployError, describe_os_error

    result = getattr(exc, "result", None)
    doc: dict[str, Any] = result.to_dict() if result is not None else {"operation": operation}
    if isinstance(exc, SwiftDeployError | KeyboardInterrupt):
        error = getattr(exc, "message", None) or str(exc) or "interrupted (Ctrl-C)"
    elif isinstance(exc, OSError):  # the environment, not a bug (cli.run prints the same line)
        error = describe_os_error(exc)
    else:
        error = f"unexpected {type(exc).__name__}: {exc} (this is a bug)"
    decision = exc.decision if isinstance(exc, PolicyBlocked) else None
    doc.update(
        ok=False,
        exit_code=exit_code_of(exc),
        error=error,
        hint=getattr(exc, "hint", None),
        blocked=isinstance(exc, PolicyBlocked),
        interrupted=isinstance(exc, KeyboardInterrupt),
        decision=decision.to_dict() if decision is not None else None,
    )
    return doc


@contextlib.contextmanager
def json_answer(operation: str, enabled: bool) -> Iterator[None]:
    """With `enabled` (--json), a failure of the block is also answered on stdout as `failure_document`, then
    re-raised: cli.run still prints the one error line on stderr and exits with the same code."""
    if not enabled:
        yield
        return
    try:
        yield
    except (Exception, KeyboardInterrupt) as exc:
        print_json(failure_document(operation, exc))
        raise


def error(message: str) -> None:
    """The one `error: ...` line on stderr (red on a terminal unless NO_COLOR)."""
    _label_line("error:", "red", message)


def warning(message: str) -> None:
    """A `warning: ...` line on stderr (yellow on a terminal unless NO_COLOR)."""
    _label_line("warning:", "yellow", message)


def interrupted(message: str) -> None:
    """The one `interrupted: ...` line of a Ctrl-C'd operation on stderr (what was stopped, what was left)."""
    _label_line("interrupted:", "yellow", message)


def _label_line(label: str, style: str, message: str) -> None:
    from rich.text import Text

    err().print(Text.assemble((label, style), " ", message), soft_wrap=True)  # Text: no markup, no wrapping


# --- decisions and violations ---

_VERDICT_COLOUR = {"allow": "green", "deny": "red"}


def reason(v: Violation) -> str | None:
    """The violation's message when `summary()` does not already carry it."""
    return None if v.message in v.summary() else v.message


def print_decision(decision: Decision, console: Console | None = None) -> None:
    """`<domain>: <verdict> (<engine> engine)`, then per violation `✗ rule: observed (confidence bound) vs
    threshold` and its message; an allow's basis (what it rests on) as `✓` lines. The one rendering of a decision:
    `policy eval/check` (stdout), a blocked gate (stderr), the demo."""
    from rich.markup import escape

    target = console if console is not None else out()
    colour = _VERDICT_COLOUR.get(decision.verdict, "yellow")
    engine = f"[dim]({decision.engine} engine)[/]"
    target.print(f"{decision.domain}: [bold {colour}]{decision.verdict}[/] {engine}", soft_wrap=True)
    for v in decision.violations:
        target.print(f"  [{colour}]✗[/] {escape(v.summary())}", soft_wrap=True)
        why = reason(v)
        if why:
            target.print(f"    [dim]{escape(why)}[/]", soft_wrap=True)
    if decision.allow:  # what the allow rests on (the canary gate's basis)
        for b in decision.basis:
            target.print(f"  [green]✓[/] {escape(b.summary())}", soft_wrap=True)
            why = reason(b)
            if why:
                target.print(f"    [dim]{escape(why)}[/]", soft_wrap=True)


def blocked_message(decision: Decision) -> str:
    """The `error:` line of a gate whose decision was just printed: the verdict, not every violation again."""
    n = len(decision.violations)
    shown = f"{n} violation{'s' if n != 1 else ''} shown above"
    return f"{decision.domain} policy answered {decision.verdict} ({decision.engine} engine): {shown}"


# --- lifecycle operations (deploy, promote, rollback, teardown) ---


def operate(operation: Callable[..., OpResult], path: Path, *, title: str, json_out: bool = False, **options) -> None:
    """Run a lifecycle operation (`ops.deploy`, `promote_*`, `rollback`, `teardown`) on the manifest at `path` with
    a spinner on stderr (stdout stays clean for --json), every step and warning printed; then print its result
    (`json_out`: as JSON). A blocked gate prints its decision once and re-raises with a short message (cli.run
    maps it to exit 3); with `json_out` any failure, block or interruption is also a JSON answer on stdout."""
    from rich.markup import escape

    from ..errors import OperationInterrupted, PolicyBlocked

    console = err()
    with console.status(title, spinner="dots") as status:

        def progress(message: str) -> None:
            if getattr(message, "transient", False):  # a ticker (the canary watch): the spinner line only
                status.update(f"{title}: {escape(message)}")
                return
            if message.startswith("warning: "):
                console.print(f"[yellow]{escape(message)}[/yellow]", soft_wrap=True)
            else:
                console.print(f"  [dim]•[/dim] {escape(message)}", soft_wrap=True)
                status.update(f"{title}: {escape(message)}")

        try:
            with json_answer(operation.__name__, json_out):
                result = operation(path, progress=progress, **options)
        except PolicyBlocked as exc:
            if exc.decision is None:
                raise
            print_decision(exc.decision, console)
            raise PolicyBlocked(blocked_message(exc.decision), decision=exc.decision, hint=exc.hint) from exc
        except OperationInterrupted as exc:
            # Said here: Typer turns any KeyboardInterrupt into a bare exit 130 before cli.run sees it.
            interrupted(exc.message)
            raise
    if json_out:
        print_json(success_document(result.operation, result.to_dict()))
    else:
        render_result(result)


def render_result(result: OpResult) -> None:
    """The human summary of an OpResult on stdout."""
    console = out()
    console.print(f"[green]✓[/green] {result.message} [dim]({result.seconds:.1f}s)[/dim]")
    for line in result.details:
        console.print(f"  {line}")
    for name, state in result.services.items():
        mark = "[green]healthy[/green]" if state.get("healthy") else "[red]unhealthy[/red]"
        where = f" 127.0.0.1:{state['port']}" if state.get("port") else ""
        pid = f" pid {state['pid']}" if state.get("pid") else ""
        console.print(f"  {name}: {mark}{where}{pid}")


def render_traffic(summary: dict[str, Any]) -> None:
    """`swiftdeploy traffic`'s summary (also narrated by the demo)."""
    console = out()
    statuses = ", ".join(f"{k}: {v}" for k, v in summary["by_status"].items()) or "none"
    modes = ", ".join(f"{k}: {v}" for k, v in summary["by_mode"].items()) or "none"
    console.print(f"sent {summary['sent']} requests to {summary['url']} in {summary['seconds']:.1f}s")
    console.print(f"  by status: {statuses}")
    console.print(f"  by X-Mode: {modes}")
    if summary["errors"]:
        console.print("  [red]no answer:[/red] " + ", ".join(f"{k}: {v}" for k, v in summary["errors"].items()))
    if summary["p50_ms"] is not None:
        p50, p99 = format_number(summary["p50_ms"], "ms"), format_number(summary["p99_ms"], "ms")
        console.print(f"  latency: p50 {p50}, p99 {p99}")


# --- ps, logs, history, lock ---

_HEALTH_STYLE = {"healthy": "green", "unhealthy": "bold red", "starting": "yellow"}


def render_services(m: Manifest, services: list[ServiceInfo]) -> None:
    """`swiftdeploy ps`: one row per service; why a service is not healthy under the table."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from ..runtime import admin_address, runtime_spec

    replicas = runtime_spec(m).replicas

    console = out()
    console.print(
        f"[bold]{escape(m.project_name)}[/bold] · {m.runtime} runtime · mode {m.services.mode} · "
        f"public http://127.0.0.1:{m.nginx.port} · admin {escape(admin_address(m))}"
    )
    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    for column in ("SERVICE", "ROLE", "STATE", "HEALTH", "PID/CONTAINER", "PORTS", "VERSION", "UPTIME"):
        table.add_column(column, no_wrap=True)
    notes = []
    for s in services:
        state = f"[{'green' if s.state == 'running' else 'dim' if s.state == 'absent' else 'bold red'}]{s.state}[/]"
        health = f"[{_HEALTH_STYLE.get(s.health, 'dim')}]{escape(s.health if s.health != '-' else '–')}[/]"
        where = str(s.pid) if s.pid else escape(s.container or "–")
        ports = ", ".join(str(p) for p in s.ports) or "–"
        uptime = _uptime(s.uptime_seconds) if s.uptime_seconds is not None else "–"
        table.add_row(escape(s.service), s.role, state, health, where, ports, escape(s.version or "–"), uptime)
        # Replicas (swarm): where each service's tasks run is worth a line even when all is well.
        if (
            s.state != "absent"
            and s.detail
            and ((replicas and s.pid is None) or s.health not in ("healthy", "no healthcheck"))
        ):
            notes.append(f"  [dim]{escape(s.service)}: {escape(s.detail)}[/dim]")
    print_table(table, console)
    for note in notes:
        console.print(note, soft_wrap=True)


def log_line(line: LogLine) -> None:
    """One log line on stdout, as written (no markup, no wrapping): `source | text` when a view mixes files."""
    sys.stdout.write((f"{line.source} | {line.text}" if line.source else line.text) + "\n")
    sys.stdout.flush()


_EVENT_STYLE = {"_failed": "bold red", "_blocked": "red", "_interrupted": "yellow", "_succeeded": "green"}


def render_history(records: list[dict[str, Any]]) -> None:
    """`swiftdeploy history`: time (UTC), event and the audit timeline's one-line details per record."""
    from rich import box
    from rich.markup import escape
    from rich.table import Table

    from ..audit import describe_record

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False, show_edge=False)
    table.add_column("TIME (UTC)", no_wrap=True)
    table.add_column("EVENT", no_wrap=True)
    table.add_column("DETAILS", overflow="fold")
    for record in records:
        event = str(record["event"])
        style = next((v for k, v in _EVENT_STYLE.items() if event.endswith(k)), "")
        shown = f"[{style}]{escape(event)}[/]" if style else escape(event)
        when = str(record["ts"])[:19].replace("T", " ")
        table.add_row(when, shown, escape(describe_record(record)))
    print_table(table)


def render_lock(status: LockStatus, *, released: bool = False, forced: bool = False) -> None:
    """`swiftdeploy lock status` (the lock's state, holder, since when) and `lock release` (what it did)."""
    from rich.markup import escape

    console = out()
    if not released:
        colour = {"free": "green", "held": "yellow", "stale": "red"}[status.state]
        console.print(f"[{colour}]{status.state}[/]: {escape(status.describe())}", soft_wrap=True)
        if status.state == "stale":
            console.print("  `swiftdeploy lock release` clears it (the next operation would take it over anyway)")
        return
    if status.state == "free":
        console.print(f"the lock is free ({escape(str(status.path))}): nothing to release")
    elif forced and status.holder_alive is not False:
        console.print(f"[yellow]broke the lock[/] {escape(status.describe())}", soft_wrap=True)
    else:
        console.print(f"[green]released[/] the lock ({escape(status.describe())})", soft_wrap=True)


# --- the status dashboard ---

SPARK = "▁▂▃▄▅▆▇█"
_VERDICT_STYLE = {"allow": "bold green", "deny": "bold red", "inconclusive": "bold yellow"}


def sparkline(values: list[float]) -> str:
    """▁▂▃▅▇ scaled to the largest value (all blocks at the bottom when every value is 0)."""
    if not values:
        return ""
    top = max(values)
    if top <= 0:
        return SPARK[0] * len(values)
    return "".join(SPARK[min(len(SPARK) - 1, int(v / top * (len(SPARK) - 1) + 0.5))] for v in values)


def _cell(value: Any) -> str:
    return "–" if value is None else format_number(value)


def render_snapshot(snapshot: Snapshot) -> RenderableType:
    """The dashboard of one `dashboard.Snapshot`: per track one line over the last interval and one over the
    policy window, with trends; then both policy verdicts with every violation."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    from ..dashboard import BASELINE, NOT_APPLICABLE, NOT_EVALUATED
    from ..policy.decision import InvalidDecision, Violation, parse_violation

    s = snapshot
    head = Text.assemble(
        ("swiftdeploy status ", "bold"),
        (s.project, "cyan"),
        f" · mode {s.mode} · engine {', '.join(s.engines) or '–'} · {s.ts}",
    )
    if s.baseline:
        head.append(" · collecting baseline…", style="yellow")

    table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
    for column in ("Track", "State", "Chaos", "Over", "Req", "req/s", "Err %", "P50 ms", "P99 ms", "Trend"):
        numeric = column in ("Req", "req/s", "Err %", "P50 ms", "P99 ms")
        table.add_column(column, justify="right" if numeric else "left", no_wrap=column in ("Trend", "State"))
    notes: list[Text] = []
    for view in s.tracks.values():
        for row in _track_rows(view, s, notes):
            table.add_row(*row)

    policy = Table.grid(padding=(0, 1))
    policy.add_column()
    policy.add_column()
    for d in s.decisions.values():
        pending = (BASELINE, NOT_APPLICABLE, NOT_EVALUATED)
        style = _VERDICT_STYLE.get(d.verdict, "yellow" if d.verdict in pending else "bold red")
        label = Text(d.verdict.upper() if d.verdict in _VERDICT_STYLE else d.verdict, style=style)
        where = f" ({d.engine})" if d.engine else ""
        policy.add_row(Text(f"{d.domain}{where}", style="bold"), label)
        if d.message:
            policy.add_row("", Text(d.message, style="dim"))
        for raw in d.violations:
            try:  # the gate's own violation: its confidence bound shown as the gate shows it
                v = parse_violation(raw)
            except InvalidDecision:
                v = Violation(rule=str(raw.get("rule")), message=str(raw.get("message") or ""))
            why = reason(v)
            policy.add_row("", Text(f"• {v.summary()}" + (f" — {why}" if why else ""), style="red"))
    if s.manifest_error:
        notes.append(Text(f"manifest: {s.manifest_error}", style="bold yellow"))
    return Group(head, table, *notes, Text("Policy", style="bold underline"), policy)


def _track_rows(view: TrackView, s: Snapshot, notes: list[Any]) -> list[list[Any]]:
    """Two table rows per answering track (last interval, policy window); one for a down/absent track."""
    from rich.text import Text

    name = f"{view.track} {view.version or ''}".strip()
    if view.state in ("down", "absent"):
        style = "dim" if view.state == "absent" else "bold red"
        why = "not running" if view.state == "absent" else (view.error or "no answer")
        notes.append(Text(f"{view.track}: {why}", style=style))
        return [[name, Text(view.state.upper(), style=style), "", "", "", "", "", "", "", ""]]
    healthy = view.health == "ok"
    state = Text(f"up {_uptime(view.uptime_seconds)}" if healthy else f"{view.state}, {view.health}", style="green")
    if not healthy:
        state.stylize("yellow")
    if view.mode and view.mode != view.track:
        state.append(f" ({view.mode})", style="yellow")  # a track answering as the other mode is worth seeing
    if view.replicas is not None:  # a runtime with replicas (swarm): the figures are the sum over them
        state.append(f", {view.replicas} replica{'s' if view.replicas != 1 else ''}")
        if view.replicas_lost:
            notes.append(Text(f"{view.track}: replica {', '.join(view.replicas_lost)} gone: new window"))
        if view.tasks_degraded:
            state.append(", degraded", style="yellow")
            notes.append(Text(f"{view.track}: {view.tasks_degraded}", style="yellow"))
    chaos = view.chaos or {}
    mode = chaos.get("mode", "?")
    shown = mode
    if mode == "slow":
        shown = f"slow {_cell(chaos.get('duration'))}s"
    elif mode == "error":
        shown = f"error {format_number((chaos.get('rate') or 0) * 100, '%')}"
    chaos_text = Text(shown, style="green" if mode == "none" else "bold red")

    def figures(label: str, f: dict[str, Any] | None, pending: str) -> list[Any]:
        if f is None:
            return [label, Text(pending, style="yellow"), "", "", "", ""]
        return [label, str(f["requests"]), _cell(f["rps"]), _cell(f["error_rate_percent"]), _cell(f["p50_ms"]),
                _cell(f["p99_ms"])]  # fmt: skip

    last = f"last {_cell(view.interval['seconds'])}s" if view.interval else "last"
    window = f"window {_cell(view.window['seconds'])}s" if view.window else f"window {_cell(s.window_seconds)}s"
    pending = "baseline…" if s.baseline else "…"
    trend_rps = f"req/s {sparkline(view.trend_rps[-20:])}"
    trend_p99 = f"P99 {sparkline(view.trend_p99[-20:])}"
    return [
        [name, state, chaos_text, *figures(last, view.interval, pending), trend_rps],
        ["", "", "", *figures(window, view.window, pending), trend_p99],
    ]


def _uptime(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


# --- rollout: the live view, plain progress lines, JSON lines ---


def print_json_line(data: Any) -> None:
    """One compact JSON object on one line of stdout (a stream a CI log can follow: `rollout --json`)."""
    sys.stdout.write(json.dumps(data, separators=(",", ":"), default=str) + "\n")
    sys.stdout.flush()


class RolloutView:
    """What the rollout's live view shows, kept up to date from the records the rollout streams (`update`) and the
    watch's looks (`look`)."""

    def __init__(self, title: str) -> None:
        import time

        self.title = title
        self.clock = time.monotonic
        self.started = self.clock()
        self.steps: list[int] = []
        self.step = 0  # 1-based; 0 before the first step
        self.weight: int | None = None
        self.max_step_seconds: float | None = None
        self.step_started: float | None = None
        self.look: Any = None  # judge.Look of the current step
        self.verdicts: dict[int, str] = {}  # step -> verdict
        self.last = ""  # the last step message

    def update(self, record: dict[str, Any]) -> None:
        event = record.get("event")
        if event == "rollout_started":
            self.steps = list(record.get("steps") or [])
            self.max_step_seconds = record.get("max_step_seconds")
        elif event == "rollout_step":
            self.step, self.weight = int(record["step"]), record.get("weight")
            self.step_started, self.look = self.clock(), None
        elif event == "rollout_verdict":
            self.verdicts[int(record["step"])] = str(record.get("verdict"))

    def line(self) -> str:
        """The plain progress line of the current look (off a terminal)."""
        from ..judge import progress_line

        head = f"step {self.step} of {len(self.steps)} ({self.weight}%)"
        if self.look is None:
            return head
        return f"{head}: {progress_line(self.look, self.max_step_seconds or 0)}"


def render_rollout(view: RolloutView) -> RenderableType:
    """The live view: step k of n with the weights and their verdicts, elapsed and time left in the step, each
    track's requests, error rate and P99 in the step so far, and the evidence line of the watch."""
    from rich import box
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    now = view.clock()
    head = Text.assemble((view.title, "bold"), f" · elapsed {format_number(round(now - view.started))} s")
    ladder = Text("steps ")
    for i, weight in enumerate(view.steps, start=1):
        verdict = view.verdicts.get(i)
        style = _VERDICT_STYLE.get(verdict or "", "bold cyan" if i == view.step else "dim")
        mark = {"allow": " ✓", "deny": " ✗", "inconclusive": " ?"}.get(verdict or "", " …" if i == view.step else "")
        ladder.append(f"{weight}%{mark}", style=style)
        if i < len(view.steps):
            ladder.append(" → ", style="dim")
    parts: list[Any] = [head, ladder]
    if view.step:
        spent = now - (view.step_started or now)
        left = max(0.0, (view.max_step_seconds or 0) - spent)
        parts.append(
            Text(
                f"step {view.step} of {len(view.steps)} · {view.weight}% to the canary · "
                f"{format_number(round(spent))} s in the step, at most {format_number(round(left))} s left"
            )
        )
    look = view.look
    if look is not None:
        table = Table(box=box.SIMPLE_HEAD, header_style="bold", pad_edge=False)
        for column in ("Track", "Req", "Errors", "Err %", "P99 ms"):
            table.add_column(column, justify="left" if column == "Track" else "right")
        for track in ("canary", "stable"):
            f = look.facts.get(track)
            if isinstance(f, dict):
                table.add_row(track, str(f.get("requests")), str(f.get("errors")), _cell(f.get("error_rate_percent")),
                              _cell(f.get("p99_ms")))  # fmt: skip
        from ..judge import progress_line

        parts += [table, Text(progress_line(look, view.max_step_seconds or 0), style="dim")]
    elif view.last:
        parts.append(Text(view.last, style="dim"))
    return Group(*parts)


def run_rollout(operation: Callable[..., OpResult], path: Path, *, json_out: bool = False, **options) -> None:
    """Run `ops.rollout` with its progress: a Rich live view on a terminal (stderr), plain lines off one (the watch's
    line at most every PLAIN_TICK seconds); with `json_out` every record it streams as one JSON line on stdout, then
    the result (or failure) document as one line. A blocked step prints its decision (every violation with its
    evidence) like `promote stable` does; Ctrl-C says what it stopped."""
    import time

    from rich.markup import escape

    from ..errors import OperationInterrupted, PolicyBlocked, RolloutPaused

    console = err()
    view = RolloutView("rollout")
    live = None
    last_plain = [0.0]

    def on_update(record: dict[str, Any]) -> None:
        view.update(record)
        if json_out:
            print_json_line(record)
        if record.get("event") == "rollout_started":
            view.title = f"rollout {record.get('version')} ({record.get('image')})"
        if live is not None:
            live.update(render_rollout(view))

    def progress(message: str) -> None:
        look = getattr(message, "look", None)
        if look is not None:
            view.look = look
        if getattr(message, "transient", False):
            if live is not None:
                live.update(render_rollout(view))
            elif time.monotonic() - last_plain[0] >= PLAIN_TICK:
                last_plain[0] = time.monotonic()
                console.print(f"  [dim]·[/dim] {escape(view.line())}", soft_wrap=True)
            return
        view.last = message
        if message.startswith("warning: "):
            console.print(f"[yellow]{escape(message)}[/yellow]", soft_wrap=True)
        else:
            console.print(f"  [dim]•[/dim] {escape(message)}", soft_wrap=True)
        if live is not None:
            live.update(render_rollout(view))

    def failed(exc: BaseException) -> None:
        if json_out:
            print_json_line(failure_document("rollout", exc))

    try:
        if console.is_terminal:
            from rich.live import Live

            with Live(render_rollout(view), console=console, refresh_per_second=4, transient=False) as live:
                result = operation(path, progress=progress, on_update=on_update, **options)
        else:
            result = operation(path, progress=progress, on_update=on_update, **options)
    except PolicyBlocked as exc:
        failed(exc)
        if exc.decision is None:
            raise
        print_decision(exc.decision, console)
        message = exc.message if isinstance(exc, RolloutPaused) else blocked_message(exc.decision)
        raise type(exc)(message, decision=exc.decision, hint=exc.hint) from exc
    except OperationInterrupted as exc:
        failed(exc)
        interrupted(exc.message)
        raise
    except (Exception, KeyboardInterrupt) as exc:
        failed(exc)
        raise
    if json_out:
        print_json_line(success_document(result.operation, result.to_dict()))
    else:
        render_result(result)


PLAIN_TICK = 5.0  # seconds between two watch lines off a terminal
