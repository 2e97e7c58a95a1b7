"""The command line. The ONLY place that prints for people or exits; everything else is library code.

`main` maps every SwiftDeployError to its exit code and one red line on stderr (a traceback only with
SWIFTDEPLOY_DEBUG=1).
"""

from __future__ import annotations

import importlib
import sys

from .app import app, debug_enabled

# Command modules, imported for their side effect of registering on `app`. Each imports only typer + stdlib at
# top level so `swiftdeploy --help` stays fast.
COMMAND_MODULES = [
    "schema",
    "init",
    "validate",
    "audit",
    "status",
    "plugins",
    "policy",
    "deploy",
    "promote",
    "rollback",
    "teardown",
    "chaos",
    "traffic",
    "demo",
]

for _name in COMMAND_MODULES:
    importlib.import_module(f"{__name__}.{_name}")


def main(argv: list[str] | None = None) -> None:
    """Console-script entry point."""
    sys.exit(run(argv))


def run(argv: list[str] | None = None) -> int:
    """Run the CLI and return the exit code (used by main and tests)."""
    import typer
    from typer._click.exceptions import ClickException  # typer >= 0.26 vendors click

    from ..errors import SwiftDeployError
    from .plugins import load_once as load_plugins

    load_plugins()  # after the built-in modules registered, so a name clash is seen
    command = typer.main.get_command(app)
    try:
        result = command.main(args=argv, prog_name="swiftdeploy", standalone_mode=False)
        return result if isinstance(result, int) else 0
    except SwiftDeployError as exc:
        if debug_enabled():
            raise
        _error_line(str(exc))
        return exc.exit_code
    except typer.Exit as exc:
        return exc.exit_code
    except typer.Abort:
        sys.stderr.write("Aborted.\n")
        return 130
    except ClickException as exc:  # usage errors: exit 2
        exc.show()
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as exc:  # a bug (ours or a plugin's): still one line, exit 1; the traceback on request
        if debug_enabled():
            raise
        _error_line(
            f"unexpected {type(exc).__name__}: {exc} (this is a bug; rerun with SWIFTDEPLOY_DEBUG=1 for the traceback)"
        )
        return 1


def _error_line(message: str) -> None:
    if sys.stderr.isatty():
        sys.stderr.write(f"\x1b[31merror:\x1b[0m {message}\n")
    else:
        sys.stderr.write(f"error: {message}\n")
