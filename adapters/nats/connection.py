"""Connecting to NATS through nats-py: one URL, or a cluster's URLs separated by commas.

Every NATS connection of the ledger (usage consumer and publisher, views, `ledger init`) is a
nats-py `Client` made here, with no private API: nats-py does the protocol, reconnects (to any
node of a cluster, including the ones it learns from the server's INFO), and lame-duck mode.

Replies to the ledger travel under its own inbox prefix (`LEDGER_INBOX_PREFIX`, setting
`LEDGER_NATS_INBOX_PREFIX`), not NATS's default `_INBOX`: producers must be allowed to subscribe
to `_INBOX.>` to read their publish acknowledgements, and with the default prefix they could
also have read what JetStream delivers to the ledger (every team's usage records, through the
consumer's pull requests) and its API answers. Producers keep the default (`PRODUCER_INBOX_PREFIX`),
so a producer in any language needs no setting for it; producers that must not read each
other's acknowledgements each get a user and a prefix of their own (setting
`LEDGER_PRODUCER_INBOX_PREFIX` for our publisher, `producer_inbox_prefix`).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import re
import ssl
from collections import deque
from collections.abc import Mapping

import nats.errors
from nats.aio.client import Client

from adapters.nats.auth_settings import NatsAuthSettings
from adapters.runtime.settings import CONNECT_TIMEOUT_SECONDS, ConfigurationError, redacted
from adapters.runtime.settings import nats_servers as nats_servers

# The first connection must succeed within this bound, or the command says so and exits (later
# losses reconnect forever: a cluster node restarting must not stop the ledger).
FIRST_CONNECT_WAIT_SECONDS = 10.0
log = logging.getLogger(__name__)

# Where replies to the ledger's own connections arrive (see the module docstring). A producer's
# permission `subscribe: _INBOX.>` does not reach it.
LEDGER_INBOX_PREFIX = "_LEDGER_INBOX"
ENV_INBOX_PREFIX = "LEDGER_NATS_INBOX_PREFIX"
# NATS's default: what producers use, and what their permission allows.
PRODUCER_INBOX_PREFIX = "_INBOX"
# A producer service's own prefix, when its user may read only its own acknowledgements.
ENV_PRODUCER_INBOX_PREFIX = "LEDGER_PRODUCER_INBOX_PREFIX"
INBOX_PREFIX_LENGTH_MAX = 64
# Subscribed to (and left) once per connection, to see that the user may read its replies.
INBOX_CHECK_TOKEN = "permission-check"
# PING/PONG round trips the check waits for the server's refusal (see `check_inbox_allowed`).
INBOX_CHECK_ROUND_TRIPS = 2
# A connection's latest errors kept for its start-up checks (it lives for the process: bounded).
CONNECTION_ERRORS_KEPT = 16
# The server's words for a subscription its permissions refuse.
SUBSCRIBE_REFUSED = "permissions violation for subscription"
# Dot-separated tokens of printable ASCII, without spaces, wildcards (`*`, `>`) or empty tokens.
_SUBJECT_TOKEN = r"(?:(?![*.>])[!-~])+"
_INBOX_PREFIX = re.compile(rf"{_SUBJECT_TOKEN}(?:\.{_SUBJECT_TOKEN})*")


def ledger_inbox_prefix(env: Mapping[str, str] | None = None) -> str:
    """The inbox prefix of the ledger's connections: `LEDGER_NATS_INBOX_PREFIX`, else
    `LEDGER_INBOX_PREFIX`. Its user must be allowed to subscribe to `<prefix>.>`."""
    env = os.environ if env is None else env
    return checked_inbox_prefix(env.get(ENV_INBOX_PREFIX) or LEDGER_INBOX_PREFIX,
                                ENV_INBOX_PREFIX)


def producer_inbox_prefix(env: Mapping[str, str] | None = None) -> str:
    """The inbox prefix of a producer's connection: `LEDGER_PRODUCER_INBOX_PREFIX`, else NATS's
    default `_INBOX`. Its user must be allowed to subscribe to `<prefix>.>`."""
    env = os.environ if env is None else env
    return checked_inbox_prefix(env.get(ENV_PRODUCER_INBOX_PREFIX) or PRODUCER_INBOX_PREFIX,
                                ENV_PRODUCER_INBOX_PREFIX)


def checked_inbox_prefix(prefix: str, setting: str) -> str:
    """`prefix` if NATS can use it as an inbox prefix, else an error naming `setting`."""
    if len(prefix) > INBOX_PREFIX_LENGTH_MAX or not _INBOX_PREFIX.fullmatch(prefix):
        raise ConfigurationError(
            f"{setting} must be 1 to {INBOX_PREFIX_LENGTH_MAX} characters of NATS "
            f"subject tokens (no spaces, no '*' or '>', no empty token), got {prefix[:80]!r}")
    return prefix


class BusUnreachableError(ConnectionError):
    """No NATS server answered (or it refused our credentials); the message says which URL."""
# The usage stream partitions accounts with a stream subject transform (NATS 2.10), and its
# consumers fail over with priority groups (pinned client, NATS 2.11).
NATS_SERVER_VERSION_MIN = (2, 11)
# Words of the server's answers to credentials it does not accept: no retry can cure these.
AUTH_REFUSALS = ("authorization violation", "authentication", "user authentication expired",
                 "account authentication expired")


class BusCredentialsRefused(BusUnreachableError):
    """The server refused who we said we were (or our TLS certificate): retrying cannot help,
    so this fails at once, naming the settings to fix."""


def _refusal(error: Exception) -> str | None:
    """What kind of refusal `error` is, if retrying cannot cure it."""
    if isinstance(error, nats.errors.AuthorizationError):
        return "authorization violation"
    text = str(error).lower()
    for words in AUTH_REFUSALS:
        if words in text:
            return words
    if isinstance(error, ssl.SSLError):
        return f"TLS refused ({error.reason or error})"
    return None


async def connect_nats(url: str, name: str, auth: NatsAuthSettings | None = None, *,
                       inbox_prefix: str | None = None,
                       inbox_setting: str = ENV_INBOX_PREFIX) -> Client:
    """A connection that reconnects forever (to any node of a cluster) rather than give up,
    once it has connected: the first connection is bounded by FIRST_CONNECT_WAIT_SECONDS, and
    ends at once if the server refuses our credentials. `auth` defaults to the environment's
    settings (`adapters.nats.auth_settings`), `inbox_prefix` to the ledger's own
    (`ledger_inbox_prefix`); a producer's connection passes `producer_inbox_prefix()` and
    `ENV_PRODUCER_INBOX_PREFIX` as the setting a refusal names."""
    servers = nats_servers(url)
    inbox_prefix = checked_inbox_prefix(inbox_prefix or ledger_inbox_prefix(), inbox_setting)
    auth = auth if auth is not None else NatsAuthSettings.from_env()
    client = Client()
    problems: deque[Exception] = deque(maxlen=CONNECTION_ERRORS_KEPT)
    refused = asyncio.Event()

    async def on_error(error: Exception) -> None:
        problems.append(error)
        if _refusal(error) is not None and not client.is_connected:
            refused.set()
        if client.is_connected or client.is_reconnecting:  # before: the caller says it once
            log.warning("NATS %s: %s", name, error)

    async def on_lame_duck() -> None:
        # nats-py only tells us; the server closes the connection after its grace period and
        # nats-py reconnects to another node (tests/integration/test_nats_lame_duck.py).
        log.warning("NATS %s: the server at %s entered lame duck mode; reconnecting to another "
                    "node when it closes this connection", name,
                    redacted(str(client.connected_url.geturl())) if client.connected_url
                    else "?")

    connecting = asyncio.create_task(client.connect(
        servers=servers, name=name, connect_timeout=CONNECT_TIMEOUT_SECONDS,
        max_reconnect_attempts=-1, error_cb=on_error, inbox_prefix=inbox_prefix,
        lame_duck_mode_cb=on_lame_duck, **auth.connect_options()))
    waiting = asyncio.create_task(refused.wait())
    try:
        await asyncio.wait([connecting, waiting], timeout=FIRST_CONNECT_WAIT_SECONDS,
                           return_when=asyncio.FIRST_COMPLETED)
    finally:
        waiting.cancel()
    if connecting.done() and connecting.exception() is None and client.is_connected:
        await check_server_version(client)
        try:
            await check_inbox_allowed(client, inbox_prefix, problems, setting=inbox_setting)
        except (nats.errors.Error, TimeoutError) as error:  # the server went away meanwhile
            await client.close()
            raise BusUnreachableError(f"NATS at {redacted(url)} stopped answering right after "
                                      f"we connected ({error!r}); check that it runs") from None
        return client
    connecting.cancel()
    with contextlib.suppress(BaseException):
        await connecting
    with contextlib.suppress(Exception):
        await client.close()
    failure = connecting.exception() if connecting.done() and not connecting.cancelled() else None
    cause = problems[-1] if problems else failure
    refusal = next((r for r in map(_refusal, problems) if r), None)
    if refusal is not None:
        raise BusCredentialsRefused(
            f"NATS at {redacted(url)} refused the connection: {refusal} ({cause}); check "
            f"{auth.described()}") from None
    raise BusUnreachableError(
        f"cannot connect to NATS at {redacted(url)} within "
        f"{FIRST_CONNECT_WAIT_SECONDS:.0f}s ({str(cause) or type(cause).__name__}); check "
        "LEDGER_NATS_URL (and its user and password) and that the server runs") from None


async def check_inbox_allowed(client: Client, prefix: str, problems: deque[Exception], *,
                              setting: str = ENV_INBOX_PREFIX) -> None:
    """Refuse a user that may not subscribe under its inbox prefix at start, naming what to fix:
    it would never receive an answer (pull deliveries, API replies, publish acknowledgements),
    and a consumer would wait silently. A refused user's connection is closed."""
    subject = f"{prefix}.{INBOX_CHECK_TOKEN}"
    subscription = await client.subscribe(subject)
    refused = await subscription_refused(client, subject, problems)
    if refused is None:
        await subscription.unsubscribe()
        return
    await client.close()
    other = (f", or set {setting} (or your NATS client's inbox prefix) to the one it may read"
             if setting == ENV_PRODUCER_INBOX_PREFIX else
             f", or set {setting} to a prefix it may subscribe to (one producers may not)")
    raise BusCredentialsRefused(
        f"this NATS user may not subscribe to {prefix}.>, where the answers to its requests "
        f"arrive ({refused}); allow it in the server's permissions for the user{other}")


async def subscription_refused(client: Client, subject: str,
                               problems: deque[Exception]) -> Exception | None:
    """The server's refusal of the subscription just made to exactly `subject`, if it sends
    one; None if it accepted it. The refusal comes asynchronously, to nats-py's `error_cb`
    (which must add it to `problems`; faststream brokers are checked the same way), naming the
    subject in quotes; nats-server 2.15 sends it after the PONG of the first PING that follows
    the subscription and before the second (seen every time here), so this waits for two round
    trips (tests/integration/test_nats_auth.py fails if a server sends it later)."""
    wanted = f'"{subject.lower()}"'
    for _ in range(INBOX_CHECK_ROUND_TRIPS):
        await client.flush(CONNECT_TIMEOUT_SECONDS)
        for problem in problems:
            text = str(problem).lower()
            if SUBSCRIBE_REFUSED in text and wanted in text:
                return problem
    return None


async def close_nats(client: Client) -> None:
    """Drain a connected client (what was published reaches the server); one that is still
    reconnecting after the server went away cannot drain, and is simply closed."""
    if client.is_closed:
        return
    if client.is_connected:
        await client.drain()
    else:
        await client.close()


async def check_server_version(client: Client) -> None:
    """Refuse a NATS server too old for the usage stream, naming what is needed."""
    version = client.connected_server_version
    if (version.major, version.minor) < NATS_SERVER_VERSION_MIN:
        await client.close()
        needed = ".".join(map(str, NATS_SERVER_VERSION_MIN))
        found = f"{version.major}.{version.minor}.{version.patch}"
        raise RuntimeError(
            f"NATS server {found} is too old: the usage stream partitions accounts with "
            f"subject transforms and fails over with consumer priority groups, which need "
            f"NATS {needed} or newer with JetStream"
        )
