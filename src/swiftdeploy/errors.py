"""One exception hierarchy. Each class carries the process exit code the CLI maps it to (docs/contracts.md#exit-codes).

Library code raises these with a message that says what is wrong and how to fix it; only `swiftdeploy.cli`
turns them into a red line on stderr and an exit code.
"""

from __future__ import annotations

from typing import Any

EXIT_INTERRUPTED = 130  # Ctrl-C or an aborted prompt: the shell's 128 + SIGINT, not an error of ours


class SwiftDeployError(Exception):
    """Base class. Exit code 1: the operation failed."""

    exit_code = 1
    # The OpResult of the lifecycle operation that raised it, as far as it got (set by ops.base.Operation), so a
    # `--json` answer on failure still says what was decided and written; None outside an operation.
    result: Any = None

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message} ({self.hint})" if self.hint else self.message


class OperationFailed(SwiftDeployError):
    """Exit 1: unhealthy service, runtime error, failed check."""


class DriftDetected(OperationFailed):
    """Exit 1: generated files on disk differ from what the manifest produces."""


class LockHeld(OperationFailed):
    """Exit 1: another deploy/promote/rollback/teardown holds the lock for this manifest."""


class RuntimeUnavailable(OperationFailed):
    """Exit 1: the runtime (docker engine, nginx binary, ...) cannot be used."""


class HealthTimeout(OperationFailed):
    """Exit 1: a service did not become healthy in time."""


class InvalidInput(SwiftDeployError):
    """Exit 2: bad usage or invalid input."""

    exit_code = 2


class ManifestError(InvalidInput):
    """Exit 2: the manifest is missing, unreadable or invalid. `problems` lists every finding."""

    def __init__(self, message: str, *, problems: list[str] | None = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.problems = problems or []

    def __str__(self) -> str:
        if not self.problems:
            return super().__str__()
        return self.message + "\n" + "\n".join(f"  {p}" for p in self.problems)


class PolicyError(InvalidInput):
    """Exit 2: a policy file does not compile, fails while evaluating (conflicting rule values, a builtin that
    errors: the same on both engines), or a policy input file is invalid. The fix is in the Rego or the input."""


class PolicyBlocked(SwiftDeployError):
    """Exit 3: the policy answered deny or inconclusive. `decision` is the full decision."""

    exit_code = 3

    def __init__(self, message: str, *, decision: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.decision = decision


class PolicyEngineUnavailable(SwiftDeployError):
    """Exit 4: the policy engine could not answer. Fail closed: this never means allow."""

    exit_code = 4


# What an environment error (docs/operations.md#environment-errors) means for the person, by errno name.
_OS_HINTS = {
    "ENOSPC": "the file system is full: free some space and retry",
    "EDQUOT": "the disk quota is used up: free some space and retry",
    "ENAMETOOLONG": "the name is too long for the file system: use a shorter path",
    "EISDIR": "a folder is where a file is expected: move it away",
    "ENOTDIR": "a file is where a folder is expected: move it away",
    "EACCES": "check the permissions",
    "EPERM": "check the permissions",
    "EROFS": "the file system is read-only",
    "ELOOP": "a symbolic link is in the way: swiftdeploy follows none in the project; remove it",
}


def describe_os_error(exc: OSError) -> str:
    """One sentence for an error of the environment (a full disk, a name too long, a file where a folder should
    be): the path (cut to 200 characters) and the system's words for the problem, and what to do. The CLI prints it
    as the run's error line with exit 1: such an error is not a bug of swiftdeploy."""
    import errno

    name = errno.errorcode.get(exc.errno or 0, "")
    problem = exc.strerror or str(exc) or type(exc).__name__
    paths = [str(p) for p in (exc.filename, exc.filename2) if p is not None]
    where = " -> ".join(p if len(p) <= 200 else p[:197] + "..." for p in paths)
    hint = _OS_HINTS.get(name)
    text = f"{where}: {problem}" if where else problem
    return f"{text} ({hint})" if hint else text


class OperationInterrupted(KeyboardInterrupt):
    """Exit 130: Ctrl-C stopped a lifecycle operation. A KeyboardInterrupt (so `except Exception` in a script never
    swallows Ctrl-C), carrying one line saying what was stopped and what was left as it was (`message`); the
    operation recorded its `<operation>_interrupted` history event (docs/history.md)."""

    exit_code = EXIT_INTERRUPTED
    result: Any = None

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    def __str__(self) -> str:
        return self.message


class OperationAborted(SwiftDeployError):
    """Exit 3: `swiftdeploy abort` stopped a running `rollout` or `promote stable`, which rolled the canary back.
    `request` is the abort request (who asked, when: swiftdeploy.ops.abort.AbortRequest)."""

    exit_code = 3

    def __init__(self, message: str, *, request: Any = None, hint: str | None = None) -> None:
        super().__init__(message, hint=hint)
        self.request = request


class RolloutPaused(PolicyBlocked):
    """Exit 5: a `rollout` step was still inconclusive when its time was up and `canary.analysis.on_inconclusive`
    is `pause`: the canary stays at that step's weight, the step is recorded, and `swiftdeploy rollout` resumes it
    (`swiftdeploy abort` ends it). Not a deny: nothing was rolled back, nothing was decided yet."""

    exit_code = 5
