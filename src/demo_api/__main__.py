"""`python -m demo_api`: one uvicorn worker (chaos state lives in this process's memory)."""

from __future__ import annotations

import sys

from demo_api.config import ConfigError, Settings

# Seconds uvicorn lets in-flight requests (a slow-chaos sleep, say) finish after SIGTERM before closing them;
# below Docker's default 10 s stop timeout so the shutdown stays graceful.
GRACEFUL_SHUTDOWN_SECONDS = 5


def main() -> int:
    try:
        settings = Settings.from_env()
    except ConfigError as exc:
        print(f"demo_api: {exc}", file=sys.stderr)
        return 2

    import uvicorn  # after validation: a bad setting fails fast, without importing the server

    from demo_api.app import create_app

    # uvicorn installs SIGTERM/SIGINT handlers: stop accepting, finish in-flight requests, run shutdown, exit 0.
    uvicorn.run(
        create_app(settings, instrument=settings.metrics_enabled),
        host=settings.host,
        port=settings.port,
        workers=1,
        access_log=False,
        log_level="info",
        timeout_graceful_shutdown=GRACEFUL_SHUTDOWN_SECONDS,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
