"""The ledger's commands, one module per subject, mixed into the one `Ledger` application.

| module        | commands                                                               |
| ------------- | ---------------------------------------------------------------------- |
| `teams.py`    | register a team; add, re-role, remove members; suspend, reactivate      |
| `accounts.py` | packages and their versions; open accounts; assign a package or holder; |
|               | suspend, reactivate, close accounts                                     |
| `money.py`    | top-ups and refunds, adjustments, credit limit, low-balance threshold,  |
|               | Stripe customer link                                                    |
| `invoices.py` | draft, finalize, mark paid, void, credit notes                          |

Usage recording is its own package (`services.usage`); `Ledger` (services/ledger.py) wires it in.

Why mixins: `Ledger` must stay ONE eventsourcing `Application`, so that every aggregate shares
one notification log (projections read one totally ordered history) and a command touching two
aggregates saves both atomically. The mixins only split its methods by subject.

How to add a subject (e.g. `payments.py`):

1. Write `class PaymentCommands:` in `services/commands/payments.py`. Annotate `self` in every
   method as `LedgerCore` (`services.commands.ledger_core`: loading, `authorize`, `exists`,
   `_run`, `_team_command`, `clock`, `usage`); that is all a command may use from the
   application, and it keeps the module type-checked on its own under mypy strict.
2. A command validates its plain inputs, then either calls `self._team_command(team_id, actor,
   Action.X, idempotency_key, "name", {arguments}, apply)` with `apply(team)` calling the
   aggregate, or builds its own `attempt()` returning `Attempt([aggregates...], result)` and
   runs it with `self._run(...)` (see `services.command_runs` for keys, retries and scopes).
   Helpers shared only inside the module are module-level functions taking `ledger: LedgerCore`.
3. Add the class to `Ledger`'s bases in services/ledger.py and to the table above.
"""
