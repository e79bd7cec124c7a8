"""Use cases: the `Ledger` application (services/ledger.py), its commands by subject
(services/commands/), usage recording (services/usage/), and the one seam into the eventsourcing
library's internals (services/eventsourcing_seam.py). docs/core.md has the file-by-file map."""
