"""The command line. The ONLY place that prints for people or exits; everything else is library code.

Each command is a plain function in the module of its name (`cli/deploy.py` has `deploy`), registered here;
a command group is a module with its own `app` (`cli/policy.py`). Command modules import only Typer and the
stdlib at top level so `swiftdeploy --help` stays fast. The library side of each command is listed in
docs/architecture.md ("Commands").

`run` maps every SwiftDeployError to its exit code and one `error:` line on stderr (a traceback only with
SWIFTDEPLOY_DEBUG=1).
"""

from __future__ import annotations

import sys

from . import (
    audit,
    chaos,
    demo,
    deploy,
    init,
    new,
    plugins,
    policy,
    promote,
    rollback,
    schema,
    status,
    teardown,
    traffic,
    validate,
)
from .app import app, debug_enabled

app.command()(new.new)
app.command()(schema.schema)
app.command()(init.init)
app.command()(validate.validate)
app.command()(audit.audit)
app.command()(status.status)
app.command("plugins")(plugins.list_plugins)
app.command()(deploy.deploy)
app.command()(rollback.rollback)
app.command()(teardown.teardown)
app.command()(traffic.traffic)
app.command()(demo.demo)
app.add_typer(policy.app, name="policy")
app.add_typer(promote.app, name="promote")
app.add_typer(chaos.app, name="chaos")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (used by main and tests)."""
    import typer
    from typer._click.exceptions import ClickException  # typer >= 0.26 vendors click

    from ..errors import EXIT_INTERRUPTED, OperationFailed, SwiftDeployError
    from . import output

    output.reset()  # one pair of consoles per command run
    plugins.load_once(app)  # after the built-in commands registered, so a name clash is seen
    command = typer.main.get_command(app)
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
    except Exception as exc:  # a bug (ours or a plugin's): still one line, exit 1; the traceback on request
        if debug_enabled():
            raise
        output.error(
            f"unexpected {type(exc).__name__}: {exc} (this is a bug; rerun with SWIFTDEPLOY_DEBUG=1 for the traceback)"
        )
        return OperationFailed.exit_code
