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
            if var.startswith("CALLCENTER_") and not var.startswith("CALLCENTER_GATEWAY_SECRET_"):
                assert var in known, f"service {name} sets unknown {var}"


def _published_udp(service: str) -> list[str]:
    return [p for p in _compose()["services"][service]["ports"] if p.endswith("/udp")]


def test_published_rtp_range_is_the_rendered_one(tmp_path: Path) -> None:
    """Compose publishes `${<VAR>:-<default>}` where the renderer writes `<VAR>=<range>` to rtp.env
    (`docker compose --env-file ... rtp.env`); the default is what an empty task set renders to."""
    from callcenter.pbxconfig import fsconfig, sipconfig
    from callcenter.pbxconfig.capacity import Capacity
    from tests.conftest import make_settings

    settings = make_settings(tmp_path, ami_secret="ami-secret-for-tests")
    sipconfig.render(sipconfig.Rows(), tmp_path / "ast", settings)
    config = fsconfig.sized(
        fsconfig.FsConfig(esl_password="esl-s3cret"), Capacity("default", 10.0), max_calls=10
    )
    fsconfig.render(tmp_path / "fs", config=config, agents=[], sip_secret="s")
    for service, folder, var in (
        ("asterisk", tmp_path / "ast", sipconfig.COMPOSE_RTP_VAR),
        ("freeswitch", tmp_path / "fs", fsconfig.COMPOSE_RTP_VAR),
    ):
        env_var, rendered = (folder / "rtp.env").read_text().strip().split("=")
        assert env_var == var
        rtp = [p for p in _published_udp(service) if var in p]
        assert rtp == [f"${{{var}:-{rendered}}}:${{{var}:-{rendered}}}/udp"], service


def test_both_pbx_services_play_the_shipped_abandon_message_in_en_and_zh() -> None:
    import wave

    services = _compose()["services"]
    asterisk = {v.split(":")[1]: v.split(":")[0] for v in services["asterisk"]["volumes"]}
    for lang in ("en", "zh"):
        source = asterisk[f"/var/lib/asterisk/sounds/{lang}/callcenter"]
        with wave.open(str(ROOT / source / "abandon.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
            assert 3 < w.getnframes() / 8000 < 20  # a short message
    freeswitch = {v.split(":")[1]: v.split(":")[0] for v in services["freeswitch"]["volumes"]}
    source = ROOT / freeswitch["/usr/share/freeswitch/sounds/callcenter"]
    for lang in ("en", "zh"):  # the dialplan plays $${sounds_dir}/callcenter/<language>/<sound>.wav
        with wave.open(str(source / lang / "abandon.wav")) as w:
            assert (w.getframerate(), w.getnchannels(), w.getsampwidth()) == (8000, 1, 2)
