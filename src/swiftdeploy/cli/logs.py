"""`swiftdeploy logs [SERVICE] [-f] [-n N]`: the app's, nginx's or OPA's log on either runtime (library:
`Runtime.logs`: the local runtime's log files, `docker compose logs`)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Annotated

import typer

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..runtime import Runtime


def logs(
    ctx: typer.Context,
    service: Annotated[
        str | None,
        typer.Argument(help="A service `ps` lists (app, app-canary, nginx, opa, ...) or stable / canary; all if none."),
    ] = None,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new lines until Ctrl-C.")] = False,
    tail: Annotated[
        int, typer.Option("--tail", "-n", min=0, max=100_000, help="Lines to show from the end of each log first.")
    ] = 100,
) -> None:
    """Print the last lines of a service's log (local: the files under .swiftdeploy/logs, nginx's error and access
    logs included; docker: `docker compose logs`). With --follow, new lines as they come; Ctrl-C ends it (exit 0)."""
    import contextlib

    from ..runtime import get_runtime
    from .common import load
    from .output import log_line, warning

    m = load(ctx)
    runtime = get_runtime(m)
    names = [] if service is None else [_resolve(m, runtime, service)]
    shown = 0
    try:
        with contextlib.closing(runtime.logs(m, names, tail=tail, follow=follow)) as lines:
            for line in lines:
                log_line(line)
                shown += 1
    except KeyboardInterrupt:
        return  # how a person leaves --follow: a clean exit 0
    if not shown and tail:
        what = f"{names[0]} has" if names else "no service has"
        warning(f"{what} logged nothing yet (is the stack deployed? `swiftdeploy ps` shows what runs)")


def _resolve(m: Manifest, runtime: Runtime, name: str) -> str:
    """A service name, or a track's name for its app; InvalidInput (exit 2) naming the choices otherwise."""
    from ..errors import InvalidInput
    from ..runtime.base import ROLES

    tracks = {"stable": m.services.name, "canary": m.canary_name}
    if name in tracks:
        return tracks[name]
    known = list(dict.fromkeys([m.services.name, m.canary_name, *ROLES, *(s.service for s in runtime.services(m))]))
    if name not in known:
        raise InvalidInput(
            f"no service {name!r} in this stack", hint=f"name one of {', '.join(known)}, or stable / canary"
        )
    return name
