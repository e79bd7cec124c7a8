"""Fixtures for the Stripe path: localstripe on a free loopback port, and the ledger's HTTP app
served for real (localstripe delivers its webhooks over HTTP), on a fresh PostgreSQL database.

localstripe runs in a subprocess through `aiohttp.web.run_app(..., host="127.0.0.1")`: its own
command listens on every interface. State is reset before each test (`DELETE /_config/data`).
"""

from __future__ import annotations

import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest
import stripe
import uvicorn

from adapters.http.app import create_app
from adapters.runtime.composition import open_ledger
from adapters.stripe.billing import StripeBilling
from adapters.stripe.settings import StripeSettings
from services.ledger import Ledger
from services.tokens import ensure_first_operator_token
from tests.http.conftest import Api

STARTUP_SECONDS_MAX = 30
API_KEY = "sk_test_ledger"
WEBHOOK_SECRET = "whsec_ledger_current"
OLD_WEBHOOK_SECRET = "whsec_ledger_previous"
LOCALSTRIPE_SCRIPT = (
    "import sys, aiohttp.web, localstripe.server as s\n"
    "aiohttp.web.run_app(s.app, host='127.0.0.1', port=int(sys.argv[1]), print=None)\n")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(port: int, what: str) -> None:
    deadline = time.monotonic() + STARTUP_SECONDS_MAX
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within "
                       f"{STARTUP_SECONDS_MAX} s")


@pytest.fixture(scope="session")
def localstripe_url() -> Iterator[str]:
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="localstripe-") as folder:
        process = subprocess.Popen([sys.executable, "-c", LOCALSTRIPE_SCRIPT, str(port)],
                                   cwd=folder, stdout=subprocess.DEVNULL,
                                   stderr=subprocess.DEVNULL)
        try:
            wait_for_port(port, "localstripe")
            yield f"http://127.0.0.1:{port}"
        finally:
            process.terminate()
            process.wait(timeout=STARTUP_SECONDS_MAX)


@pytest.fixture
def localstripe(localstripe_url: str) -> Iterator[httpx.Client]:
    """A client of localstripe's config API, with its data emptied first."""
    with httpx.Client(base_url=localstripe_url) as client:
        client.delete("/_config/data").raise_for_status()
        yield client


def settings_for(localstripe_url: str, *secrets: str) -> StripeSettings:
    return StripeSettings(api_key=API_KEY, webhook_secrets=secrets or (WEBHOOK_SECRET,),
                          api_base=localstripe_url)


@dataclass
class LiveApp:
    url: str
    api: Api
    ledger: Ledger
    billing: StripeBilling
    stripe: stripe.StripeClient

    def register_webhook(self, localstripe: httpx.Client, secret: str = WEBHOOK_SECRET,
                         url: str | None = None) -> None:
        localstripe.post("/_config/webhooks/ledger", data={
            "url": url or f"{self.url}/v1/stripe/webhook", "secret": secret}).raise_for_status()


class _ThreadedServer(uvicorn.Server):
    def install_signal_handlers(self) -> None:  # the test runner owns the signals
        pass


def serve(app: object, port: int) -> tuple[_ThreadedServer, threading.Thread]:
    server = _ThreadedServer(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning",
                                            lifespan="on"))
    thread = threading.Thread(target=server.run, name=f"ledger-http-{port}", daemon=True)
    thread.start()
    wait_for_port(port, "the ledger's HTTP app")
    return server, thread


@pytest.fixture
def live_app(database_url: str, localstripe_url: str) -> Iterator[LiveApp]:
    yield from live_app_on(database_url, settings_for(localstripe_url, WEBHOOK_SECRET,
                                                      OLD_WEBHOOK_SECRET))


def live_app_on(database_url: str, settings: StripeSettings,
                operator_token: str | None = None,
                http_client: stripe.HTTPClient | None = None) -> Iterator[LiveApp]:
    """The app served on a free port; a second one on the same database is a restart."""
    ledger = open_ledger(database_url)
    if operator_token is None:
        issued = ensure_first_operator_token(ledger)
        assert issued is not None
        operator_token = issued.secret
    app = create_app(ledger, database_url, include_dashboard=False)
    billing = StripeBilling.create(ledger, settings, http_client)
    app.state.stripe_billing = billing
    port = free_port()
    server, thread = serve(app, port)
    url = f"http://127.0.0.1:{port}"
    try:
        with httpx.Client(base_url=url, timeout=STARTUP_SECONDS_MAX) as client:
            api = Api(client, ledger, database_url, operator_token)  # type: ignore[arg-type]
            yield LiveApp(url, api, ledger, billing, billing.gateway.client)
    finally:
        server.should_exit = True
        thread.join(timeout=STARTUP_SECONDS_MAX)
        ledger.close()
