"""Many writers on one team: every command lands once or fails with a domain error, none gives up.

Contention on one team is the normal case for admin commands (a dashboard, a billing job and the
Stripe webhook all act on the same team). Here 16 threads share four Ledger applications (four
connection pools and four in-process command locks, as four processes would have) and send 500
commands, each twice with its idempotency key, the retry through another application.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass
from typing import Any
from uuid import UUID

import psycopg

from adapters.runtime.settings import eventsourcing_env
from domain.errors import ConcurrentUpdateError, LedgerError
from domain.money import minor_units_to_nanos
from services.actor import Actor
from services.ledger import Ledger
from tests.services.support import OWNER

THREADS = 16
APPLICATIONS = 4
COMMANDS = 500
JOIN_SECONDS_MAX = 240
STRIPE = Actor.system("stripe-webhook")


@dataclass(frozen=True)
class Sent:
    kind: str
    key: str
    arguments: dict[str, Any]


def _commands(team_id: UUID) -> list[Sent]:
    rng = random.Random(8)  # a reproducible mix
    sent = []
    for n in range(COMMANDS):
        kind = ("adjustment", "top_up", "credit_limit", "add_member", "remove_member")[n % 5]
        if kind == "adjustment":
            # Commands 0, 25, 50... are out-of-range adjustments: a domain error, never an effect.
            amount = 10**22 if n % 25 == 0 else rng.randint(-5_000, 5_000) * 1_000_000
            arguments = {"adjustment_id": f"adj-{n}", "amount_nanos": amount, "reason": "fix"}
        elif kind == "top_up":
            arguments = {"top_up_id": f"pi_{n}", "amount_minor": rng.randint(1, 10_000),
                         "currency": "USD"}
        elif kind == "credit_limit":
            arguments = {"credit_limit_nanos": rng.randint(0, 1_000) * 10**9}
        else:  # add or remove one of a few users: some are already there, some already gone
            arguments = {"user_id": f"user-{rng.randint(0, 7)}"}
        sent.append(Sent(kind, f"cmd-{n}", arguments))
    rng.shuffle(sent)
    return sent


def _send(ledger: Ledger, team_id: UUID, command: Sent) -> object:
    a = command.arguments
    if command.kind == "adjustment":
        return ledger.record_adjustment(team_id, a["adjustment_id"], a["amount_nanos"],
                                        a["reason"], OWNER, idempotency_key=command.key)
    if command.kind == "top_up":
        return ledger.credit_top_up(team_id, a["top_up_id"], a["amount_minor"], a["currency"],
                                    STRIPE, idempotency_key=command.key)
    if command.kind == "credit_limit":
        return ledger.set_credit_limit(team_id, a["credit_limit_nanos"], OWNER,
                                       idempotency_key=command.key)
    if command.kind == "add_member":
        return ledger.add_member(team_id, a["user_id"], "billing", OWNER,
                                 idempotency_key=command.key)
    return ledger.remove_member(team_id, a["user_id"], OWNER, idempotency_key=command.key)


def _outcome(ledger: Ledger, team_id: UUID, command: Sent) -> tuple[str, object]:
    try:
        return "ok", _send(ledger, team_id, command)
    except ConcurrentUpdateError as error:
        return "gave_up", error
    except LedgerError as error:
        return "domain_error", type(error).__name__


def test_sixteen_threads_on_one_team_each_command_once_none_gives_up(database_url: str) -> None:
    ledgers = [Ledger(env=eventsourcing_env(database_url)) for _ in range(APPLICATIONS)]
    try:
        team_id = ledgers[0].register_team(team_key="busy", name="Busy", currency="USD",
                                           timezone="UTC", actor=OWNER)
        commands = _commands(team_id)
        outcomes: dict[str, tuple[tuple[str, object], tuple[str, object]]] = {}
        unexpected: list[BaseException] = []
        next_command = iter(range(len(commands)))
        take = threading.Lock()

        def work(thread_number: int) -> None:
            first = ledgers[thread_number % APPLICATIONS]
            retry = ledgers[(thread_number + 1) % APPLICATIONS]
            try:
                while True:
                    with take:
                        index = next(next_command, None)
                    if index is None:
                        return
                    command = commands[index]
                    outcomes[command.key] = (_outcome(first, team_id, command),
                                             _outcome(retry, team_id, command))
            except BaseException as error:  # anything but a domain error fails the test
                unexpected.append(error)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(THREADS)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(JOIN_SECONDS_MAX)

        assert unexpected == []
        assert len(outcomes) == COMMANDS
        kinds = Counter(first[0] for first, _ in outcomes.values())
        assert kinds["gave_up"] == 0, [o for o in outcomes.values() if o[0][0] == "gave_up"]
        # A retried key that succeeded the first time answers the same, without a second effect.
        for first, again in outcomes.values():
            if first[0] == "ok":
                assert again == first

        by_key = {c.key: c for c in commands}
        accepted_nanos = 0
        accepted_money = Counter[str]()
        for key, (first, _) in outcomes.items():
            command = by_key[key]
            if first != ("ok", True):
                continue
            accepted_money[command.kind] += 1
            if command.kind == "adjustment":
                accepted_nanos += command.arguments["amount_nanos"]
            elif command.kind == "top_up":
                accepted_nanos += minor_units_to_nanos(command.arguments["amount_minor"], "USD")
        team = ledgers[1].get_team(team_id)
        balance = sum(team.top_ups.values()) + sum(team.adjustments.values())
        assert balance == accepted_nanos
        # Each money effect applied once: one event per accepted money command in the log.
        with psycopg.connect(database_url) as conn:
            rows = conn.execute("SELECT topic, count(*) FROM ledger_events WHERE originator_id "
                                "= %s GROUP BY topic", (team_id,)).fetchall()
        stored = {topic.rpartition(".")[2]: count for topic, count in rows}
        assert stored.get("AdjustmentRecorded", 0) == accepted_money["adjustment"]
        assert stored.get("TopUpCredited", 0) == accepted_money["top_up"]
        assert accepted_money["adjustment"] == 100 - 20  # adjustments 0, 25, 50... are refused
        assert accepted_money["top_up"] == 100
        retried = sum(ledger.commands.stats.conflicts_retried for ledger in ledgers)
        most = max(ledger.commands.stats.attempts_most for ledger in ledgers)
        print(f"conflicts retried across {APPLICATIONS} applications: {retried}; "
              f"most attempts for one command: {most}")
    finally:
        for ledger in ledgers:
            ledger.close()
