"""docker-compose.yml stays in step with the CLI and the repository."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from typer.main import get_command

from app.cli import app

ROOT = Path(__file__).parent.parent


def _compose() -> dict[str, Any]:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def _cli_paths() -> set[tuple[str, ...]]:
    root = get_command(app)
    paths: set[tuple[str, ...]] = set()

    def walk(cmd: object, prefix: tuple[str, ...]) -> None:  # a click command, typer's own click or not
        for name, sub in getattr(cmd, "commands", {}).items():
            paths.add((*prefix, name))
            walk(sub, (*prefix, name))

    walk(root, ())
    return paths


def test_every_callcenter_service_runs_an_existing_cli_command() -> None:
    services = _compose()["services"]
    ours = {n: s for n, s in services.items() if s.get("image", "").startswith("callcenter")}
    assert {"web", "dialer", "worker"} <= set(ours)
    cli = _cli_paths()
    for name, svc in ours.items():
        words = [w for w in svc["command"] if not w.startswith("-")]
        assert tuple(words) in cli, (
            f"service {name} runs `callcenter {' '.join(svc['command'])}`, which the CLI does not have"
        )


def test_compose_has_the_backing_services() -> None:
    services = _compose()["services"]
    assert {"redis", "postgres"} <= set(services)


def test_every_bind_mount_exists_in_the_repo() -> None:
    for name, svc in _compose()["services"].items():
        for vol in svc.get("volumes", []):
            source = vol.split(":", 1)[0] if isinstance(vol, str) else vol.get("source", "")
            if source.startswith((".", "/")):
                assert (ROOT / source).exists(), f"service {name} mounts {source}, missing from the repo"


def test_services_use_the_documented_settings() -> None:
    from callcenter.config import Settings

    known = {f"CALLCENTER_{n.upper()}" for n in Settings.model_fields}
    for name, svc in _compose()["services"].items():
        for var in svc.get("environment", {}) or {}:
            if var.startswith("CALLCENTER_"):
                assert var in known, f"service {name} sets unknown {var}"
