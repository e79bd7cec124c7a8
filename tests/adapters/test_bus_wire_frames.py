"""The NATS wire parser and frame builders, worked through byte by byte.

Every frame kind the server sends is parsed; a stream of them split at every byte boundary
parses to the same frames; a PING is answered with a PONG; `-ERR` closes the connection with an
error that carries the server's words.
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from adapters.nats.wire_client import (
    WireConnection,
    WireConnectionLost,
    WireServerError,
    connect_options,
)
from adapters.nats.wire_frames import (
    WireMsg,
    WireParser,
    WireProtocolError,
    ack_frame,
    header_block,
    hpub_frame,
    nak_frame,
    parse_headers,
    pub_frame,
    status_of,
    stream_sequence,
    term_frame,
)

ACK_SUBJECT = b"$JS.ACK.LEDGER_USAGE.ledger-usage-p3.1.417.52.1764000000000000000.9"
HEADERS = b"NATS/1.0\r\nNats-Msg-Id: u-1\r\nNats-Expected-Stream: LEDGER_USAGE\r\n\r\n"
# A payload holding CRLF and a fake frame: sizes, not delimiters, decide where it ends.
TRICKY_PAYLOAD = b'{"a": "x\r\nMSG fake 1 3\r\nabc\r\n"}'


class Recorder:
    """A FrameHandler that writes down what it was given."""

    def __init__(self) -> None:
        self.events: list[tuple[Any, ...]] = []

    def on_msg(self, sid: bytes, msg: WireMsg) -> None:
        self.events.append(("msg", sid, msg.subject, msg.reply, msg.headers, msg.data))

    def on_ping(self) -> None:
        self.events.append(("ping",))

    def on_pong(self) -> None:
        self.events.append(("pong",))

    def on_ok(self) -> None:
        self.events.append(("ok",))

    def on_err(self, text: str) -> None:
        self.events.append(("err", text))

    def on_info(self, info: dict[str, Any]) -> None:
        self.events.append(("info", info))


def msg(subject: bytes, sid: bytes, reply: bytes, payload: bytes) -> bytes:
    middle = b" " + reply if reply else b""
    return b"MSG %b %b%b %d\r\n%b\r\n" % (subject, sid, middle, len(payload), payload)


def hmsg(subject: bytes, sid: bytes, reply: bytes, headers: bytes, payload: bytes) -> bytes:
    middle = b" " + reply if reply else b""
    return b"HMSG %b %b%b %d %d\r\n%b%b\r\n" % (subject, sid, middle, len(headers),
                                                len(headers) + len(payload), headers, payload)


STREAM = b"".join([
    b'INFO {"server_id":"x","version":"2.15.0","max_payload":1048576,"headers":true}\r\n',
    msg(b"ledger.usage.v1.3.acct", b"7", ACK_SUBJECT, b'{"usage_id":"u-1"}'),
    msg(b"plain", b"8", b"", b""),
    hmsg(b"ledger.usage.v1.3.acct", b"7", ACK_SUBJECT, HEADERS, TRICKY_PAYLOAD),
    hmsg(b"_INBOX.abc.1", b"9", b"", b"NATS/1.0 408 Request Timeout\r\n\r\n", b""),
    b"PING\r\n", b"PONG\r\n", b"+OK\r\n",
    b"-ERR 'Permissions Violation for Publish to \"x\"'\r\n",
    b"msg lower 3 2\r\nhi\r\n",
])

EXPECTED: list[tuple[Any, ...]] = [
    ("info", {"server_id": "x", "version": "2.15.0", "max_payload": 1048576, "headers": True}),
    ("msg", b"7", "ledger.usage.v1.3.acct", ACK_SUBJECT, None, b'{"usage_id":"u-1"}'),
    ("msg", b"8", "plain", b"", None, b""),
    ("msg", b"7", "ledger.usage.v1.3.acct", ACK_SUBJECT, HEADERS, TRICKY_PAYLOAD),
    ("msg", b"9", "_INBOX.abc.1", b"", b"NATS/1.0 408 Request Timeout\r\n\r\n", b""),
    ("ping",), ("pong",), ("ok",),
    ("err", 'Permissions Violation for Publish to "x"'),
    ("msg", b"3", "lower", b"", None, b"hi"),
]


def parse(*chunks: bytes) -> list[tuple[Any, ...]]:
    recorder = Recorder()
    parser = WireParser(recorder)
    for chunk in chunks:
        parser.feed(chunk)
    return recorder.events


def test_every_frame_kind_is_parsed() -> None:
    assert parse(STREAM) == EXPECTED


def test_frames_split_at_every_byte_boundary_parse_the_same() -> None:
    for cut in range(len(STREAM) + 1):
        assert parse(STREAM[:cut], STREAM[cut:]) == EXPECTED, cut


def test_frames_arriving_one_byte_at_a_time_parse_the_same() -> None:
    assert parse(*[STREAM[i:i + 1] for i in range(len(STREAM))]) == EXPECTED


def test_frames_split_in_three_parse_the_same() -> None:
    step = 7
    for first in range(0, len(STREAM), step):
        for second in range(first, len(STREAM), step):
            assert parse(STREAM[:first], STREAM[first:second], STREAM[second:]) == EXPECTED


def test_a_large_payload_over_many_reads_is_joined_once() -> None:
    payload = bytes(range(256)) * 2000
    frame = msg(b"big", b"1", b"", payload)
    chunks = [frame[i:i + 1000] for i in range(0, len(frame), 1000)]
    assert parse(*chunks) == [("msg", b"1", "big", b"", None, payload)]


@pytest.mark.parametrize("garbage", [
    b"NOPE\r\n",
    b"MSG subject-only\r\n",
    b"MSG a 1 notanumber\r\nxx\r\n",
    b"MSG a 1 2\r\nxyz\r\n",  # the payload is longer than it said
    b"HMSG a 1 10 5\r\n0123456789\r\n",  # headers longer than the total
    b"INFO {not json}\r\n",
])
def test_bytes_that_are_not_the_protocol_are_refused(garbage: bytes) -> None:
    with pytest.raises(WireProtocolError):
        parse(garbage)


def test_a_message_over_the_servers_max_payload_is_refused() -> None:
    with pytest.raises(WireProtocolError, match="out of range"):
        parse(b'INFO {"max_payload":4}\r\n', msg(b"a", b"1", b"", b"12345"))


def test_an_endless_control_line_is_refused() -> None:
    with pytest.raises(WireProtocolError, match="control line"):
        parse(b"MSG " + b"x" * 70_000)


def test_status_lines_and_headers_are_read() -> None:
    assert status_of(b"NATS/1.0 503\r\n\r\n") == ("503", "")
    assert status_of(b"NATS/1.0 100 Idle Heartbeat\r\n\r\n") == ("100", "Idle Heartbeat")
    assert status_of(HEADERS) is None
    assert status_of(None) is None
    assert parse_headers(HEADERS) == {"Nats-Msg-Id": "u-1", "Nats-Expected-Stream":
                                      "LEDGER_USAGE"}


def test_the_stream_sequence_comes_from_either_form_of_ack_subject() -> None:
    assert stream_sequence(ACK_SUBJECT) == 417
    with_domain = b"$JS.ACK.hub.ACCHASH.LEDGER_USAGE.p3.1.418.52.1764000000000000000.9"
    assert stream_sequence(with_domain) == 418
    assert stream_sequence(with_domain + b".r4nd0m") == 418
    for bad in (b"_INBOX.x.1", b"$JS.ACK.S.C.1.2", b""):
        with pytest.raises(ValueError, match="not a JetStream ack subject"):
            stream_sequence(bad)


def test_frames_we_send_carry_exact_sizes() -> None:
    block = header_block({"Nats-Msg-Id": "u-1", "Nats-Expected-Stream": "LEDGER_USAGE"})
    assert block == b"NATS/1.0\r\nNats-Msg-Id: u-1\r\nNats-Expected-Stream: LEDGER_USAGE\r\n\r\n"
    frame = hpub_frame(b"ledger.usage.v1.a", b"_INBOX.x.1", block, b"{}")
    assert frame == (b"HPUB ledger.usage.v1.a _INBOX.x.1 %d %d\r\n" % (len(block),
                                                                    len(block) + 2)
                     + block + b"{}\r\n")
    assert pub_frame(b"s", b"", b"abc") == b"PUB s 3\r\nabc\r\n"
    assert ack_frame(b"$JS.ACK.x") == b"PUB $JS.ACK.x 0\r\n\r\n"
    assert term_frame(b"$JS.ACK.x") == b"PUB $JS.ACK.x 5\r\n+TERM\r\n"
    assert nak_frame(b"r") == b"PUB r 4\r\n-NAK\r\n"
    assert nak_frame(b"r", 2.0) == b'PUB r 26\r\n-NAK {"delay": 2000000000}\r\n'
    with pytest.raises(ValueError, match="one line"):
        header_block({"Nats-Msg-Id": "evil\r\nNats-Expected-Stream: other"})


class RecordingTransport(asyncio.Transport):
    """The socket side of a WireConnection: keeps what was written; closing it tells the
    protocol, as asyncio's own transports do."""

    def __init__(self, protocol: WireConnection) -> None:
        super().__init__()
        self.protocol = protocol
        self.written = bytearray()
        self.closed = False

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        pass

    def write(self, data: bytes | bytearray | memoryview) -> None:
        self.written += data

    def close(self) -> None:
        self.abort()

    def abort(self) -> None:
        if not self.closed:
            self.closed = True
            self.protocol.connection_lost(None)


async def connected() -> tuple[WireConnection, RecordingTransport]:
    connection = WireConnection("nats://127.0.0.1:1", "test")
    transport = RecordingTransport(connection)
    connection.connection_made(transport)
    return connection, transport


async def test_a_server_ping_is_answered_with_a_pong() -> None:
    connection, transport = await connected()
    connection.data_received(b"PI")
    connection.data_received(b"NG\r\n")
    assert bytes(transport.written) == b"PONG\r\n"
    assert not connection.is_closed


async def test_a_server_error_closes_the_connection_with_its_words() -> None:
    connection, transport = await connected()
    connection.data_received(b"-ERR 'Authorization Violation'\r\n")
    assert transport.closed and connection.is_closed
    with pytest.raises(WireServerError, match="Authorization Violation"):
        connection.write(b"PING\r\n")
    with pytest.raises(WireConnectionLost):
        await connection.flush(0.1)


async def test_a_permissions_error_leaves_the_connection_open() -> None:
    connection, transport = await connected()
    connection.data_received(b"-ERR 'Permissions Violation for Subscription to \"x\"'\r\n")
    assert not connection.is_closed and not transport.closed


async def test_garbage_from_the_server_closes_the_connection() -> None:
    connection, transport = await connected()
    closed: list[bool] = []
    connection.on_close(lambda: closed.append(True))
    connection.data_received(b"HELLO\r\n")
    assert transport.closed and closed == [True]
    with pytest.raises(WireConnectionLost, match="unknown protocol operation"):
        connection.write(b"PING\r\n")


async def test_messages_reach_their_subscription_only() -> None:
    connection, transport = await connected()
    got: list[WireMsg] = []
    sid = connection.subscribe("a.*", got.append)
    assert bytes(transport.written) == b"SUB a.* %b\r\n" % sid
    connection.data_received(msg(b"a.1", sid, b"", b"one") + msg(b"b.1", b"999", b"", b"x"))
    assert [(m.subject, m.data) for m in got] == [("a.1", b"one")]
    connection.unsubscribe(sid)
    connection.data_received(msg(b"a.2", sid, b"", b"two"))
    assert len(got) == 1


def test_credentials_in_the_url_go_into_connect() -> None:
    with_user = connect_options("nats://alice:s%40cret@host:4222", "me")
    assert (with_user["user"], with_user["pass"]) == ("alice", "s@cret")
    assert with_user["headers"] is True and with_user["no_responders"] is True
    assert with_user["verbose"] is False and with_user["name"] == "me"
    assert connect_options("nats://tok3n@host:4222", "me")["auth_token"] == "tok3n"
    bare = connect_options("nats://host:4222", "me")
    assert not {"user", "pass", "auth_token"} & set(bare)
