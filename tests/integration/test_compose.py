"""compose.yaml parses and describes the deployment the docs promise.

There is no Docker engine (nor compose plugin) on the build machine, so this is a structural
check of the YAML and of the NATS config it mounts; where `docker compose` exists, run
`docker compose config -q` too (see docs/ingestion.md).
"""

from __future__ import annotations

import re
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from adapters.cli.main import build_parser
from tests.integration.support import REPO_ROOT

NATS_NODES = ("nats1", "nats2", "nats3")


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load((REPO_ROOT / "compose.yaml").read_text())
    return loaded


def ledger_services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {name: s for name, s in compose["services"].items() if name.startswith("ledger-")}


def test_compose_runs_postgres_a_three_node_nats_cluster_and_the_ledger_processes(
        compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    for node in NATS_NODES:
        assert services[node]["image"].startswith("nats:")
        assert services[node]["environment"]["NATS_SERVER_NAME"] == node
        assert any(v.endswith(":/data") for v in services[node]["volumes"])
    consumers = [s for s in ledger_services(compose).values() if s["command"][0] == "consume"]
    assert len(consumers) >= 2
    members = sorted(int(c["command"][c["command"].index("--member") + 1]) for c in consumers)
    assert members == list(range(len(consumers)))
    assert all(c["command"][c["command"].index("--members") + 1] == str(len(consumers))
               for c in consumers)
    commands = {s["command"][0] for s in ledger_services(compose).values()}
    assert {"init", "consume", "project", "serve"} <= commands
    assert consumers[0]["environment"]["LEDGER_USAGE_REPLICAS"] == "3"
    assert all(f"@{node}:4222" in consumers[0]["environment"]["LEDGER_NATS_URL"]
               for node in NATS_NODES)


def test_every_long_running_service_has_a_health_check(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        if name in ("ledger-init", "ledger-tools"):
            continue
        check = service.get("healthcheck")
        assert check and check["test"], f"{name} has no health check"


def test_ledger_processes_wait_for_healthy_engines_and_the_init_step(
        compose: dict[str, Any]) -> None:
    for name, service in ledger_services(compose).items():
        depends = service["depends_on"]
        for engine in ("postgres", *NATS_NODES):
            assert depends[engine]["condition"] == "service_healthy", name
        if name != "ledger-init":
            assert depends["ledger-init"]["condition"] == "service_completed_successfully"


def test_compose_commands_are_ledger_subcommands(compose: dict[str, Any]) -> None:
    parser = build_parser()
    for name, service in ledger_services(compose).items():
        if "api" in service.get("profiles", []):
            continue  # `ledger serve` lands with the HTTP API; it is under a profile until then
        if service["command"] == ["--help"]:
            continue
        args = parser.parse_args(service["command"])
        assert args.command == service["command"][0], name
    health = compose["services"]["ledger-consumer-1"]["healthcheck"]["test"]
    assert parser.parse_args(health[2:]).command == "health"


def test_nats_nodes_form_one_cluster_with_synced_jetstream_writes() -> None:
    conf = (REPO_ROOT / "deploy" / "nats" / "nats.conf").read_text()
    assert re.search(r"sync_interval:\s*always", conf)
    assert re.search(r"store_dir:\s*/data/jetstream", conf)
    for node in NATS_NODES:
        assert f"nats://{node}:6222" in conf
    assert "server_name: $NATS_SERVER_NAME" in conf


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_accepts_the_file() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin")
    result = subprocess.run(["docker", "compose", "config", "-q"], cwd=REPO_ROOT,
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_compose_servers_require_credentials_and_producers_publish_only_usage(
        compose: dict[str, Any]) -> None:
    environment = ledger_services(compose)["ledger-consumer-1"]["environment"]
    assert all(url.startswith("nats://ledger:${LEDGER_NATS_PASSWORD")
               for url in environment["LEDGER_NATS_URL"].split(","))
    assert all(url.startswith("nats://producer:${PRODUCER_NATS_PASSWORD")
               for url in environment["LEDGER_PRODUCER_NATS_URL"].split(","))
    assert "${LEDGER_POSTGRES_PASSWORD" in environment["LEDGER_DATABASE_URL"]
    postgres = compose["services"]["postgres"]["environment"]
    assert postgres["POSTGRES_PASSWORD"].startswith("${LEDGER_POSTGRES_PASSWORD:?")
    assert "scram-sha-256" in postgres["POSTGRES_INITDB_ARGS"]
    for node in NATS_NODES:
        assert compose["services"][node]["environment"]["LEDGER_NATS_PASSWORD"]
    conf = (REPO_ROOT / "deploy" / "nats" / "nats.conf").read_text()
    assert "password: $LEDGER_NATS_PASSWORD" in conf
    assert "password: $PRODUCER_NATS_PASSWORD" in conf
    producer = conf[conf.index("user: producer"):]
    assert re.search(r'publish: \{ allow: \["ledger\.usage\.v1\.\*"\] \}', producer)
