"""The NATS client protocol as bytes: a frame parser for what the server sends, and frame builders.

Why our own: nats-py turns every delivered message into an object, a header dict and a queued
callback task; profiled, that was ~60 us of the consumer's ~140 us per usage message, and its
per-message `ack()` another ~30 us. Usage ingestion needs much less: the subject, the reply
subject (JetStream's ack address, which also carries the stream sequence), the data, and the
headers only of status messages. This module does just that, and `adapters.nats.wire_client` puts it
on a socket. nats-py stays for everything that is not per message (stream and consumer setup,
rejected-subject publishes, the version check).

Protocol reference: docs.nats.io, "Client protocol". What the server sends, one per line:

    MSG <subject> <sid> [reply-to] <#bytes>\\r\\n<payload>\\r\\n
    HMSG <subject> <sid> [reply-to] <#header bytes> <#total bytes>\\r\\n<headers><payload>\\r\\n
    PING, PONG, +OK, -ERR '<text>', INFO {json}

The header block starts `NATS/1.0` (optionally followed by a status code and description, e.g.
`NATS/1.0 503` when no stream answered a publish, `NATS/1.0 100 Idle Heartbeat`) and ends with an
empty line; its length is counted in both sizes.

The parser keeps unparsed bytes as a list of chunks and joins them only once enough has arrived
for the frame it waits for: a payload split over many reads costs one join, not one copy per
read, and slicing the joined `bytes` gives each payload in one copy.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

CRLF = b"\r\n"
# A control line (everything up to a payload) longer than this is not NATS talking: refuse it
# rather than buffer without bound. INFO with a long list of cluster URLs is the longest one.
CONTROL_LINE_BYTES_MAX = 64 * 1024
# Until INFO says otherwise: NATS's default max_payload.
PAYLOAD_BYTES_MAX_DEFAULT = 1024 * 1024
HEADER_VERSION_LINE = b"NATS/1.0"
ERROR_TEXT_LENGTH_MAX = 500

PING_FRAME = b"PING\r\n"
PONG_FRAME = b"PONG\r\n"
# JetStream acknowledgement bodies (ADR-15): an empty body is an ack, like "+ACK".
ACK_BODY = b""
TERM_BODY = b"+TERM"
NAK_BODY = b"-NAK"
NANOS_PER_SECOND = 1_000_000_000


class WireProtocolError(Exception):
    """The bytes from the server are not the NATS protocol (a bug, or not a NATS server)."""


class WireMsg:
    """One delivered message: what the hot paths need, nothing parsed that they do not."""

    __slots__ = ("data", "headers", "reply", "subject")

    def __init__(self, subject: str, reply: bytes, headers: bytes | None, data: bytes) -> None:
        self.subject = subject
        self.reply = reply  # bytes: acks are written back on it as they are
        self.headers = headers  # the raw header block, or None for a MSG frame
        self.data = data

    def __repr__(self) -> str:
        return (f"WireMsg(subject={self.subject!r}, reply={self.reply!r}, "
                f"headers={self.headers!r}, data={self.data[:64]!r})")


class FrameHandler(Protocol):
    def on_msg(self, sid: bytes, msg: WireMsg) -> None: ...
    def on_ping(self) -> None: ...
    def on_pong(self) -> None: ...
    def on_ok(self) -> None: ...
    def on_err(self, text: str) -> None: ...
    def on_info(self, info: dict[str, Any]) -> None: ...


class WireParser:
    """Feed it whatever the socket read; it calls the handler once per complete frame."""

    def __init__(self, handler: FrameHandler) -> None:
        self.handler = handler
        self.payload_bytes_max = PAYLOAD_BYTES_MAX_DEFAULT
        self._chunks: list[bytes] = []
        self._buffered = 0
        self._needed = 0  # bytes the unparsed rest must reach before parsing is worth trying

    def feed(self, data: bytes) -> None:
        if self._chunks:
            self._chunks.append(data)
            self._buffered += len(data)
            if self._buffered < self._needed:
                return
            data = b"".join(self._chunks)
            self._chunks = []
            self._buffered = 0
        pos = self._parse(data)
        if pos < len(data):
            rest = data[pos:] if pos else data
            self._chunks = [rest]
            self._buffered = len(rest)

    def _parse(self, buf: bytes) -> int:
        """Parse complete frames from the start of `buf`; return where the unparsed rest starts
        (and set `_needed` for it)."""
        on_msg = self.handler.on_msg
        size = len(buf)
        pos = 0
        while pos < size:
            eol = buf.find(CRLF, pos)
            if eol < 0:
                if size - pos > CONTROL_LINE_BYTES_MAX:
                    raise WireProtocolError(f"a control line longer than {CONTROL_LINE_BYTES_MAX}"
                                            f" bytes: {buf[pos:pos + 40]!r}")
                self._needed = size - pos + 1
                return pos
            if buf.startswith(b"MSG ", pos):
                with_headers = False
            elif buf.startswith(b"HMSG ", pos):
                with_headers = True
            else:
                head = buf[pos:pos + 5].upper()
                if head.startswith(b"MSG "):
                    with_headers = False
                elif head == b"HMSG ":
                    with_headers = True
                else:
                    self._control(buf[pos:eol])
                    pos = eol + 2
                    continue
            args = buf[pos + (5 if with_headers else 4):eol].split()
            header_size, total, subject, sid, reply = self._msg_args(args, with_headers,
                                                                    buf[pos:eol])
            start = eol + 2
            stop = start + total
            if stop + 2 > size:
                self._needed = stop + 2 - pos
                return pos
            if buf[stop:stop + 2] != CRLF:
                raise WireProtocolError(f"payload of {total} bytes not followed by CRLF: "
                                        f"{buf[pos:eol]!r}")
            if header_size:
                msg = WireMsg(subject.decode("utf-8", "replace"), reply,
                              buf[start:start + header_size], buf[start + header_size:stop])
            else:
                msg = WireMsg(subject.decode("utf-8", "replace"), reply, None, buf[start:stop])
            pos = stop + 2
            on_msg(sid, msg)
        self._needed = 0
        return pos

    def _msg_args(self, args: list[bytes], with_headers: bool, line: bytes
                  ) -> tuple[int, int, bytes, bytes, bytes]:
        """(header bytes, total bytes, subject, sid, reply) of a MSG or HMSG control line."""
        try:
            if with_headers:
                if len(args) == 5:
                    subject, sid, reply, header_raw, total_raw = args
                elif len(args) == 4:
                    subject, sid, header_raw, total_raw = args
                    reply = b""
                else:
                    raise ValueError("HMSG takes 4 or 5 arguments")
                header_size, total = int(header_raw), int(total_raw)
            else:
                if len(args) == 4:
                    subject, sid, reply, total_raw = args
                elif len(args) == 3:
                    subject, sid, total_raw = args
                    reply = b""
                else:
                    raise ValueError("MSG takes 3 or 4 arguments")
                header_size, total = 0, int(total_raw)
        except ValueError as error:
            raise WireProtocolError(f"malformed message line {line[:200]!r}: {error}") from None
        if not 0 <= header_size <= total <= self.payload_bytes_max:
            raise WireProtocolError(f"message sizes out of range in {line[:200]!r}")
        return header_size, total, subject, sid, reply

    def _control(self, line: bytes) -> None:
        head = line[:4].upper()
        if head == b"PING":
            self.handler.on_ping()
        elif head == b"PONG":
            self.handler.on_pong()
        elif head == b"+OK":
            self.handler.on_ok()
        elif head == b"-ERR":
            text = line[4:].strip().strip(b"'").decode("utf-8", "replace")
            self.handler.on_err(text[:ERROR_TEXT_LENGTH_MAX])
        elif head == b"INFO":
            try:
                info = json.loads(line[4:])
            except ValueError as error:
                raise WireProtocolError(f"INFO is not JSON: {error}") from None
            if isinstance(info.get("max_payload"), int) and info["max_payload"] > 0:
                self.payload_bytes_max = info["max_payload"]
            self.handler.on_info(info)
        elif line:
            raise WireProtocolError(f"unknown protocol operation {line[:40]!r}")


# Frames we send ----------------------------------------------------------------------------

def pub_frame(subject: bytes, reply: bytes, payload: bytes) -> bytes:
    if reply:
        return b"PUB %b %b %d\r\n%b\r\n" % (subject, reply, len(payload), payload)
    return b"PUB %b %d\r\n%b\r\n" % (subject, len(payload), payload)


def hpub_frame(subject: bytes, reply: bytes, header_block: bytes, payload: bytes) -> bytes:
    """`header_block` as `header_block()` makes it (version line to the empty line)."""
    total = len(header_block) + len(payload)
    if reply:
        return b"HPUB %b %b %d %d\r\n%b%b\r\n" % (subject, reply, len(header_block), total,
                                                  header_block, payload)
    return b"HPUB %b %d %d\r\n%b%b\r\n" % (subject, len(header_block), total, header_block,
                                           payload)


def header_block(headers: dict[str, str]) -> bytes:
    """`NATS/1.0`, one `Name: value` line per header, an empty line. Values are single lines."""
    lines = [HEADER_VERSION_LINE]
    for name, value in headers.items():
        if "\r" in value or "\n" in value or "\r" in name or "\n" in name or ":" in name:
            raise ValueError(f"header {name!r} must be one line (name without ':')")
        lines.append(f"{name}: {value}".encode())
    return CRLF.join(lines) + CRLF + CRLF


def sub_frame(subject: bytes, sid: bytes) -> bytes:
    return b"SUB %b %b\r\n" % (subject, sid)


def unsub_frame(sid: bytes) -> bytes:
    return b"UNSUB %b\r\n" % sid


def ack_frame(reply: bytes) -> bytes:
    """A JetStream ack: an empty publish to the message's reply subject."""
    return b"PUB %b 0\r\n\r\n" % reply


def term_frame(reply: bytes) -> bytes:
    return b"PUB %b 5\r\n+TERM\r\n" % reply


def nak_frame(reply: bytes, delay_seconds: float = 0.0) -> bytes:
    """Deliver again, at once or after `delay_seconds`."""
    if delay_seconds <= 0:
        return pub_frame(reply, b"", NAK_BODY)
    body = NAK_BODY + b' {"delay": %d}' % int(delay_seconds * NANOS_PER_SECOND)
    return pub_frame(reply, b"", body)


def connect_frame(options: dict[str, Any]) -> bytes:
    return b"CONNECT " + json.dumps(options, separators=(",", ":")).encode() + CRLF


# Reading what arrives ----------------------------------------------------------------------

def status_of(headers: bytes | None) -> tuple[str, str] | None:
    """(code, description) of a status message (`NATS/1.0 503`, `NATS/1.0 408 Request
    Timeout`), or None for ordinary headers."""
    if headers is None:
        return None
    end = headers.find(CRLF)
    first = headers[:end] if end >= 0 else headers
    if len(first) < len(HEADER_VERSION_LINE) + 4 or not first.startswith(HEADER_VERSION_LINE):
        return None
    code, _, description = first[len(HEADER_VERSION_LINE):].strip().partition(b" ")
    if len(code) != 3 or not code.isdigit():
        return None
    return code.decode(), description.strip().decode("utf-8", "replace")


def parse_headers(headers: bytes) -> dict[str, str]:
    """`Name: value` lines after the version line (the last of a repeated name wins)."""
    out: dict[str, str] = {}
    for line in headers.split(CRLF)[1:]:
        name, sep, value = line.partition(b":")
        if sep and name.strip():
            out[name.strip().decode("utf-8", "replace")] = value.strip().decode("utf-8",
                                                                                "replace")
    return out


# JetStream's ack subjects: $JS.ACK.<stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>
# and, from servers with domains or account hashes (ADR-15), $JS.ACK.<domain>.<account hash>.
# <stream>.<consumer>.<delivered>.<sseq>.<cseq>.<ts>.<pending>[.<random token>].
_ACK_TOKENS_V1 = 9
_ACK_TOKENS_V2_MIN = 11
_STREAM_SEQUENCE_V1 = 5
_STREAM_SEQUENCE_V2 = 7


def stream_sequence(reply: bytes) -> int:
    """The stream sequence of a JetStream delivery, from its reply (ack) subject."""
    tokens = reply.split(b".")
    if len(tokens) >= 2 and tokens[0] == b"$JS" and tokens[1] == b"ACK":
        if len(tokens) == _ACK_TOKENS_V1:
            return int(tokens[_STREAM_SEQUENCE_V1])
        if len(tokens) >= _ACK_TOKENS_V2_MIN:
            return int(tokens[_STREAM_SEQUENCE_V2])
    raise ValueError(f"not a JetStream ack subject: {reply[:200]!r}")
