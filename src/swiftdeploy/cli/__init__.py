"""The command line. The ONLY place that prints for people or exits; everything else is library code.

Each command is a plain function in the module of its name (`cli/deploy.py` has `deploy`), registered here;
a command group is a module with its own `app` (`cli/policy.py`). Command modules import only Typer and the
stdlib at top level so `swiftdeploy --help` stays fast. The library side of each command is listed in
docs/architecture.md ("Commands").

`run` maps every SwiftDeployError to its exit code and one `error:` line on stderr (a traceback only with
SWIFTDEPLOY_DEBUG=1); Ctrl-C is 130 (a lifecycle operation says what it stopped first: `output.operate`).

`build_command` is the Click command tree of `run` and of docs/cli.md: the Typer app plus `-m/--manifest` on every
command and group, so the option works after the command too (`swiftdeploy deploy -m x.yaml`). The option is
defined once, on the root callback (cli/app.py); the others are built from that definition.
"""

from __future__ import annotations

import sys
from typing import Any

from . import (
    audit,
    chaos,
    demo,
    deploy,
    history,
    init,
    lock,
    logs,
    new,
    plugins,
    policy,
    promote,
    ps,
    rollback,
    rollout,
    schema,
    status,
    teardown,
    traffic,
    undo,
    validate,
)
from .app import app, debug_enabled

app.command()(new.new)
app.command()(schema.schema)
app.command()(init.init)
app.command()(validate.validate)
app.command()(audit.audit)
app.command()(status.status)
app.command()(ps.ps)
app.command()(logs.logs)
app.command()(history.history)
app.command("plugins")(plugins.list_plugins)
app.command()(deploy.deploy)
app.command()(rollback.rollback)
app.command()(rollout.rollout)
app.command()(rollout.abort)
app.command()(undo.undo)
app.command()(teardown.teardown)
app.command()(traffic.traffic)
app.command()(demo.demo)
app.add_typer(policy.app, name="policy")
app.add_typer(promote.app, name="promote")
app.add_typer(chaos.app, name="chaos")
app.add_typer(lock.app, name="lock")


def build_command() -> Any:
    """The Click command of the app (as registered now, plugins included once loaded), with the root's
    `-m/--manifest` accepted by every command and group as well. A later `-m` wins over an earlier one."""
    import typer.main

    root = typer.main.get_command(app)
    (option,) = [p for p in root.params if p.name == "manifest"]

    def remember(ctx: Any, _param: Any, value: Any) -> None:
        if value is not None:
            top = ctx.find_root()
            top.obj = {**(top.obj or {}), "manifest": value}

    def visit(command: Any) -> None:
        for sub in getattr(command, "commands", {}).values():
            taken = {flag for p in sub.params for flag in (*p.opts, *p.secondary_opts)}
            if not taken & {*option.opts, *option.secondary_opts}:  # a plugin's own -m keeps its meaning
                sub.params.append(_after_the_command(option, remember))
            visit(sub)

    visit(root)
    return root


def _after_the_command(option: Any, callback: Any) -> Any:
    """The root's option (same flags, type and help) as a command's: it stores a value given there in the root
    context instead of passing a parameter, has no default (absent: the root's value stands) and no envvar (the
    root reads it)."""
    import copy

    copied = copy.copy(option)
    copied.expose_value = False
    copied.callback = callback
    copied.default = None
    copied.envvar = None
    copied.show_default = False
    copied.required = False
    copied.is_eager = False
    return copied


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (used by main and tests)."""
    import typer
    from typer._click.exceptions import ClickException  # typer >= 0.26 vendors click

    from ..errors import EXIT_INTERRUPTED, OperationFailed, SwiftDeployError, describe_os_error
    from . import output

    output.reset()  # one pair of consoles per command run
    plugins.load_once(app)  # after the built-in commands registered, so a name clash is seen
    command = build_command()
    try:
        result = command.main(args=argv, prog_name="swiftdeploy", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except SwiftDeployError as exc:
        if debug_enabled():
            raise
        output.error(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        return EXIT_INTERRUPTED
    except ClickException as exc:  # usage errors: exit 2
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        return OperationFailed.exit_code
    except OSError as exc:  # the environment (full disk, name too long, a file in a folder's place): not a bug
        if debug_enabled():
            raise
        output.error(describe_os_error(exc))
        return OperationFailed.exit_code
    except Exception as exc:  # a bug (ours or a plugin's): still one line, exit 1; the traceback on request
        if debug_enabled():
            raise
        output.error(
            f"unexpected {type(exc).__name__}: {exc} (this is a bug; rerun with SWIFTDEPLOY_DEBUG=1 for the traceback)"
        )
        return OperationFailed.exit_code
