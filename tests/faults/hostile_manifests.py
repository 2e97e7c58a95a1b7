"""The hostile-manifest corpus (issue 14 items 1, 2, 7) and the runner that puts each case through the real CLI.

Each `Case` builds a project folder (and, beside it, an `outside/` folder holding a sentinel file that links from
the project may point at), names the command to run (`swiftdeploy -m MANIFEST <command>`), and says what the run
must answer: the exit code and a fragment of its one `error:` line. `run_case` runs it in a subprocess with a wall
budget and an address-space limit (RLIMIT_AS) and measures its time and peak memory (ru_maxrss from wait4).

Used by tests/faults/test_faults_manifest.py (every case, asserted) and benchmarks/hostile_manifests.py (the count,
the slowest case's time and the peak memory).
"""

from __future__ import annotations

import os
import resource
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

SWIFTDEPLOY = str(Path(sys.executable).with_name("swiftdeploy"))
BASE = "services: {image: demo:1, port: 3000}\nruntime: local\npolicy: {engine: embedded}\n"
MEMORY_LIMIT = 1024**3  # RLIMIT_AS of each run: Python, ruamel, pydantic and the Rego engine fit well inside it
WALL_BUDGET = float(os.environ.get("SWIFTDEPLOY_FAULTS_BUDGET", "60"))  # a hang guard, not a timing assertion
THRESHOLD_FIELDS = (
    "min_disk_free_gb",
    "max_cpu_load_per_core",
    "max_cpu_load",
    "max_memory_used_percent",
    "max_error_rate_percent",
    "bad_error_rate_percent",
    "max_p99_latency_ms",
    "max_slow_percent",
    "bad_slow_percent",
    "min_requests",
    "deny_confidence_percent",
    "ratio_confidence_percent",
    "allow_confidence_percent",
    "max_error_rate_ratio",
    "max_p99_ratio",
    "min_p99_ms_for_ratio",
    "max_error_rate_increase_percent",
)
# (YAML value, a fragment of the problem it gets): none of them is a usable threshold.
BAD_NUMBERS = (
    ("true", "not true"),
    ('"4"', 'not the string "4"'),
    (".inf", "finite number"),
    ("-.inf", "finite number"),
    (".nan", "finite number"),
    ("1e400", "finite number"),
    ("1e12", "less than or equal to"),
)


@dataclass(frozen=True)
class Case:
    id: str
    setup: Callable[[Path, Path], Path | str]  # (project, outside) -> the -m argument
    says: str  # a fragment the error line must hold
    command: tuple[str, ...] = ("init",)
    exit_code: int = 2
    fsize: int | None = None  # RLIMIT_FSIZE of the run (SIGXFSZ ignored: a write past it fails with EFBIG)


@dataclass
class Outcome:
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    maxrss_kib: int
    timed_out: bool


def manifest(project: Path, text: str, name: str = "manifest.yaml") -> Path:
    path = project / name
    path.write_text(text, encoding="utf-8")
    return path


def _raw(data: bytes) -> Callable[[Path, Path], Path]:
    def setup(project: Path, _outside: Path) -> Path:
        path = project / "manifest.yaml"
        path.write_bytes(data)
        return path

    return setup


def _text(text: str) -> Callable[[Path, Path], Path]:
    return lambda project, _outside: manifest(project, text)


def alias_bomb(levels: int = 9) -> str:
    """The billion-laughs manifest: each level a list of nine aliases of the one before (a few hundred bytes)."""
    lines = ['a0: &a0 ["lol"]']
    for level in range(1, levels + 1):
        refs = ", ".join([f"*a{level - 1}"] * 9)
        lines.append(f"a{level}: &a{level} [{refs}]")
    return BASE + "\n".join(lines) + "\n"


def _fifo(project: Path, _outside: Path) -> Path:
    path = project / "manifest.yaml"
    os.mkfifo(path)
    return path


def _link(name: str, target: str, text: str = BASE) -> Callable[[Path, Path], Path]:
    """The project's `name` a symbolic link to outside/<target> (which exists when it is a folder)."""

    def setup(project: Path, outside: Path) -> Path:
        (project / name).parent.mkdir(parents=True, exist_ok=True)
        (project / name).symlink_to(outside / target)
        return manifest(project, text)

    return setup


def _policy_dir(build: Callable[[Path], None]) -> Callable[[Path, Path], Path]:
    def setup(project: Path, _outside: Path) -> Path:
        folder = project / "pol"
        folder.mkdir()
        (folder / "deploy.rego").write_text("package swiftdeploy.infrastructure\n", encoding="utf-8")
        build(folder)
        return manifest(project, BASE.replace("{engine: embedded}", "{engine: embedded, dir: pol}"))

    return setup


def _many_files(folder: Path) -> None:
    for index in range(1100):
        (folder / f"r{index}.txt").touch()


def _deep(folder: Path) -> None:
    deep = folder
    for index in range(12):
        deep = deep / f"d{index}"
    deep.mkdir(parents=True)


def _loop(folder: Path) -> None:
    (folder / "loop").symlink_to("..")


def _fifo_rego(folder: Path) -> None:
    os.mkfifo(folder / "zz.rego")


def _nan_data(folder: Path) -> None:
    (folder / "data.json").write_text('{"swiftdeploy": {"thresholds": {"min_requests": NaN}}}\n', encoding="utf-8")


def _output_dir_is_a_file(project: Path, _outside: Path) -> Path:
    (project / "out").write_text("not a folder\n", encoding="utf-8")
    return manifest(project, BASE + "output_dir: out\n")


def _state_is_a_file(project: Path, _outside: Path) -> Path:
    (project / ".swiftdeploy").write_text("not a folder\n", encoding="utf-8")
    return manifest(project, BASE)


def _lock_is_a_folder(project: Path, _outside: Path) -> Path:
    (project / ".swiftdeploy" / "lock").mkdir(parents=True)
    return manifest(project, BASE)


def _lock_is_a_link(project: Path, outside: Path) -> Path:
    (project / ".swiftdeploy").mkdir()
    (project / ".swiftdeploy" / "lock").symlink_to(outside / "sentinel.txt")
    return manifest(project, BASE)


def _state_log_link(project: Path, outside: Path) -> Path:
    (project / ".swiftdeploy" / "logs").mkdir(parents=True)
    (project / ".swiftdeploy" / "logs" / "app.log").symlink_to(outside / "sentinel.txt")
    return manifest(project, BASE)


def _threshold(field: str, value: str) -> Callable[[Path, Path], Path]:
    return _text(BASE.replace("{engine: embedded}", f"{{engine: embedded, thresholds: {{{field}: {value}}}}}"))


def _cases() -> list[Case]:
    big_list = "[" + ", ".join(["x"] * 100) + "]"
    cases = [
        # --- YAML features that expand or construct before validation -----------------------------------------
        Case("alias-bomb-9-levels", _text(alias_bomb(9)), "YAML anchor &a0 is not allowed"),
        Case("alias-bomb-validate", _text(alias_bomb(9)), "YAML anchor &a0 is not allowed", ("validate",)),
        Case("alias-bomb-dry-run", _text(alias_bomb(12)), "YAML anchor", ("init", "--dry-run")),
        Case("anchor-and-alias", _text(BASE + "nginx: &n {port: 8090}\nx: *n\n"), "YAML anchor &n"),
        Case("alias-only-undefined", _text(BASE + "x: *nowhere\n"), "YAML"),
        Case(
            "merge-key",
            _text("base: &b {image: demo:1}\nservices:\n  <<: *b\n  port: 3000\nruntime: local\n"),
            "YAML anchor &b",
        ),
        Case("tag-binary", _text(BASE + "x: !!binary aGVsbG8=\n"), "YAML tag tag:yaml.org,2002:binary"),
        Case("tag-set", _text(BASE + "x: !!set {a, b}\n"), "YAML tag tag:yaml.org,2002:set"),
        Case("tag-custom", _text(BASE + "x: !evil 3\n"), "YAML tag !evil"),
        Case("tag-python-object", _text(BASE + "x: !!python/object:os.system {}\n"), "YAML tag"),
        Case("tag-on-a-known-field", _text(BASE.replace("port: 3000", "port: !!int 3000")), "YAML tag"),
        Case("tag-directive", _text("%TAG !e! tag:evil.example,2000:\n---\n" + BASE + "x: !e!run 1\n"), "YAML tag"),
        Case("tag-non-specific", _text(BASE + "x: ! 1\n"), "YAML tag !"),
        # --- size and shape ------------------------------------------------------------------------------------
        Case("size-10-mib", _raw(BASE.encode() + b"# padding\n" * 1_000_000), "more than the limit of 65536"),
        Case("size-just-over", _raw(BASE.encode() + b"#" * 65536 + b"\n"), "more than the limit of 65536"),
        Case(
            "unknown-keys-100000",
            _text(BASE + "".join(f"k{i}: 1\n" for i in range(100_000))),
            "more than the limit",
        ),
        Case("unknown-keys-2000", _text(BASE + "".join(f"k{i}: 1\n" for i in range(2000))), "2000 problems"),
        Case("nodes-10000", _text(BASE + "x: [" + ",".join(["1"] * 10_000) + "]\n"), "more than 5000 YAML nodes"),
        Case("deep-flow-nesting", _text(BASE + "x: " + "[" * 5000 + "]" * 5000 + "\n"), "more than 32 deep"),
        Case(
            "deep-block-nesting",
            _text(BASE + "".join("  " * i + f"k{i}:\n" for i in range(60)) + "  " * 60 + "v: 1\n"),
            "more than 32 deep",
        ),
        Case("fifo", _fifo, "not a regular file"),
        Case("dev-zero", lambda _p, _o: "/dev/zero", "not a regular file"),
        Case("dev-urandom", lambda _p, _o: "/dev/urandom", "not a regular file"),
        Case("folder", lambda project, _o: project, "is a folder"),
        Case("nul-byte", _raw(BASE.encode() + b"x: a\x00b\n"), "special characters are not allowed"),
        Case("invalid-utf8", _raw(BASE.encode() + b"x: \xff\xfe\n"), "not UTF-8"),
        Case("lone-surrogate", _text(BASE + 'project: "a\\ud800b"\n'), "project"),
        Case("two-documents", _text(BASE + "---\n" + BASE), "YAML"),
        Case("empty", _text(""), "manifest is empty"),
        Case("top-level-list", _text("- services\n"), "must be a mapping"),
        Case("non-string-key", _text(BASE + "? [a, b]\n: 1\n"), "invalid manifest"),
        # --- strings and lists ---------------------------------------------------------------------------------
        Case("huge-image", _text(BASE.replace("demo:1", "a" * 60_000)), "at most 255 characters"),
        Case("huge-name", _text(BASE.replace("port: 3000", "port: 3000, name: " + "a" * 60_000)), "at most 63"),
        Case("huge-version", _text(BASE.replace("port: 3000", "port: 3000, version: " + "v" * 60_000)), "at most 64"),
        Case("huge-output-dir", _text(BASE + "output_dir: " + "d" * 60_000 + "\n"), "at most 1024 characters"),
        Case("huge-policy-dir", _text(BASE.replace("embedded}", "embedded, dir: " + "p" * 60_000 + "}")), "1024"),
        Case("huge-argv-word", _text(BASE.replace("port: 3000", "port: 3000, command: [" + "w" * 5000 + "]")), "1024"),
        Case("long-argv", _text(BASE.replace("port: 3000", f"port: 3000, command: {big_list}")), "at most 64 items"),
        Case("huge-contact", _text(BASE + "nginx: {contact: " + "a" * 600 + "@example.com}\n"), "at most 254"),
        # --- paths: nothing outside the project, nothing followed ----------------------------------------------
        Case("output-dir-dotdot", _text(BASE + "output_dir: ../..\n"), "output_dir must be a folder inside"),
        Case("output-dir-absolute", _text(BASE + "output_dir: /tmp\n"), "output_dir must be a folder inside"),
        Case("output-dir-link-out", _link("out", "", BASE + "output_dir: out\n"), "outside the manifest's folder"),
        Case(
            "output-dir-link-out-dry-run",
            _link("out", "", BASE + "output_dir: out\n"),
            "outside the manifest's folder",
            ("init", "--dry-run"),
        ),
        Case(
            "output-dir-link-out-validate",
            _link("out", "", BASE + "output_dir: out\n"),
            "outside the manifest's folder",
            ("validate",),
        ),
        Case(
            "output-dir-nested-link-out",
            _link("a/b", "", BASE + "output_dir: a/b/c\n"),
            "outside the manifest's folder",
        ),
        Case("output-dir-is-a-file", _output_dir_is_a_file, "names a file"),
        Case("policy-dir-proc-self", _text(BASE.replace("embedded}", "embedded, dir: /proc/self}")), "outside"),
        Case("policy-dir-absolute", _text(BASE.replace("embedded}", "embedded, dir: /etc}")), "outside"),
        Case("policy-dir-dotdot", _text(BASE.replace("embedded}", "embedded, dir: ../outside}")), "outside"),
        Case("policy-dir-link-out", _link("pol", "", BASE.replace("embedded}", "embedded, dir: pol}")), "outside"),
        Case("policy-dir-1100-files", _policy_dir(_many_files), "more than 1000 files"),
        Case("policy-dir-12-deep", _policy_dir(_deep), "nested more than 8 deep"),
        Case("policy-dir-link-loop", _policy_dir(_loop), "symbolic link in the policies folder"),
        Case("policy-dir-fifo-rego", _policy_dir(_fifo_rego), "not a regular file"),
        Case("policy-dir-nan-data", _policy_dir(_nan_data), "NaN is not a JSON number"),
        Case("state-dir-link", _link(".swiftdeploy", ""), "state folder is a symbolic link", exit_code=1),
        Case(
            "state-dir-link-teardown",
            _link(".swiftdeploy", ""),
            "state folder is a symbolic link",
            ("teardown",),
            exit_code=1,
        ),
        Case("state-dir-is-a-file", _state_is_a_file, "state folder is a file", exit_code=1),
        Case(
            "state-log-link-teardown",
            _state_log_link,
            "a symbolic link in the state folder",
            ("teardown",),
            exit_code=1,
        ),
        Case("bundle-link", _link("policy-bundle", ""), "policy bundle folder is a symbolic link", exit_code=1),
        Case(
            "bundle-link-dry-run",
            _link("policy-bundle", ""),
            "policy bundle folder is a symbolic link",
            ("init", "--dry-run"),
            exit_code=1,
        ),
        Case("bundle-file-link", _link("policy-bundle/data.json", "sentinel.txt"), "symbolic link", exit_code=1),
        Case("history-link", _link("history.jsonl", "sentinel.txt"), "history file is a symbolic link", exit_code=1),
        Case("nginx-conf-link", _link("nginx.conf", "sentinel.txt"), "generated file is a symbolic link", exit_code=1),
        Case(
            "compose-link-dry-run",
            _link("docker-compose.yml", "sentinel.txt"),
            "generated file is a symbolic link",
            ("init", "--dry-run"),
            exit_code=1,
        ),
        # --- the environment -----------------------------------------------------------------------------------
        Case("lock-is-a-folder", _lock_is_a_folder, "lock file", ("teardown",), exit_code=1),
        Case("lock-is-a-link", _lock_is_a_link, "lock file", ("teardown",), exit_code=1),
        Case(
            "name-too-long",
            _text(BASE + "output_dir: " + "n" * 300 + "\n"),
            "File name too long",
            exit_code=1,
        ),
        Case("file-too-large", _text(BASE), "File too large", exit_code=1, fsize=1024),
    ]
    for field, (value, says) in zip(THRESHOLD_FIELDS, BAD_NUMBERS * 3, strict=False):
        if field == "min_requests" and value != "true":
            says = "valid integer"  # an integer field: a float of any size is not one
        cases.append(Case(f"threshold-{field}-{value.strip(chr(34))}", _threshold(field, value), says))
    return cases


CASES = _cases()


def snapshot(folder: Path) -> dict[str, tuple[str, bytes | str]]:
    """Every entry under `folder` (links not followed): relative path -> (kind, bytes or link target)."""
    found: dict[str, tuple[str, bytes | str]] = {}
    for root, dirs, names in os.walk(folder):
        for name in [*dirs, *names]:
            path = Path(root) / name
            rel = str(path.relative_to(folder))
            if path.is_symlink():
                found[rel] = ("link", os.readlink(path))
            elif path.is_dir():
                found[rel] = ("dir", "")
            elif path.is_file():
                found[rel] = ("file", path.read_bytes())
            else:
                found[rel] = ("other", "")
    return found


def prepare(case: Case, root: Path) -> tuple[Path, Path, str]:
    """root/project and root/outside (with its sentinel) for `case`; returns them and the -m argument."""
    project, outside = root / "project", root / "outside"
    project.mkdir(parents=True)
    outside.mkdir()
    (outside / "sentinel.txt").write_text("nobody writes here\n", encoding="utf-8")
    target = case.setup(project, outside)
    return project, outside, str(target)


def run_case(case: Case, target: str, *, budget: float = WALL_BUDGET, memory: int = MEMORY_LIMIT) -> Outcome:
    """`swiftdeploy -m TARGET <case.command>` with RLIMIT_AS `memory` (and the case's RLIMIT_FSIZE), killed after
    `budget` seconds; its exit code, output, wall time and peak resident memory (wait4's ru_maxrss)."""

    def limit() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (memory, memory))
        if case.fsize is not None:
            signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
            resource.setrlimit(resource.RLIMIT_FSIZE, (case.fsize, case.fsize))

    env = {**os.environ, "COLUMNS": "200", "NO_COLOR": "1"}
    env.pop("SWIFTDEPLOY_DEBUG", None)
    out_path = Path(os.environ.get("TMPDIR", "/tmp"))
    with (
        open(os.devnull, "rb") as stdin,
        _scratch(out_path) as stdout,
        _scratch(out_path) as stderr,
    ):
        started = time.monotonic()
        proc = subprocess.Popen(
            [SWIFTDEPLOY, "-m", target, *case.command],
            stdin=stdin,
            stdout=stdout,
            stderr=stderr,
            env=env,
            preexec_fn=limit,  # noqa: PLW1509 - only setrlimit/signal, no threads started yet in the child
        )
        timed_out = False
        while True:
            pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
            if pid:
                break
            if time.monotonic() - started > budget:
                timed_out = True
                proc.kill()
                pid, status, usage = os.wait4(proc.pid, 0)
                break
            time.sleep(0.01)
        seconds = time.monotonic() - started
        proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        stdout.seek(0)
        stderr.seek(0)
        return Outcome(
            returncode=proc.returncode,
            stdout=stdout.read().decode("utf-8", errors="replace"),
            stderr=stderr.read().decode("utf-8", errors="replace"),
            seconds=seconds,
            maxrss_kib=usage.ru_maxrss,
            timed_out=timed_out,
        )


def _scratch(folder: Path):
    import tempfile

    return tempfile.TemporaryFile(dir=folder)
