"""The `appliance` command: run, check-config, bench, users, token."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from appliance.config import ConfigError, Settings, load_settings
from appliance.logs import configure_logging

if TYPE_CHECKING:
    import sqlite3

    from appliance import audit
    from appliance.auth import ApiToken

logger = logging.getLogger("appliance")

EXIT_OK, EXIT_FAILURE, EXIT_CONFIG = 0, 1, 2


def build_parser() -> argparse.ArgumentParser:
    """Argument parser for every subcommand."""
    parser = argparse.ArgumentParser(prog="appliance", description="On-premise industrial vision appliance.")
    sub = parser.add_subparsers(dest="command", required=True)

    run = sub.add_parser("run", help="Run the appliance (no --config: the embedded demo).")
    run.add_argument("--config", type=Path, help="TOML config file (default: $APPLIANCE_CONFIG or the demo).")
    run.add_argument("--duration", type=float, help="Stop after SECONDS of inspection.")

    check = sub.add_parser("check-config", help="Validate a config file; exit 0 when it is good.")
    check.add_argument("file", type=Path)

    from appliance.bench.cli import add_arguments

    add_arguments(sub.add_parser("bench", help="Measure the pipeline on this box; capacity planning."))

    token = sub.add_parser("token", help="API tokens for machines.")
    token_sub = token.add_subparsers(dest="action", required=True)
    create = token_sub.add_parser("create", help="Create a token; prints it alone on the last line.")
    create.add_argument("name")
    create.add_argument("--role", required=True, choices=["viewer", "operator", "engineer", "admin"])
    create.add_argument(
        "--expires-days", type=float, metavar="DAYS", help="Stop accepting it after DAYS (default: never)."
    )
    create.add_argument("--config", type=Path)
    listing = token_sub.add_parser("list", help="Every token: id, name, role, created, expiry or end.")
    listing.add_argument("--config", type=Path)
    revoke = token_sub.add_parser("revoke", help="Stop accepting a token (by id) or every token of a name.")
    revoke.add_argument("ref", metavar="NAME|ID")
    revoke.add_argument("--config", type=Path)

    users = sub.add_parser("users", help="Console accounts.")
    users_sub = users.add_subparsers(dest="action", required=True)
    add = users_sub.add_parser("add", help="Create a console user (the first admin, for one).")
    add.add_argument("name")
    add.add_argument("--role", required=True, choices=["viewer", "operator", "engineer", "admin"])
    add.add_argument(
        "--password-stdin", action="store_true", required=True, help="Read the password from standard input."
    )
    add.add_argument(
        "--replace", action="store_true", help="Reset an existing user (role, password, unlock)."
    )
    add.add_argument("--config", type=Path)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the console script."""
    args = build_parser().parse_args(argv)
    handlers = {
        "run": cmd_run,
        "check-config": cmd_check_config,
        "token": cmd_token,
        "users": cmd_users,
        "bench": cmd_bench,
    }
    return handlers[args.command](args)


def _settings(path: Path | None) -> Settings | None:
    try:
        return load_settings(path)
    except ConfigError as exc:
        print(f"configuration error:\n{exc}", file=sys.stderr)
        return None


def cmd_check_config(args: argparse.Namespace) -> int:
    """Validate a config file, naming the bad key and why."""
    settings = _settings(args.file)
    if settings is None:
        return EXIT_CONFIG
    cameras = sum(len(line.cameras) for line in settings.lines)
    print(f"{args.file}: ok ({len(settings.lines)} line(s), {cameras} camera(s), node {settings.node_id})")
    return EXIT_OK


def cmd_token(args: argparse.Namespace) -> int:
    """API bearer tokens: create (printed alone on the last line), list, revoke; audited."""
    from appliance import audit
    from appliance.auth import AccountError, add_token, expiry_ms, in_transaction, list_tokens, revoke_tokens

    settings = _settings(args.config)
    if settings is None:
        return EXIT_CONFIG
    conn = _open_accounts(settings)
    if conn is None:
        return EXIT_FAILURE
    actor = _cli_actor()
    try:
        if args.action == "list":
            _print_tokens(list_tokens(conn))
            return EXIT_OK
        with in_transaction(conn):
            if args.action == "revoke":
                revoked = revoke_tokens(conn, args.ref)
                for t in revoked:
                    audit.record(conn, actor, "token.revoke", "ok", target=t.name, details={"id": t.id})
            else:
                ends = expiry_ms(args.expires_days)
                made, token = add_token(conn, args.name, args.role, expires_ms=ends)
                details = {"id": made.id, "role": made.role, "expires_ms": ends}
                audit.record(conn, actor, "token.create", "ok", target=made.name, details=details)
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        conn.close()
    if args.action == "revoke":
        for t in revoked:
            print(f"revoked token {t.id} ({t.name}, role {t.role})")
        return EXIT_OK
    until = "never expires" if ends is None else f"expires {_utc(ends)}"
    print(f"token {made.id} for {made.name} (role {made.role}, {until}); shown once, store it safely:")
    print(token)
    return EXIT_OK


def _open_accounts(settings: Settings) -> sqlite3.Connection | None:
    """The store for an account command, or None after printing why it cannot be opened."""
    from appliance.store.db import StoreError, open_store

    try:
        return open_store(settings.db_path)
    except StoreError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return None


def _cli_actor() -> audit.Actor:
    """Who the audit log names for a command run on the box."""
    from appliance import audit

    return audit.Actor(os.environ.get("SUDO_USER") or os.environ.get("USER") or "cli", "cli", "cli")


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def _print_tokens(tokens: Sequence[ApiToken]) -> None:
    from appliance.results import now_ms

    now = now_ms()
    print(f"{'ID':>4}  {'NAME':<24} {'ROLE':<9} {'CREATED':<20} STATE")
    for t in tokens:
        if t.ends_ms is None:
            state = "active"
        elif t.active(now):
            state = f"active, expires {_utc(t.ends_ms)}"
        else:
            state = f"ended {_utc(t.ends_ms)}"
        print(f"{t.id:>4}  {t.name:<24} {t.role:<9} {_utc(t.created_ms):<20} {state}")


def cmd_users(args: argparse.Namespace) -> int:
    """Create (or with --replace reset) a console user; the password comes from stdin."""
    from appliance import audit
    from appliance.auth import AccountError, add_user, get_user, in_transaction, update_user

    settings = _settings(args.config)
    if settings is None:
        return EXIT_CONFIG
    password = sys.stdin.readline().rstrip("\r\n")
    conn = _open_accounts(settings)
    if conn is None:
        return EXIT_FAILURE
    actor = _cli_actor()
    try:
        with in_transaction(conn):
            if args.replace and get_user(conn, args.name) is not None:
                update_user(conn, args.name, role=args.role, password=password, disabled=False)
                action = "user.reset"
            else:
                add_user(conn, args.name, args.role, password)
                action = "user.add"
            audit.record(conn, actor, action, "ok", target=args.name, details={"role": args.role})
    except AccountError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_FAILURE
    finally:
        conn.close()
    print(f"user {args.name} ({args.role}) {'reset' if action == 'user.reset' else 'created'}")
    return EXIT_OK


def cmd_bench(args: argparse.Namespace) -> int:
    """Benchmarks (see appliance.bench)."""
    from appliance.bench.cli import main as bench_main

    return bench_main(args)


def cmd_run(args: argparse.Namespace) -> int:
    """Run until --duration elapses, SIGTERM/SIGINT arrives or a fatal error happens."""
    from appliance.sdnotify import SystemdLink
    from appliance.service import Service, ServiceError
    from appliance.wiring import add_components

    systemd = SystemdLink()  # sd_notify; does nothing outside systemd
    settings = _settings(args.config)
    if settings is None:
        systemd.failed("configuration error (see the journal)")
        return EXIT_CONFIG
    configure_logging(settings.log_level)
    stop = threading.Event()

    def on_signal(signum: int, _frame: object) -> None:
        logger.info("received %s, stopping", signal.Signals(signum).name)
        systemd.stopping()
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    env_config = os.environ.get("APPLIANCE_CONFIG")
    config_path = args.config or (Path(env_config) if env_config else None)
    service = Service(settings, config_path=config_path)
    try:
        add_components(service)
        service.start(on_progress=systemd.progress)
    except ServiceError as exc:
        logger.error("cannot start: %s", exc)
        systemd.failed(f"cannot start: {exc}")
        return EXIT_FAILURE
    if not stop.is_set():  # a SIGTERM during start-up already said STOPPING=1
        lines, cameras, profile = len(service.ladders), len(service.cameras), service.profile.name
        systemd.ready(
            f"inspecting: {lines} line(s), {cameras} camera(s), profile {profile}", service.loops_alive
        )
    deadline = None if args.duration is None else time.monotonic() + args.duration
    code = EXIT_OK
    while not stop.wait(0.2):
        if deadline is not None and time.monotonic() >= deadline:
            break
        reason = service.fatal
        if reason:
            logger.error("fatal: %s", reason)
            code = EXIT_FAILURE
            break
    systemd.stopping()
    service.stop()
    systemd.close()
    if code != EXIT_OK or service.fatal is not None:
        systemd.failed(service.fatal or "fatal error (see the journal)")
        return EXIT_FAILURE
    return EXIT_OK
