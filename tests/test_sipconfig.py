"""sip-config/: the rendered Asterisk configuration matches what the driver sends, parses as dialplan,
takes its agents and AMI users from the database, and refuses values that would add config lines."""

from __future__ import annotations

import re
from collections.abc import Callable
from pathlib import Path
from typing import TypedDict

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from app.cli import sip_app
from callcenter.config import Settings
from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import CallAnswered, CallConnected, GatewayEvent, SpyMode, SpyStarted
from callcenter.errors import Invalid
from callcenter.gateways.ami_calls import WANTED_EVENTS
from callcenter.gateways.ami_dialplan import DEFAULT_DIALPLAN as DP
from callcenter.pbxconfig.sipconfig import AgentEndpoint, Rows, Trunk, agent_sip_password, render
from tests.conftest import make_settings
from tests.gateways.contract import EventLog, new_call_id
from tests.gateways.harness_asterisk import NUMBERS, make_gateway, make_peer
from tests.peers.ami import first

AGENTS = Rows(agents=[AgentEndpoint("1001", "Alice"), AgentEndpoint("1002", "Bob Supervisor")])
# Dialplan applications we use, as Asterisk 20 documents them (see sip-config/README.md).
APPS = {"NoOp", "UserEvent", "Wait", "Hangup", "AMD", "Dial", "Playback", "ChanSpy", "GotoIf", "Goto", "Set"}


def _settings(tmp_path: Path, **kw: object) -> Settings:
    return make_settings(tmp_path, ami_secret="ami-secret-for-tests", **kw)


def dialplan(text: str) -> dict[str, dict[str, list[tuple[str, str, str]]]]:
    """extensions.conf -> context -> extension -> [(priority, application, arguments)]; raises
    AssertionError on any line Asterisk's pbx_config would not take."""
    contexts: dict[str, dict[str, list[tuple[str, str, str]]]] = {}
    context = exten = None
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip() if not raw.lstrip().startswith(";") else ""
        if not line:
            continue
        if m := re.fullmatch(r"\[([A-Za-z0-9_-]+)\]", line):
            context, exten = m.group(1), None
            contexts.setdefault(context, {})
            continue
        assert context is not None, raw
        if context in ("general", "globals"):
            assert re.fullmatch(r"[a-z]+ = \S+", line), raw
            continue
        m = re.fullmatch(r"(exten|same) => (?:([^,]+),)?(1|n(?:\([a-z]+\))?),([A-Za-z]+)\((.*)\)", line)
        assert m, f"not a dialplan line: {raw!r}"
        kind, name, prio, app_name, args = m.groups()
        if kind == "exten":
            assert name and prio == "1", raw
            exten = name
            assert exten not in contexts[context], f"{context},{exten} defined twice"
            contexts[context][exten] = []
        else:
            assert exten is not None and name is None, raw
        assert app_name in APPS, f"unknown application {app_name} in {raw!r}"
        assert args.count("(") == args.count(")") and args.count("${") == args.count("}"), raw
        contexts[context][exten].append((prio, app_name, args))
    return contexts


def variables_read(text: str) -> set[str]:
    return set(re.findall(r"\$\{(CC_[A-Z_]+)\}", text))


async def _driver_traffic() -> list[list[tuple[str, str]]]:
    """Every action the driver sends in the situations the dialplan serves."""
    log = EventLog()
    async with make_peer() as peer:
        gw = make_gateway(peer)
        await gw.start(log.emit)
        try:
            calls = [new_call_id() for _ in range(3)]
            for call_id, amd in zip(calls, (False, False, True), strict=True):
                await gw.originate(OriginateRequest(call_id=call_id, number=NUMBERS["answer"], amd=amd))
            for call_id in calls[:2]:
                await log.wait_type(CallAnswered, call_id)
            await gw.connect_agent(calls[0], "1001")
            await log.wait_type(CallConnected, calls[0])
            await gw.play_and_hangup(calls[1], "callcenter/abandon")
            for mode in SpyMode:
                spy_id = await gw.spy(target_extension="1001", supervisor_extension="1002", mode=mode)
                await log.wait_for(_spy_started(spy_id))
        finally:
            await gw.close()
        return [h for _, h in peer.actions]


def _spy_started(spy_id: str) -> Callable[[GatewayEvent], bool]:
    return lambda e: isinstance(e, SpyStarted) and e.spy_id == spy_id


async def test_rendered_dialplan_has_every_context_extension_and_variable_the_driver_uses(
    tmp_path: Path,
) -> None:
    render(AGENTS, tmp_path, _settings(tmp_path))
    text = (tmp_path / "extensions.conf").read_text()
    plan = dialplan(text)
    actions = await _driver_traffic()
    targets = {
        (first(a, "Context"), first(a, "Exten"))
        for a in actions
        if first(a, "Action") in ("Originate", "Redirect")
    }
    assert targets == {
        (DP.answered_context, "s"),
        (DP.amd_context, "s"),
        (DP.agent_connect_context, "1001"),
        (DP.abandon_context, "s"),
        (DP.spy_context, "listen"),
        (DP.spy_context, "whisper"),
        (DP.spy_context, "barge"),
    }
    for context, exten in targets:
        assert exten in plan.get(context, {}), f"the driver sends {context},{exten},1; the dialplan lacks it"
    assert all(
        first(a, "Priority") == "1" for a in actions if first(a, "Action") in ("Originate", "Redirect")
    )
    set_by_driver = {v.split("=", 1)[0] for a in actions for k, v in a if k == "Variable" and "=" in v}
    set_by_driver |= {first(a, "Variable") for a in actions if first(a, "Action") == "Setvar"}
    assert variables_read(text) <= set_by_driver, variables_read(text) - set_by_driver
    raised = set(re.findall(r"UserEvent\(([A-Za-z]+)", text))
    assert raised == {DP.answered_event, DP.agent_failed_event}
    # the spy legs get the options each mode needs
    spy = {
        e: args
        for e, steps in plan[DP.spy_context].items()
        for _, app_name, args in steps
        if app_name == "ChanSpy"
    }
    assert spy == {
        "listen": "${CC_SPY_CHANNEL},qE",
        "whisper": "${CC_SPY_CHANNEL},qEw",
        "barge": "${CC_SPY_CHANNEL},qEB",
    }


def test_dial_strings_come_from_the_settings_so_the_dialplan_names_no_channel_driver(tmp_path: Path) -> None:
    pjsip_dir, sip_dir = tmp_path / "pjsip", tmp_path / "sip"
    render(AGENTS, pjsip_dir, _settings(tmp_path))
    render(
        AGENTS,
        sip_dir,
        _settings(tmp_path, ami_dial_template="SIP/trunk/{number}", ami_agent_template="SIP/{extension}"),
    )
    for folder, agent, trunk in (
        (pjsip_dir, "PJSIP/1001", "PJSIP/${EXTEN}@trunk"),
        (sip_dir, "SIP/1001", "SIP/trunk/${EXTEN}"),
    ):
        plan = dialplan((folder / "extensions.conf").read_text())
        assert ("n", "Dial", f"{agent},20") in plan[DP.agent_connect_context]["1001"]
        assert ("n", "Dial", f"{trunk},60") in plan[DP.agents_context]["_X."]
    template = (Path("sip-config/templates/extensions.conf.j2")).read_text()
    assert "PJSIP" not in template and "SIP/" not in template
    assert "noload = chan_sip.so" in (pjsip_dir / "modules.conf").read_text()
    assert "chan_sip" not in (sip_dir / "modules.conf").read_text()


def test_agent_endpoints_land_in_the_context_the_driver_watches_for_manual_calls(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    render(AGENTS, tmp_path, settings, trunk=Trunk("sip.provider.example", 5080, "acct", "provider-pass"))
    pjsip = (tmp_path / "pjsip.conf").read_text()
    assert f"context = {DP.agents_context}" in pjsip
    for ext in ("1001", "1002"):
        assert f"[{ext}](agent-endpoint)" in pjsip
        assert f"password = {agent_sip_password(settings, ext)}" in pjsip
    assert "[trunk](trunk-endpoint)" in pjsip and "contact = sip:sip.provider.example:5080" in pjsip
    assert DP.agents_context in dialplan((tmp_path / "extensions.conf").read_text())


def test_ami_user_gets_only_the_classes_and_events_the_driver_needs(tmp_path: Path) -> None:
    render(AGENTS, tmp_path, _settings(tmp_path), ami_permit=["172.16.0.0/255.240.0.0"])
    manager = (tmp_path / "manager.conf").read_text()
    assert "[callcenter]" in manager and "secret = ami-secret-for-tests" in manager
    assert re.search(r"^read = call,user$", manager, re.M)
    assert re.search(r"^write = call,originate,reporting$", manager, re.M)
    assert "permit = 172.16.0.0/255.240.0.0" in manager
    filters = set(re.findall(r"^eventfilter = Event: (\w+)$", manager, re.M))
    assert filters == WANTED_EVENTS - {"CoreShowChannel", "CoreShowChannelsComplete"}
    assert (tmp_path / "manager.conf").stat().st_mode & 0o077 == 0o040  # no world access to secrets


def test_render_reads_agents_and_gateways_from_the_database(tmp_path: Path, sqlite_engine: Engine) -> None:
    from callcenter import accounts
    from callcenter.db import session_scope
    from callcenter.models import GatewayRow

    with session_scope(sqlite_engine) as session:
        user = accounts.create_user(session, username="alice", password="password-123", display_name="Alice")
        assert user.id is not None
        accounts.create_agent(session, user_id=user.id, extension="2001")
        session.add(
            GatewayRow(
                name="pbx1",
                kind="asterisk",
                username="dialer",
                secret_env="PBX1_AMI_SECRET",
                dial_template="PJSIP/{number}@carrier",
                agent_template="PJSIP/{extension}",
            )
        )
    render(
        sqlite_engine,
        tmp_path,
        _settings(tmp_path),
        trunk=Trunk("10.0.0.9"),
        environ={"PBX1_AMI_SECRET": "pbx1-secret-value"},
    )
    manager = (tmp_path / "manager.conf").read_text()
    assert "[dialer]" in manager and "secret = pbx1-secret-value" in manager
    plan = dialplan((tmp_path / "extensions.conf").read_text())
    assert "2001" in plan[DP.agent_connect_context]
    assert ("n", "Dial", "PJSIP/${EXTEN}@carrier,60") in plan[DP.agents_context]["_X."]
    assert "[carrier](trunk-endpoint)" in (tmp_path / "pjsip.conf").read_text()
    with pytest.raises(Invalid, match="PBX1_AMI_SECRET"):
        render(sqlite_engine, tmp_path / "again", _settings(tmp_path), environ={})


class _RenderOptions(TypedDict, total=False):
    """The keyword arguments of `render` that the refusal cases set."""

    trunk: Trunk
    ami_permit: list[str]


@pytest.mark.parametrize(
    ("rows", "kw", "what"),
    [
        (Rows(agents=[AgentEndpoint("1001\n[evil]")]), {}, "extension"),
        (AGENTS, {"trunk": Trunk("host\nexten => 1,1,System(rm)")}, "trunk host"),
        (AGENTS, {"trunk": Trunk("sip.example", username="u", password="pass;word\nx")}, "trunk password"),
        (AGENTS, {"ami_permit": ["127.0.0.1\n[other]"]}, "AMI permit"),
        (Rows(gateways=[{"kind": "asterisk", "username": "bad name", "secret_env": ""}]), {}, "AMI username"),
    ],
)
def test_values_that_would_add_config_lines_are_refused(
    tmp_path: Path, rows: Rows, kw: _RenderOptions, what: str
) -> None:
    with pytest.raises(Invalid, match=what):
        render(rows, tmp_path, _settings(tmp_path), **kw)
    assert not (tmp_path / "manager.conf").exists()


def test_ami_secret_with_a_comment_character_is_refused(tmp_path: Path) -> None:
    with pytest.raises(Invalid, match="AMI secret"):
        render(AGENTS, tmp_path, make_settings(tmp_path, ami_secret="abc;def-ghi"))


def test_cli_renders_the_folder_from_the_configured_database(
    tmp_path: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CALLCENTER_MODE", "dev")
    monkeypatch.setenv("CALLCENTER_DATA_DIR", str(tmp_path))
    monkeypatch.setenv("CALLCENTER_DATABASE_URL", sqlite_url)
    monkeypatch.setenv("CALLCENTER_AMI_SECRET", "cli-ami-secret")
    out = tmp_path / "rendered"
    result = CliRunner().invoke(sip_app, ["render", "--out", str(out), "--trunk-host", "10.1.2.3"])
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [
            "manager.conf",
            "extensions.conf",
            "pjsip.conf",
            "modules.conf",
            "logger.conf",
            "rtp.conf",
            "amd.conf",
        ]
    )
    assert "secret = cli-ami-secret" in (out / "manager.conf").read_text()
    assert dialplan((out / "extensions.conf").read_text())
