"""Adapters: one package per outside system the ledger talks to (see README "Layout").

- `postgres/`: the event store recorder, the read-model store and log reader, the auditor's SQL.
- `nats/`: the usage bus contract, streams, publisher, consumer, the views publisher.
- `http/`: the FastAPI app (API, auth, problems, metrics) and the dashboard.
- `cli/`: the `ledger` command line, one module per group of subcommands.
- `runtime/`: settings, the composition root, the embedded servers and the runners of `ledger up`.
- `memory/`: room for in-memory stand-ins of the PostgreSQL stores (empty today: the in-memory
  event recorder sits with the keyed recording in `services/`).

Import contracts in pyproject.toml keep the direction: postgres/, nats/ and memory/ import no
entry point (http/, cli/) and no composition root (runtime/); http/ does not import cli/.
"""
