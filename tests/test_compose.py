"""The compose demo stack, validated without a Docker engine.

No Docker runs on this machine, so the compose file is checked for what `docker compose
config` would reject plus what would only fail at run time (a dependency without a
healthcheck, an environment variable the manifest reads but compose never sets, a COPY of
a path that does not exist), and the manifest is loaded with the compose environment. The
same topology is exercised with local processes in tests/test_compose_topology.py.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from gateway.manifest import load_manifest

COMPOSE = Path(__file__).resolve().parents[1] / "compose"
REPO = COMPOSE.parent


@pytest.fixture(scope="module")
def stack() -> dict[str, Any]:
    document: dict[str, Any] = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    return document


def _gateway_environment(stack: dict[str, Any]) -> dict[str, str]:
    env: dict[str, str] = stack["services"]["gateway"]["environment"]
    return env


def test_every_service_is_well_formed(stack: dict[str, Any]) -> None:
    services = stack["services"]
    assert {"gateway", "gateway-replica", "kafka", "nats", "rabbitmq", "redis",
            "postgres"} <= set(services)
    for name, service in services.items():
        assert "image" in service or "build" in service, f"{name}: no image or build"
        for dependency, condition in service.get("depends_on", {}).items():
            assert dependency in services, f"{name} depends on unknown {dependency}"
            assert condition == {"condition": "service_healthy"}
            # service_healthy never becomes true without a healthcheck.
            assert "healthcheck" in services[dependency], f"{dependency}: no healthcheck"
    for volume in services["gateway"].get("volumes", []):
        named = volume.split(":", 1)[0]
        assert named in stack.get("volumes", {}), f"undeclared volume {named}"


def test_the_image_builds_from_paths_that_exist(stack: dict[str, Any]) -> None:
    build = stack["services"]["gateway"]["build"]
    context = (COMPOSE / build["context"]).resolve()
    assert context == REPO
    dockerfile = context / build["dockerfile"]
    for line in dockerfile.read_text().splitlines():
        if line.startswith("COPY") and "--from" not in line:
            *sources, _ = line.split()[1:]
            for source in sources:
                assert (context / source).exists(), f"Dockerfile copies missing {source}"


def test_compose_sets_every_variable_the_manifest_reads(stack: dict[str, Any]) -> None:
    text = (COMPOSE / "shop" / "wasmgate.toml").read_text()
    read = set(re.findall(r"\$\{([A-Z_]+)(?::-[^}]*)?\}", text))
    assert read == set(_gateway_environment(stack))


def test_the_manifest_loads_in_compose_and_on_loopback(stack: dict[str, Any]) -> None:
    in_compose = load_manifest(COMPOSE / "shop", env=_gateway_environment(stack))
    assert in_compose.brokers["events"].url == "kafka://kafka:9092"
    on_loopback = load_manifest(COMPOSE / "shop", env={})
    assert on_loopback.brokers["events"].url == "kafka://127.0.0.1:9092"
    # Replicas share work: every consuming trigger uses a group/durable/queue.
    kinds = set(on_loopback.triggers)
    assert {"http", "cron", "kafka", "nats-jetstream", "amqp", "redis-streams"} <= kinds
