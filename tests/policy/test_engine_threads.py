"""The embedded engine is usable from any thread (regorus engines panic when used off their creating thread)."""

import threading

from support import HEALTHY_HOST

from swiftdeploy.policy import evaluate


def test_decisions_from_several_threads_after_main_thread_use():
    assert evaluate(None, "infrastructure", HEALTHY_HOST).verdict == "allow"
    verdicts: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            verdicts.append(evaluate(None, "infrastructure", HEALTHY_HOST).verdict)
        except BaseException as exc:  # PanicException is a BaseException
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert errors == []
    assert verdicts == ["allow"] * 3
