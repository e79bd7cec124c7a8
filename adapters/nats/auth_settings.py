"""How the ledger proves who it is to NATS: the auth settings, checked at start.

LEDGER_NATS_URL may carry `user:password@` or a `token@` itself (as before). Besides it, each of
these selects one way to authenticate, all through nats-py's own `connect()` options:

LEDGER_NATS_USER, LEDGER_NATS_PASSWORD  user and password (both, or neither)
LEDGER_NATS_TOKEN           a token (the server's `authorization { token: ... }`)
LEDGER_NATS_NKEY_SEED_FILE  a file holding an NKEY user seed (`SU...`): the server's nonce is
                            signed with it (server `authorization { users: [{nkey: U...}] }`)
LEDGER_NATS_CREDS_FILE      a JWT `.creds` file (decentralised auth, operator mode: the user
                            JWT and its NKEY seed, as `nsc` writes them)
LEDGER_NATS_TLS_CA_FILE     CA bundle that signed the server's certificate (else the system
                            trust store; `SSL_CERT_FILE` honoured)
LEDGER_NATS_TLS_CERT_FILE, LEDGER_NATS_TLS_KEY_FILE  a client certificate and its key, for a
                            server that verifies clients (`tls { verify: true }`), with or
                            without `verify_and_map` (the certificate is then the identity)

At most one of user/password, token, NKEY seed and creds file may be set (the server accepts one
identity per connection); TLS combines with any of them. A file that is missing or unreadable is
refused at start, naming the variable.
"""

from __future__ import annotations

import os
import ssl
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from adapters.runtime.settings import ConfigurationError

# An NKEY seed or a .creds file is a few hundred bytes; anything far bigger is not one.
CREDENTIAL_FILE_BYTES_MAX = 64 * 1024
SECRET_LENGTH_MAX = 4096

ENV_USER = "LEDGER_NATS_USER"
ENV_PASSWORD = "LEDGER_NATS_PASSWORD"
ENV_TOKEN = "LEDGER_NATS_TOKEN"
ENV_NKEY_SEED_FILE = "LEDGER_NATS_NKEY_SEED_FILE"
ENV_CREDS_FILE = "LEDGER_NATS_CREDS_FILE"
ENV_TLS_CA_FILE = "LEDGER_NATS_TLS_CA_FILE"
ENV_TLS_CERT_FILE = "LEDGER_NATS_TLS_CERT_FILE"
ENV_TLS_KEY_FILE = "LEDGER_NATS_TLS_KEY_FILE"


def _file(env: Mapping[str, str], name: str) -> Path | None:
    value = env.get(name) or None
    if value is None:
        return None
    path = Path(value)
    try:
        size = path.stat().st_size
        with path.open("rb"):
            pass
    except OSError as error:
        raise ConfigurationError(f"{name}={value!r} cannot be read ({error.strerror}); "
                                 "point it at an existing, readable file") from None
    if not path.is_file() or size > CREDENTIAL_FILE_BYTES_MAX:
        raise ConfigurationError(f"{name}={value!r} must be a regular file of at most "
                                 f"{CREDENTIAL_FILE_BYTES_MAX} bytes")
    return path


def _secret(env: Mapping[str, str], name: str) -> str | None:
    value = env.get(name) or None
    if value is not None and (len(value) > SECRET_LENGTH_MAX or not value.isprintable()):
        raise ConfigurationError(f"{name} must be printable and at most {SECRET_LENGTH_MAX} "
                                 "characters")
    return value


@dataclass(frozen=True)
class NatsAuthSettings:
    user: str | None = None
    password: str | None = None
    token: str | None = None
    nkey_seed_file: Path | None = None
    creds_file: Path | None = None
    tls_ca_file: Path | None = None
    tls_cert_file: Path | None = None
    tls_key_file: Path | None = None

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> NatsAuthSettings:
        env = os.environ if env is None else env
        settings = cls(user=_secret(env, ENV_USER), password=_secret(env, ENV_PASSWORD),
                       token=_secret(env, ENV_TOKEN),
                       nkey_seed_file=_file(env, ENV_NKEY_SEED_FILE),
                       creds_file=_file(env, ENV_CREDS_FILE),
                       tls_ca_file=_file(env, ENV_TLS_CA_FILE),
                       tls_cert_file=_file(env, ENV_TLS_CERT_FILE),
                       tls_key_file=_file(env, ENV_TLS_KEY_FILE))
        settings.check()
        return settings

    def check(self) -> None:
        if (self.user is None) != (self.password is None):
            raise ConfigurationError(f"set both {ENV_USER} and {ENV_PASSWORD}, or neither")
        if len(self.identities()) > 1:
            raise ConfigurationError(f"set only one of {', '.join(self.identities())}: a NATS "
                                     "connection authenticates one way")
        if (self.tls_cert_file is None) != (self.tls_key_file is None):
            raise ConfigurationError(f"set both {ENV_TLS_CERT_FILE} and {ENV_TLS_KEY_FILE} "
                                     "(a client certificate and its key), or neither")

    def identities(self) -> list[str]:
        """The environment names of the identity settings in use."""
        names = []
        if self.user is not None:
            names.append(f"{ENV_USER}/{ENV_PASSWORD}")
        if self.token is not None:
            names.append(ENV_TOKEN)
        if self.nkey_seed_file is not None:
            names.append(ENV_NKEY_SEED_FILE)
        if self.creds_file is not None:
            names.append(ENV_CREDS_FILE)
        return names

    def tls_settings(self) -> list[str]:
        names = []
        if self.tls_ca_file is not None:
            names.append(ENV_TLS_CA_FILE)
        if self.tls_cert_file is not None:
            names += [ENV_TLS_CERT_FILE, ENV_TLS_KEY_FILE]
        return names

    def tls_context(self) -> ssl.SSLContext | None:
        if not self.tls_settings():
            return None
        context = ssl.create_default_context(
            cafile=str(self.tls_ca_file) if self.tls_ca_file else None)
        if self.tls_cert_file is not None and self.tls_key_file is not None:
            try:
                context.load_cert_chain(str(self.tls_cert_file), str(self.tls_key_file))
            except ssl.SSLError as error:
                raise ConfigurationError(
                    f"{ENV_TLS_CERT_FILE} and {ENV_TLS_KEY_FILE} are not a matching PEM "
                    f"certificate and key ({error.reason or error})") from None
        return context

    def connect_options(self) -> dict[str, Any]:
        """nats-py `Client.connect()` keyword arguments for these settings."""
        options: dict[str, Any] = {}
        if self.user is not None:
            options.update(user=self.user, password=self.password)
        if self.token is not None:
            options["token"] = self.token
        if self.nkey_seed_file is not None:
            options["nkeys_seed"] = str(self.nkey_seed_file)
        if self.creds_file is not None:
            options["user_credentials"] = str(self.creds_file)
        context = self.tls_context()
        if context is not None:
            options["tls"] = context
        return options

    def described(self) -> str:
        """Which settings the connection used, for an error message (never their values)."""
        names = self.identities() + self.tls_settings()
        return ", ".join(names) if names else "the user and password in LEDGER_NATS_URL"
