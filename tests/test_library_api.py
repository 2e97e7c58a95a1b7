"""The library API: `import swiftdeploy` stays light, and every public name resolves to a documented object.

Each check runs in a fresh interpreter: this test process has long since imported Typer, Rich and friends.
"""

from __future__ import annotations

import json
import subprocess
import sys

import swiftdeploy

# Never loaded by `import swiftdeploy` (docs/contracts.md#library: library first, fast start).
HEAVY = [
    "typer",
    "click",
    "rich",
    "fastapi",
    "starlette",
    "uvicorn",
    "docker",
    "httpx",
    "prometheus_client",
    "regorus",
    "psutil",
    "pydantic",
    "ruamel",
]
# Still not loaded after every lazy name resolved: library modules import these inside the functions that need
# them (the CLI is the only place for Typer/Rich; engines, runtimes and scrapers load their client on use).
NEVER_AT_LIBRARY_TOP_LEVEL = ["typer", "click", "rich", "fastapi", "uvicorn", "docker", "httpx", "regorus"]


def fresh(code: str) -> dict:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def loaded(names: list[str]) -> str:
    return f"[n for n in {names!r} if any(m == n or m.startswith(n + '.') for m in sys.modules)]"


def test_import_is_light() -> None:
    result = fresh(f"import json, sys; import swiftdeploy; print(json.dumps({loaded(HEAVY)}))")
    assert result == []


def test_every_public_name_resolves_without_cli_dependencies() -> None:
    code = (
        "import json, sys, swiftdeploy\n"
        "missing = []\n"
        "for name in swiftdeploy.__all__:\n"
        "    try:\n"
        "        getattr(swiftdeploy, name)\n"
        "    except Exception as exc:\n"
        "        missing.append(f'{name}: {type(exc).__name__}: {exc}')\n"
        f"print(json.dumps({{'missing': missing, 'heavy': {loaded(NEVER_AT_LIBRARY_TOP_LEVEL)}}}))"
    )
    result = fresh(code)
    assert result["missing"] == []
    assert result["heavy"] == []


def test_surface_is_consistent_and_documented() -> None:
    lazy = set(swiftdeploy._LAZY)
    public = set(swiftdeploy.__all__)
    assert lazy <= public, "every lazy name must be listed in __all__"
    assert len(swiftdeploy.__all__) == len(public), "duplicates in __all__"
    assert public <= set(dir(swiftdeploy))
    names = sorted(public - {"__version__"})
    assert [n for n in names if not callable(getattr(swiftdeploy, n))] == []
    undocumented = [n for n in names if not (getattr(swiftdeploy, n).__doc__ or "").strip()]
    assert undocumented == [], "public names without a docstring"
    assert swiftdeploy.__doc__ and "load_manifest" in swiftdeploy.__doc__


def test_errors_carry_exit_codes() -> None:
    assert issubclass(swiftdeploy.ManifestError, swiftdeploy.SwiftDeployError)
    assert swiftdeploy.ManifestError.exit_code == 2
    assert swiftdeploy.PolicyBlocked.exit_code == 3
    assert swiftdeploy.PolicyEngineUnavailable.exit_code == 4


def test_unknown_name_is_an_attribute_error() -> None:
    try:
        swiftdeploy.no_such_thing  # noqa: B018
    except AttributeError as exc:
        assert "no_such_thing" in str(exc)
    else:
        raise AssertionError("expected AttributeError")


def test_typed_marker_ships() -> None:
    from importlib.resources import files

    assert files("swiftdeploy").joinpath("py.typed").is_file()


def test_library_use_without_the_cli(tmp_path) -> None:
    # A script's path through the API: load, render, read history; no CLI involved.
    manifest = tmp_path / "manifest.yaml"
    manifest.write_text("services: {image: 'demo:1', port: 3000}\n")
    m = swiftdeploy.load_manifest(manifest)
    assert m.services.image == "demo:1"
    files = swiftdeploy.render_all(m, swiftdeploy.load_policy_set(m))
    assert {"docker-compose.yml", "nginx.conf"} <= set(files)
    assert files["nginx.conf"] == swiftdeploy.render_nginx(m)
    swiftdeploy.append_history(m.history_path, "init")
    assert [r["event"] for r in swiftdeploy.read_history(m.history_path)] == ["init"]
