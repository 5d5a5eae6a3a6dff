"""The ``dbpool`` command: ``serve``, ``migrate``, ``keys generate``, ``keys rotate``.

Exit codes: 0 success (for ``serve``, a clean stop on SIGTERM too), 1 runtime failure (e.g.
registry unreachable), 2 bad usage or bad configuration (invalid settings, malformed key).
Messages go to stderr and never contain a key or password; only ``keys generate`` and
``keys rotate`` print results to stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import logging
import math
import signal
import sys
from collections.abc import Callable, Sequence
from types import FrameType

from app.logs import configure_logging
from app.main import SettingsError, load_settings
from app.registry.crypto import generate_key, load_secret_box
from app.registry.db import create_registry_engine, create_sessionmaker
from app.registry.migrations import upgrade_to_head
from app.registry.repository import ConnectionRepository
from app.settings import Settings

__all__ = ["main"]

logger = logging.getLogger("app.cli")


class CliError(Exception):
    """A failure to report in one line; ``exit_code`` 2 for configuration, 1 otherwise."""

    def __init__(self, message: str, exit_code: int = 1) -> None:
        super().__init__(message)
        self.exit_code = exit_code


def _settings() -> Settings:
    try:
        settings = load_settings()
    except SettingsError as exc:
        raise CliError(str(exc), exit_code=2) from None
    configure_logging(settings.log_level, settings.log_format)
    return settings


def _check_keys(settings: Settings) -> None:
    """Load the secret box once so a malformed key stops us before anything starts."""
    try:
        load_secret_box(settings)
    except (ValueError, OSError) as exc:
        # The box's messages name the key's position or file, never the key itself.
        raise CliError(f"invalid encryption key: {exc}", exit_code=2) from None


def _migrate(settings: Settings) -> None:
    try:
        asyncio.run(upgrade_to_head(settings.registry_url.get_secret_value()))
    except Exception as exc:  # Alembic and drivers raise many types; one line is enough here
        first_line = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        raise CliError(f"migration failed: {type(exc).__name__}: {first_line}") from None


def cmd_serve(args: argparse.Namespace) -> None:
    import uvicorn  # only `serve` needs the server

    from app.api.protocol import edge_protocol

    settings = _settings()
    _check_keys(settings)
    _migrate(settings)
    _freeze_imports()
    signal.signal(signal.SIGTERM, _exit_cleanly)
    uvicorn.run(
        "app.main:create_app",
        factory=True,
        host=args.host or settings.host,
        port=args.port or settings.port,
        loop="uvloop",
        http=edge_protocol(settings),
        workers=1,
        # The edge: connections served at once (beyond: 503), how long an idle keep-alive
        # connection is kept; the protocol adds a headers deadline and a bounded drain.
        limit_concurrency=settings.limit_concurrency,
        timeout_keep_alive=settings.keep_alive_seconds,
        log_config=None,  # configure_logging (in the app's lifespan) owns the format
        # A stuck request cannot hold a SIGTERM: after the grace uvicorn cancels what is
        # still running (its statements are cancelled on the server), then the lifespan
        # closes the pools, so the process ends within about twice the grace (uvicorn
        # takes whole seconds).
        timeout_graceful_shutdown=math.ceil(settings.shutdown_grace_seconds),
    )


def _exit_cleanly(signum: int, frame: FrameType | None) -> None:
    """SIGTERM outside uvicorn's own handling: before it starts, or re-raised by it once its
    graceful shutdown is complete (which would otherwise end the process "killed by
    SIGTERM", exit 143). Either way nothing is left to clean up: exit 0."""
    raise SystemExit(0)


def _freeze_imports() -> None:
    """Hide everything imported so far (the service and its libraries, which live as long as
    the process) from the cyclic garbage collector: its full passes stop the event loop and
    would otherwise walk every module, class and function each time. ``app.main``, imported
    above, has brought in the whole service."""
    gc.collect()
    gc.freeze()


def cmd_migrate(args: argparse.Namespace) -> None:
    settings = _settings()
    _migrate(settings)
    logger.info("registry schema is at head")


def cmd_keys_generate(args: argparse.Namespace) -> None:
    print(generate_key())


async def _rotate(settings: Settings) -> int:
    box = load_secret_box(settings)
    engine = create_registry_engine(settings.registry_url.get_secret_value())
    try:
        return await ConnectionRepository(create_sessionmaker(engine), box).rotate_keys()
    finally:
        await engine.dispose()


def cmd_keys_rotate(args: argparse.Namespace) -> None:
    settings = _settings()
    _check_keys(settings)
    count = asyncio.run(_rotate(settings))
    print(count)
    logger.info("re-encrypted %d connection(s) under the first configured key", count)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="dbpool", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    serve = commands.add_parser("serve", help="migrate the registry, then serve HTTP")
    serve.add_argument("--host", help="bind address (default DBPOOL_HOST)")
    serve.add_argument("--port", type=int, help="bind port (default DBPOOL_PORT)")
    serve.set_defaults(func=cmd_serve)
    commands.add_parser("migrate", help="upgrade the registry schema").set_defaults(
        func=cmd_migrate
    )
    keys = commands.add_parser("keys", help="encryption keys").add_subparsers(
        dest="keys_command", required=True
    )
    keys.add_parser("generate", help="print a new Fernet key").set_defaults(func=cmd_keys_generate)
    keys.add_parser(
        "rotate", help="re-encrypt every password under the first key; prints the count"
    ).set_defaults(func=cmd_keys_rotate)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``dbpool`` console script."""
    args = _parser().parse_args(argv)
    func: Callable[[argparse.Namespace], None] = args.func
    try:
        func(args)
    except CliError as exc:
        print(f"dbpool: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
