"""`swiftdeploy policy test | eval | check`: run the Rego unit tests, evaluate one decision, check this host.

Policy commands work without a manifest too (default policies and thresholds, embedded engine) unless
--manifest/SWIFTDEPLOY_MANIFEST names one explicitly.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from .app import app

if TYPE_CHECKING:
    from ..manifest import Manifest
    from ..policy import Decision

policy_app = typer.Typer(
    help="Rego policies: run their unit tests, evaluate a decision, check this host.",
    no_args_is_help=True,
)
app.add_typer(policy_app, name="policy")

EXIT_BLOCKED = 3


@policy_app.command("test")
def test_command(
    ctx: typer.Context,
    folder: Path | None = typer.Option(
        None, "--dir", help="Test this policies folder (default: policy.dir of the manifest, else the bundled ones)."
    ),
    json_output: bool = typer.Option(False, "--json", help="Print JSON only."),
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
        from .common import print_json

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

        from .common import console

        out = console()
        for r in results:
            mark = "[green]PASS[/]" if r.passed else "[red]FAIL[/]"
            detail = f" [red]{escape(r.detail)}[/]" if r.detail else ""
            out.print(f"{mark} {escape(r.qualified)} [dim]({r.seconds * 1000:.1f} ms)[/]{detail}", soft_wrap=True)
        colour = "red" if failed else "green"
        summary = f"{len(results) - len(failed)} passed, {len(failed)} failed"
        out.print(f"[{colour}]{summary}[/] [dim]({escape(policy_set.origin)})", soft_wrap=True)
    if failed:
        raise typer.Exit(1)


@policy_app.command("eval")
def eval_command(
    ctx: typer.Context,
    domain: str = typer.Argument(..., help="infrastructure or canary."),
    input_file: Path = typer.Option(..., "--input", "-i", help="JSON file with the policy input ('-' for stdin)."),
    json_output: bool = typer.Option(False, "--json", help="Print the decision as JSON only."),
) -> None:
    """Evaluate one decision. Exit 3 when the verdict is deny or inconclusive."""
    from ..policy import check_domain, evaluate

    check_domain(domain)
    data = _read_input(input_file)
    decision = evaluate(_manifest_or_none(ctx), domain, data)
    _show(decision, json_output)


@policy_app.command("check")
def check_command(
    ctx: typer.Context,
    json_output: bool = typer.Option(False, "--json", help="Print the decision (with the facts) as JSON only."),
) -> None:
    """Gather this host's facts now and evaluate the infrastructure domain. Exit 3 when denied."""
    from ..policy import evaluate
    from ..policy.facts import host_facts

    m = _manifest_or_none(ctx)
    facts = host_facts(m.base_dir if m is not None else Path.cwd())
    decision = evaluate(m, "infrastructure", facts)
    if not json_output:
        from rich.markup import escape

        from .common import console

        shown = ", ".join(f"{k}={v}" for k, v in facts.items() if k != "unavailable")
        console().print(f"[dim]facts: {escape(shown)}[/]", soft_wrap=True)
        if facts.get("unavailable"):
            console().print(f"[yellow]unavailable facts: {', '.join(facts['unavailable'])}[/]", soft_wrap=True)
    _show(decision, json_output)


def _show(decision: Decision, json_output: bool) -> None:
    if json_output:
        from .common import print_json

        print_json(decision.to_dict())
    else:
        from rich.markup import escape

        from .common import console

        out = console()
        colour = {"allow": "green", "deny": "red"}.get(decision.verdict, "yellow")
        engine = f"[dim]({decision.engine} engine)[/]"
        out.print(f"{decision.domain}: [bold {colour}]{decision.verdict}[/] {engine}", soft_wrap=True)
        for v in decision.violations:
            out.print(f"  [{colour}]✗[/] {escape(v.summary())}", soft_wrap=True)
            out.print(f"    [dim]{escape(v.message)}[/]", soft_wrap=True)
        if decision.allow:  # what the allow rests on
            for b in decision.basis:
                out.print(f"  [green]✓[/] {escape(b.summary())}", soft_wrap=True)
                out.print(f"    [dim]{escape(b.message)}[/]", soft_wrap=True)
    if not decision.allow:
        raise typer.Exit(EXIT_BLOCKED)


def _manifest_or_none(ctx: typer.Context) -> Manifest | None:
    """The manifest when there is one; None (defaults) when the default ./manifest.yaml simply does not exist."""
    from .common import load, manifest_path

    root = ctx.find_root()
    source = root.get_parameter_source("manifest")
    explicit = source is not None and source.name not in ("DEFAULT", "DEFAULT_MAP")
    if not explicit and not manifest_path(ctx).exists():
        return None
    return load(ctx)


def _read_input(path: Path) -> Any:
    import json
    import sys

    from ..errors import PolicyError

    name = "stdin" if str(path) == "-" else str(path)
    try:
        text = sys.stdin.read() if str(path) == "-" else path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise PolicyError(f"cannot read the input file {name}: {exc}", hint="pass --input FILE with JSON") from exc

    def no_constants(token: str) -> Any:
        raise ValueError(f"{token} is not JSON")

    try:
        return json.loads(text, parse_constant=no_constants)
    except json.JSONDecodeError as exc:
        raise PolicyError(f"{name}:{exc.lineno}:{exc.colno}: invalid JSON: {exc.msg}") from exc
    except ValueError as exc:
        raise PolicyError(f"{name}: invalid JSON: {exc}") from exc
