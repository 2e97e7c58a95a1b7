"""`swiftdeploy policy test | eval | check`: run the Rego unit tests, evaluate one decision, check this host
(library: `swiftdeploy.policy`: `testing.py`, `evaluate`, `facts.py`).

Policy commands work without a manifest too (default policies and thresholds, embedded engine) unless
--manifest/SWIFTDEPLOY_MANIFEST names one explicitly.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..policy import Decision

app = typer.Typer(
    help="Rego policies: run their unit tests, evaluate a decision, check this host.",
    no_args_is_help=True,
)


@app.command("test")
def test_command(
    ctx: typer.Context,
    folder: Annotated[
        Path | None,
        typer.Option(
            "--dir", help="Test this policies folder (default: policy.dir of the manifest, else the bundled ones)."
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json", help="Print JSON only.")] = False,
) -> None:
    """Run every test_* rule with the embedded engine; one line per test. Exit 1 on any failure."""
    from ..errors import OperationFailed
    from ..policy.bundle import load_policy_set
    from ..policy.testing import run_tests

    policy_set = load_policy_set(folder=folder.resolve()) if folder else load_policy_set(_manifest_or_none(ctx))
    results = run_tests(policy_set)
    if not results:
        raise OperationFailed(f"no test_* rules in {policy_set.origin}", hint="add *_test.rego files with test_ rules")
    failed = [r for r in results if not r.passed]
    if json_output:
        from .output import print_json

        print_json(
            {
                "origin": policy_set.origin,
                "passed": len(results) - len(failed),
                "failed": len(failed),
                "tests": [r.to_dict() for r in results],
            }
        )
    else:
        from rich.markup import escape

        from .output import out as stdout

        out = stdout()
        for r in results:
            mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            detail = f" [red]{escape(r.detail)}[/]" if r.detail else ""
            out.print(f"{mark} {escape(r.qualified)} [dim]({r.seconds * 1000:.1f} ms)[/]{detail}", soft_wrap=True)
        colour = "red" if failed else "green"
        summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
        out.print(f"[{colour}]{summary}[/] [dim]({escape(policy_set.origin)})", soft_wrap=True)
    if failed:
        raise typer.Exit(OperationFailed.exit_code)


@app.command("eval")
def eval_command(
    ctx: typer.Context,
    domain: Annotated[str, typer.Argument(help="infrastructure or canary.")],
    input_file: Annotated[Path, typer.Option("--input", "-i", help="JSON file with the policy input ('-' for stdin).")],
    json_output: Annotated[bool, typer.Option("--json", help="Print the decision as JSON only.")] = False,
) -> None:
    """Evaluate one decision. Exit 3 when the verdict is deny or inconclusive."""
    from ..policy import check_domain, evaluate

    check_domain(domain)
    data = _read_input(input_file)
    decision = evaluate(_manifest_or_none(ctx), domain, data)
    _show(decision, json_output)


@app.command("check")
def check_command(
    ctx: typer.Context,
    json_output: Annotated[
        bool, typer.Option("--json", help="Print the decision (with the facts) as JSON only.")
    ] = False,
) -> None:
    """Gather this host's facts now and evaluate the infrastructure domain. Exit 3 when denied."""
    from ..policy import evaluate
    from ..policy.facts import host_facts

    m = _manifest_or_none(ctx)
    facts = host_facts(m.base_dir if m is not None else Path.cwd())
    decision = evaluate(m, "infrastructure", facts)
    if not json_output:
        from rich.markup import escape

        from ..format import format_number
        from .output import out

        shown = ", ".join(f"{k}={format_number(v)}" for k, v in facts.items() if k != "unavailable")
        out().print(f"[dim]facts: {escape(shown)}[/]", soft_wrap=True)
        if facts.get("unavailable"):
            out().print(f"[yellow]unavailable facts: {escape(', '.join(facts['unavailable']))}[/]", soft_wrap=True)
    _show(decision, json_output)


def _show(decision: Decision, json_output: bool) -> None:
    from ..errors import PolicyBlocked
    from .output import print_decision, print_json

    if json_output:
        print_json(decision.to_dict())
    else:
        print_decision(decision)
    if not decision.allow:
        raise typer.Exit(PolicyBlocked.exit_code)


def _manifest_or_none(ctx: typer.Context) -> Manifest | None:
    """The manifest when there is one; None (defaults) when the default ./manifest.yaml simply does not exist."""
    from .common import load, manifest_path

    root = ctx.find_root()
    source = root.get_parameter_source("manifest")
    explicit = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
    if not explicit and not manifest_path(ctx).exists():
        return None
    return load(ctx)


MAX_INPUT = 1 << 20  # a policy input is a few kB of facts or figures


def _read_input(path: Path) -> Any:
    """The JSON of `--input` (a regular file, or "-" for stdin), at most MAX_INPUT bytes, parsed with
    swiftdeploy.safejson (bounded nesting, finite numbers). Bad input is PolicyError (exit 2), one line."""
    import sys

    from .. import safejson
    from ..errors import PolicyError
    from ..fsutil import Refused, read_bounded

    name = "stdin" if str(path) == "-" else str(path)
    try:
        raw = sys.stdin.buffer.read(MAX_INPUT + 1) if str(path) == "-" else read_bounded(path, MAX_INPUT, what="input")
    except Refused as exc:  # not a regular file, or over MAX_INPUT
        raise PolicyError(f"cannot read {name}: {exc.problem}", hint="pass --input FILE with JSON") from None
    except OSError as exc:
        raise PolicyError(
            f"cannot read the input file {name}: {exc.strerror or exc}", hint="pass --input FILE with JSON"
        ) from None
    if len(raw) > MAX_INPUT:
        raise PolicyError(f"the input {name} is more than {MAX_INPUT} bytes", hint="a policy input is a few kB")
    try:
        return safejson.loads(raw)
    except UnicodeDecodeError as exc:
        raise PolicyError(f"{name}: not UTF-8 text: {exc.reason} at byte {exc.start}") from None
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from None
    except ValueError as exc:
        raise PolicyError(f"{name}: invalid JSON: {exc}") from None
