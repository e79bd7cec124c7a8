"""A decentralised-auth (operator mode) chain for tests: operator, account and user JWTs signed
with NKEYs, and the user's `.creds` file.

No maintained Python package issues NATS JWTs (the official issuers are Go's `nsc` and the
JavaScript `@nats-io/jwt`); the signing is done by the official `nkeys` package, and a NATS JWT
is otherwise a plain JWS: base64url(header).base64url(claims).base64url(ed25519 signature), with
`alg` "ed25519-nkey" and the claims `jti` (base32 of the SHA-512/256 of the claims without
it), `iat`, `iss`, `sub`, `name` and `nats` (the type, version 2, and the limits). The server
checks each signature against the issuer above it, which is what the test relies on.
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys

UNLIMITED = -1
JWT_HEADER = {"typ": "JWT", "alg": "ed25519-nkey"}


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


@dataclass(frozen=True)
class Identity:
    seed: bytes
    public_key: str

    @classmethod
    def new(cls, prefix: int) -> Identity:
        seed = nkeys.encode_seed(os.urandom(32), prefix)
        return cls(seed, nkeys.from_seed(bytearray(seed)).public_key.decode())

    def sign_jwt(self, subject: str, name: str, nats: dict[str, Any]) -> str:
        claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": self.public_key,
                                  "name": name, "sub": subject, "nats": {**nats, "version": 2}}
        digest = hashlib.new("sha512_256", json.dumps(claims).encode()).digest()
        claims["jti"] = base64.b32encode(digest).decode().rstrip("=")
        header, body = json.dumps(JWT_HEADER).encode(), json.dumps(claims).encode()
        signing_input = f"{_b64(header)}.{_b64(body)}"
        signature = nkeys.from_seed(bytearray(self.seed)).sign(signing_input.encode())
        return f"{signing_input}.{_b64(signature)}"


@dataclass(frozen=True)
class OperatorChain:
    """What a server in operator mode needs (its config) and what a client presents (creds)."""

    server_config: str
    creds: str


def operator_chain() -> OperatorChain:
    operator = Identity.new(nkeys.PREFIX_BYTE_OPERATOR)
    account = Identity.new(nkeys.PREFIX_BYTE_ACCOUNT)
    user = Identity.new(nkeys.PREFIX_BYTE_USER)
    operator_jwt = operator.sign_jwt(operator.public_key, "ledger-test-operator",
                                     {"type": "operator"})
    account_jwt = operator.sign_jwt(account.public_key, "ledger-test-account", {
        "type": "account",
        "limits": {"subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED,
                   "imports": UNLIMITED, "exports": UNLIMITED, "wildcards": True,
                   "conn": UNLIMITED, "leaf": UNLIMITED}})
    user_jwt = account.sign_jwt(user.public_key, "ledger", {
        "type": "user", "pub": {}, "sub": {},
        "subs": UNLIMITED, "data": UNLIMITED, "payload": UNLIMITED})
    server_config = (f"operator: {operator_jwt}\nresolver: MEMORY\n"
                     f"resolver_preload: {{ {account.public_key}: {account_jwt} }}\n")
    creds = ("-----BEGIN NATS USER JWT-----\n" f"{user_jwt}\n" "------END NATS USER JWT------\n\n"
             "-----BEGIN USER NKEY SEED-----\n" f"{user.seed.decode()}\n"
             "------END USER NKEY SEED------\n")
    return OperatorChain(server_config, creds)


def write_creds(path: Path, creds: str) -> Path:
    path.write_text(creds)
    path.chmod(0o600)
    return path
