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
from callcenter.pbxconfig.capacity import TaskLoad
from callcenter.pbxconfig.sipconfig import (
    COMPOSE_ENV,
    FAILSAFE_WAIT_S,
    AgentEndpoint,
    Rows,
    Trunk,
    agent_sip_password,
    render,
)
from tests.conftest import make_settings
from tests.gateways.contract import EventLog, new_call_id
from tests.gateways.harness_asterisk import NUMBERS, make_gateway, make_peer
from tests.peers.ami import first

AGENTS = Rows(agents=[AgentEndpoint("1001", "Alice"), AgentEndpoint("1002", "Bob Supervisor")])
# Dialplan applications we use, as Asterisk 20 documents them (see sip-config/README.md).
APPS = {"NoOp", "UserEvent", "Wait", "Hangup", "AMD", "Dial", "Playback", "ChanSpy", "GotoIf", "Goto", "Set"}
ROW = {
    "name": "pbx1",
    "kind": "asterisk",
    "username": "dialer",
    "secret_env": "CALLCENTER_GATEWAY_SECRET_PBX1",
    "port": 0,
    "dial_template": "",
    "agent_template": "",
    "originates_per_s": 10.0,
}
ENV = {"CALLCENTER_GATEWAY_SECRET_PBX1": "pbx1-secret-value"}


def sections(text: str) -> list[tuple[str, str, dict[str, list[str]]]]:
    """An Asterisk .conf file -> [(section, its template options, {key: [values]})]; refuses a line
    Asterisk's config parser would not take."""
    out: list[tuple[str, str, dict[str, list[str]]]] = []
    for raw in text.splitlines():
        line = raw.split(";", 1)[0].strip()
        if not line:
            continue
        if m := re.fullmatch(r"\[([A-Za-z0-9_.-]+)\](?:\(([!A-Za-z0-9_,-]*)\))?", line):
            out.append((m.group(1), m.group(2) or "", {}))
            continue
        m = re.fullmatch(r"([A-Za-z0-9_]+)\s*=>?\s*(.*)", line)
        assert m and out, f"not a config line: {raw!r}"
        out[-1][2].setdefault(m.group(1), []).append(m.group(2))
    return out


def section(text: str, name: str, **where: str) -> dict[str, list[str]]:
    """The one section `name` whose options include `where` (e.g. type="aor")."""
    found = [
        opts
        for sec, _, opts in sections(text)
        if sec == name and all(opts.get(k) == [v] for k, v in where.items())
    ]
    assert len(found) == 1, (name, where, found)
    return found[0]


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


def walk(
    plan: dict[str, dict[str, list[tuple[str, str, str]]]],
    context: str,
    exten: str,
    variables: dict[str, str],
) -> tuple[float, list[tuple[str, str]]]:
    """Run the dialplan as pbx_config would for a channel nobody redirects: (seconds waited, the
    applications that did something). Enough of Asterisk for what the rendered plan uses."""
    waited, done = 0.0, []
    steps = plan[context][exten]
    i = 0
    for _ in range(100):
        _, app_name, args = steps[i]
        args = re.sub(r"\$\{([A-Z_]+)\}", lambda m: variables.get(m.group(1), ""), args)
        i += 1
        target = None
        if app_name == "Wait":
            waited += float(args)
        elif app_name == "Set":
            name, _, value = args.partition("=")
            variables[name] = value
        elif app_name == "GotoIf":
            m = re.fullmatch(r'\$\["(.*)" (!=|=) "(.*)"\]\?(.+)', args)
            assert m, args
            left, op, right, label = m.groups()
            if (left == right) == (op == "="):
                target = label
        elif app_name == "Goto":
            target = args
        elif app_name in ("Playback", "Hangup", "UserEvent"):
            done.append((app_name, args))
            if app_name == "Hangup":
                return waited, done
        if target is not None:
            parts = target.split(",")
            if len(parts) == 1:  # a label in this extension
                i = next(n for n, (prio, _, _) in enumerate(steps) if prio == f"n({parts[0]})")
                continue
            if len(parts) == 3:
                context = parts.pop(0)
            exten = parts[0]
            steps, i = plan[context][exten], 0
    raise AssertionError("the dialplan loops")


@pytest.mark.parametrize(
    ("context", "exten", "variables"),
    [
        (DP.answered_context, "s", {"CC_CALL_ID": "c1"}),
        (DP.amd_context, "s", {"CC_CALL_ID": "c1"}),
        (DP.agent_connect_context, "1001", {"CC_CALL_ID": "c1"}),  # the agent did not answer
        (DP.agent_connect_context, "i", {"CC_CALL_ID": "c1"}),
    ],
)
def test_a_customer_nobody_redirects_hears_the_abandon_message_and_is_hung_up(
    tmp_path: Path, context: str, exten: str, variables: dict[str, str]
) -> None:
    render(AGENTS, tmp_path, _settings(tmp_path))
    plan = dialplan((tmp_path / "extensions.conf").read_text())
    waited, done = walk(plan, context, exten, dict(variables))
    assert 2 < waited == FAILSAFE_WAIT_S <= 10  # well after the dialer's 2 s, and no customer waits long
    assert done[-2:] == [("Playback", "callcenter/abandon"), ("Hangup", "16")]
    # a task's own message, when the controller had set it before it went away
    _, done = walk(plan, context, exten, {**variables, "CC_SOUND": "task7/abandon"})
    assert done[-2:] == [("Playback", "callcenter/task7/abandon"), ("Hangup", "16")]


def test_dial_strings_come_from_the_settings_and_chan_sip_is_refused_with_the_reason(tmp_path: Path) -> None:
    render(AGENTS, tmp_path, _settings(tmp_path, ami_dial_template="PJSIP/{number}@carrier"))
    plan = dialplan((tmp_path / "extensions.conf").read_text())
    assert ("n", "Dial", "PJSIP/1001,20") in plan[DP.agent_connect_context]["1001"]
    assert ("n", "Dial", "PJSIP/${EXTEN}@carrier,60") in plan[DP.agents_context]["_X."]
    template = (Path("sip-config/templates/extensions.conf.j2")).read_text()
    assert "PJSIP" not in template and "SIP/" not in template
    # chan_sip: deprecated in Asterisk 20, gone in 21; refused by name rather than rendered half-working
    for kw in ({"ami_dial_template": "SIP/trunk/{number}"}, {"ami_agent_template": "SIP/{extension}"}):
        with pytest.raises(Invalid, match="chan_sip is deprecated in Asterisk 20 and removed in 21"):
            render(AGENTS, tmp_path / "sip", _settings(tmp_path, **kw))
    assert not (tmp_path / "sip").exists()


def test_agent_endpoints_land_in_the_context_the_driver_watches_for_manual_calls(tmp_path: Path) -> None:
    settings = _settings(tmp_path)
    render(AGENTS, tmp_path, settings, trunk=Trunk("sip.provider.example", 5080, "acct", "provider-pass"))
    pjsip = (tmp_path / "pjsip.conf").read_text()
    for ext in ("1001", "1002"):
        endpoint = section(pjsip, ext, auth=ext)
        assert endpoint["aors"] == [ext]
        assert section(pjsip, ext, username=ext)["password"] == [agent_sip_password(settings, ext)]
    assert section(pjsip, "agent-endpoint")["context"] == [DP.agents_context]
    assert section(pjsip, "trunk", type="aor")["contact"] == ["sip:sip.provider.example:5080"]
    assert DP.agents_context in dialplan((tmp_path / "extensions.conf").read_text())


def test_the_carrier_gets_no_agent_identity_and_no_reinvite_on_bridge(tmp_path: Path) -> None:
    render(AGENTS, tmp_path, _settings(tmp_path), trunk=Trunk("203.0.113.5"), caller_id="4000")
    pjsip = (tmp_path / "pjsip.conf").read_text()
    trunk_tpl = section(pjsip, "trunk-endpoint")
    for key, value in {
        "send_connected_line": "no",  # the bridge's connected-line update (agent name/number) is a re-INVITE
        "send_rpid": "no",
        "send_pai": "no",
        "trust_id_outbound": "no",
        "trust_connected_line": "no",
        "direct_media": "no",  # no re-INVITE moving the media to the agent's phone
        "t38_udptl": "no",
    }.items():
        assert trunk_tpl[key] == [value], key
    assert [t for s, t, _ in sections(pjsip) if s == "trunk" and t] == ["trunk-endpoint"]
    # a call dialled from an agent phone carries the rendered caller ID, never the agent's name
    steps = dialplan((tmp_path / "extensions.conf").read_text())[DP.agents_context]["_X."]
    sets = [args for _, app_name, args in steps if app_name == "Set"]
    assert sets == ["CALLERID(name)=", "CALLERID(num)=4000"]
    assert [a for _, a, _ in steps].index("Set") < [a for _, a, _ in steps].index("Dial")


def test_an_agent_phone_on_the_trunk_host_is_identified_as_the_agent_not_the_trunk(tmp_path: Path) -> None:
    """The trunk's identify matches its host; agents share that address when they sit behind the same
    SBC or on the PBX's own host. Asterisk tries the identifiers in endpoint_identifier_order, so the
    From user (an agent's extension, which must then authenticate) is tried before the address."""
    render(AGENTS, tmp_path, _settings(tmp_path), trunk=Trunk("127.0.0.1"))
    pjsip = (tmp_path / "pjsip.conf").read_text()
    order = section(pjsip, "global", type="global")["endpoint_identifier_order"][0].split(",")
    assert order.index("username") < order.index("ip")
    identify = section(pjsip, "trunk", type="identify")
    assert identify == {"type": ["identify"], "endpoint": ["trunk"], "match": ["127.0.0.1"]}
    for ext in ("1001", "1002"):  # every agent endpoint demands digest auth
        assert section(pjsip, ext, auth=ext)
        assert section(pjsip, "agent-auth")["auth_type"] == ["userpass"]


def test_ami_user_gets_only_the_classes_and_events_the_driver_needs(tmp_path: Path) -> None:
    render(AGENTS, tmp_path, _settings(tmp_path), ami_permit=["172.16.0.0/255.240.0.0"])
    manager = (tmp_path / "manager.conf").read_text()
    assert section(manager, "general")["bindaddr"] == ["127.0.0.1"]  # the default: loopback only
    user = section(manager, "callcenter")
    assert user["secret"] == ["ami-secret-for-tests"]
    assert user["read"] == ["call,user,system"]  # system: the Shutdown event
    assert user["write"] == ["call,originate,reporting"]
    assert user["permit"] == ["172.16.0.0/255.240.0.0"]
    # Asterisk compiles each filter as a POSIX extended regex (REG_EXTENDED | REG_NOSUB) and runs it
    # over the whole event text; [[:space:]] is the only class used, Python's \s here.
    filters = [re.compile(f.replace("[[:space:]]", r"\s")) for f in user["eventfilter"]]

    def passes(event: str) -> bool:
        return any(
            f.search(f"Event: {event}\r\nPrivilege: call,all\r\nChannel: PJSIP/trunk-1\r\n") for f in filters
        )

    wanted = (WANTED_EVENTS | {"Shutdown"}) - {"CoreShowChannel", "CoreShowChannelsComplete"}
    assert {e for e in wanted if passes(e)} == wanted
    for other in ("HangupRequest", "SoftHangupRequest", "NewstateX", "VarSet", "Newexten", "UserEventX"):
        assert not passes(other), other
    assert not any(f.search("Event: VarSet\r\nValue: Event: Hangup \r\n") for f in filters)
    assert (tmp_path / "manager.conf").stat().st_mode & 0o077 == 0o040  # no world access to secrets
    render(AGENTS, tmp_path / "open", _settings(tmp_path), ami_bind="0.0.0.0")
    assert section((tmp_path / "open" / "manager.conf").read_text(), "general")["bindaddr"] == ["0.0.0.0"]


# Modules the rendered modules.conf must load with the ones they require (Asterisk 20.20.1's
# `.requires`; dnsmgr is built in), and the config file each reads: the folder is a whole /etc/asterisk.
REQUIRES = {
    "chan_pjsip": {"res_pjsip", "res_pjsip_session", "res_pjsip_pubsub"},
    "res_pjsip": {"res_pjproject", "res_sorcery_config", "res_sorcery_memory", "res_sorcery_astdb"},
    "res_pjsip_session": {"res_pjsip"},
    "res_pjsip_sdp_rtp": {"res_pjsip", "res_pjsip_session"},
    "res_pjsip_caller_id": {"res_pjsip", "res_pjsip_session"},
    "res_pjsip_nat": {"res_pjsip", "res_pjsip_session"},
    "res_pjsip_registrar": {"res_pjproject", "res_pjsip"},
    "res_pjsip_authenticator_digest": {"res_pjsip"},
    "res_pjsip_endpoint_identifier_ip": {"res_pjsip"},
    "res_pjsip_endpoint_identifier_user": {"res_pjsip"},
    "res_rtp_asterisk": {"res_pjproject"},
    "res_pjproject": {"res_sorcery_config"},
}
NEEDED = {
    "pbx_config": "extensions.conf",
    "chan_pjsip": "pjsip.conf",
    "res_pjproject": "pjproject.conf",
    "res_rtp_asterisk": "rtp.conf",
    "app_amd": "amd.conf",
    "app_dial": None,
    "app_playback": None,
    "app_userevent": None,
    "app_chanspy": None,
    "res_pjsip_endpoint_identifier_user": None,
    "res_pjsip_endpoint_identifier_ip": None,
    "res_pjsip_authenticator_digest": None,
    "res_pjsip_outbound_authenticator_digest": None,
    "res_pjsip_registrar": None,
    "res_pjsip_sdp_rtp": None,
    "format_wav": None,
    "codec_ulaw": None,
}
# the core reads these at start-up and logs an error or warning without them (seen on Asterisk 20.20.1)
CORE_FILES = {
    "asterisk.conf",
    "modules.conf",
    "logger.conf",
    "manager.conf",
    "udptl.conf",
    "cdr.conf",
    "cel.conf",
    "ccss.conf",
    "features.conf",
    "indications.conf",
    "acl.conf",
}


def test_the_rendered_folder_is_a_whole_etc_asterisk_that_loads_only_what_it_uses(tmp_path: Path) -> None:
    render(AGENTS, tmp_path, _settings(tmp_path))
    modules = section((tmp_path / "modules.conf").read_text(), "modules")
    assert modules["autoload"] == ["no"]
    loaded = {m.removesuffix(".so") for m in modules["load"]}
    assert set(NEEDED) <= loaded
    for module in loaded:
        assert REQUIRES.get(module, set()) <= loaded, (module, REQUIRES[module] - loaded)
    assert not loaded & {"chan_sip", "chan_iax2", "res_http_websocket", "res_ari", "chan_skinny"}
    files = {p.name for p in tmp_path.iterdir()}
    assert CORE_FILES | {f for f in NEEDED.values() if f} <= files
    assert section((tmp_path / "cdr.conf").read_text(), "general")["enable"] == ["no"]
    options = section((tmp_path / "asterisk.conf").read_text(), "options")
    assert options["defaultlanguage"] == ["en"]
    assert "maxcalls" not in options and "maxload" not in options  # see asterisk.conf: refusal after answer


def _ports(folder: Path) -> tuple[int, int]:
    rtp = section((folder / "rtp.conf").read_text(), "general")
    return int(rtp["rtpstart"][0]), int(rtp["rtpend"][0])


def test_rtp_range_is_sized_from_the_tasks_and_agent_phones(tmp_path: Path) -> None:
    render(AGENTS, tmp_path / "none", _settings(tmp_path))
    assert _ports(tmp_path / "none") == (10000, 10099)  # 2 phones: 8 ports, rounded up to 100
    rows = Rows(
        agents=AGENTS.agents,
        tasks=(TaskLoad(1, "Spring sale", 300), TaskLoad(2, "Renewals", 48)),
    )
    render(rows, tmp_path / "big", _settings(tmp_path), rtp_start=20000)
    start, end = _ports(tmp_path / "big")
    # (300 + 48 calls + 2 phones) x 2 legs x (RTP + RTCP) = 1400 ports
    assert (start, end) == (20000, 21399)
    assert end - start + 1 >= 4 * (300 + 48 + 2)
    env = (tmp_path / "big" / COMPOSE_ENV).read_text()
    assert env == "ASTERISK_RTP_PORTS=20000-21399\n"


def test_a_task_set_over_the_ceiling_is_refused_naming_the_tasks(tmp_path: Path) -> None:
    rows = Rows(
        agents=AGENTS.agents,
        tasks=(TaskLoad(7, "Big push", 10_000), TaskLoad(8, "Small", 10)),
    )
    with pytest.raises(Invalid) as err:
        render(rows, tmp_path / "out", _settings(tmp_path))
    message = err.value.message
    assert "'Big push' (id 7): 10000" in message and "'Small' (id 8): 10" in message
    assert "CALLCENTER_PBX_MAX_CALLS" in message and "2500" in message
    assert not (tmp_path / "out").exists()
    render(rows, tmp_path / "bigger", _settings(tmp_path, pbx_max_calls=10_100))
    assert _ports(tmp_path / "bigger") == (10000, 50099)  # 10012 calls x 4 = 40048 -> 40100 ports


def test_render_reads_agents_gateway_and_tasks_from_the_database(
    tmp_path: Path, sqlite_engine: Engine
) -> None:
    from callcenter import accounts
    from callcenter.db import session_scope
    from callcenter.models import Campaign, GatewayRow

    with session_scope(sqlite_engine) as session:
        user = accounts.create_user(session, username="alice", password="password-123", display_name="Alice")
        assert user.id is not None
        accounts.create_agent(session, user_id=user.id, extension="2001")
        group = accounts.create_skill_group(session, name="Sales")
        row = GatewayRow(
            name="pbx1",
            kind="asterisk",
            host="10.0.0.9",
            username="dialer",
            secret_env="CALLCENTER_GATEWAY_SECRET_PBX1",
            dial_template="PJSIP/{number}@carrier",
            agent_template="PJSIP/{extension}",
        )
        session.add(row)
        session.flush()
        for name, gw, conc, state in (
            ("on pbx1", row.id, 100, "stopped"),
            ("deleted", row.id, 5000, "deleted"),
            ("default gateway", None, 40, "running"),
        ):
            session.add(
                Campaign(
                    name=name,
                    skill_group_id=accounts.row_id(group),
                    gateway_id=gw,
                    max_concurrency=conc,
                    state=state,
                )
            )
    render(sqlite_engine, tmp_path, _settings(tmp_path), gateway="pbx1", trunk=Trunk("10.0.0.9"), environ=ENV)
    user_section = section((tmp_path / "manager.conf").read_text(), "dialer")
    assert user_section["secret"] == ["pbx1-secret-value"]
    plan = dialplan((tmp_path / "extensions.conf").read_text())
    assert "2001" in plan[DP.agent_connect_context]
    assert ("n", "Dial", "PJSIP/${EXTEN}@carrier,60") in plan[DP.agents_context]["_X."]
    assert [t for s, t, _ in sections((tmp_path / "pjsip.conf").read_text()) if s == "carrier" and t] == [
        "trunk-endpoint"
    ]
    assert _ports(tmp_path) == (10000, 10000 + 400 + 100 - 1)  # (100 + 1 phone) x 4 = 404 -> 500 ports
    render(sqlite_engine, tmp_path / "default", _settings(tmp_path), environ={})
    assert _ports(tmp_path / "default") == (10000, 10199)  # (40 + 1) x 4 = 164 -> 200
    assert section((tmp_path / "default" / "manager.conf").read_text(), "callcenter")["secret"] == [
        "ami-secret-for-tests"
    ]
    with pytest.raises(Invalid, match="CALLCENTER_GATEWAY_SECRET_PBX1"):
        render(sqlite_engine, tmp_path / "again", _settings(tmp_path), gateway="pbx1", environ={})
    with pytest.raises(Invalid, match="no gateway named 'pbx9'"):
        render(sqlite_engine, tmp_path / "again", _settings(tmp_path), gateway="pbx9", environ=ENV)


def test_a_gateway_cannot_name_the_applications_own_secret(tmp_path: Path) -> None:
    row = {**ROW, "secret_env": "CALLCENTER_SECRET_KEY"}
    with pytest.raises(Invalid, match="CALLCENTER_GATEWAY_SECRET_") as err:
        render(
            Rows(gateway=row), tmp_path, _settings(tmp_path), environ={"CALLCENTER_SECRET_KEY": "signing-key"}
        )
    assert err.value.field == "secret_env"
    assert not (tmp_path / "manager.conf").exists()


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
        (AGENTS, {"ami_bind": "0.0.0.0\n[x]"}, "AMI bind"),
        (AGENTS, {"caller_id": "40;00"}, "caller"),
        (AGENTS, {"language": "fr"}, "language"),
        (Rows(gateway={**ROW, "username": "bad name"}), {}, "AMI username"),
    ],
)
def test_values_that_would_add_config_lines_are_refused(
    tmp_path: Path, rows: Rows, kw: _RenderOptions, what: str
) -> None:
    with pytest.raises(Invalid, match=what):
        render(rows, tmp_path, _settings(tmp_path), environ=ENV, **kw)
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
    result = CliRunner().invoke(
        sip_app,
        [
            "render",
            "--out",
            str(out),
            "--trunk-host",
            "10.1.2.3",
            "--ami-bind",
            "0.0.0.0",
            "--rtp-start",
            "12000",
        ],
    )
    assert result.exit_code == 0, result.output
    templates = {p.name.removesuffix(".j2") for p in Path("sip-config/templates").glob("*.j2")}
    assert {p.name for p in out.iterdir()} == templates | {COMPOSE_ENV}
    assert section((out / "manager.conf").read_text(), "callcenter")["secret"] == ["cli-ami-secret"]
    assert section((out / "manager.conf").read_text(), "general")["bindaddr"] == ["0.0.0.0"]
    assert _ports(out) == (12000, 12099)
    assert dialplan((out / "extensions.conf").read_text())
    refused = CliRunner().invoke(sip_app, ["render", "--out", str(tmp_path / "x"), "--gateway", "nope"])
    assert refused.exit_code == 1 and "no gateway named 'nope'" in refused.output
