"""The shipped FreeSWITCH configuration: it parses, uses only applications and parameters FreeSWITCH
1.10 has, and its dialplan routes exactly what the FreeSWITCH driver sends."""

from __future__ import annotations

import hashlib
import math
import re
import stat
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path

import pytest
from sqlalchemy.engine import Engine
from typer.testing import CliRunner

from app.cli import fs_app
from callcenter import accounts
from callcenter.db import session_scope
from callcenter.engine.commands import OriginateRequest
from callcenter.errors import Invalid
from callcenter.gateways.esl_calls import ANSWERED_SUBCLASS, MANUAL_SUBCLASS
from callcenter.gateways.freeswitch import SUBSCRIBE_COMMAND, FreeswitchGateway
from callcenter.pbxconfig.capacity import Capacity, TaskLoad
from callcenter.pbxconfig.fsconfig import (
    COMPOSE_ENV,
    FAILSAFE_WAIT_MS,
    AgentUser,
    FsConfig,
    a1_hash,
    render,
    sip_password,
    sized,
)

SECRET = "a-test-secret-for-sip-passwords"
AGENTS = [AgentUser("1001", "Ann Lee"), AgentUser("1002"), AgentUser("1003", "王芳")]

# What the rendered files may use, each checked against the FreeSWITCH 1.10 documentation / source
# (mod_dptools, mod_avmd, rtckit/mod_amd; sofia.conf, event_socket.conf, switch.conf parameters).
APPLICATIONS = {
    "answer": "mod_dptools",
    "park": "mod_dptools",
    "event": "mod_dptools",
    "set": "mod_dptools",
    "bridge": "mod_dptools",
    "playback": "mod_dptools",
    "hangup": "mod_dptools",
    "sleep": "mod_dptools",
    "transfer": "mod_dptools",
    "avmd_start": "mod_avmd",
    "avmd_stop": "mod_avmd",
    "amd": "mod_amd",
}
PARAMS = {
    "event_socket.conf": {"nat-map", "listen-ip", "listen-port", "password", "apply-inbound-acl"},
    "switch.conf": {
        "colorize-console",
        "loglevel",
        "max-sessions",
        "sessions-per-second",
        "rtp-start-port",
        "rtp-end-port",
        "dump-cores",
    },
    "sofia.conf": {
        "log-level",
        "debug-presence",
        "context",
        "dialplan",
        "sip-ip",
        "sip-port",
        "rtp-ip",
        "ext-sip-ip",
        "ext-rtp-ip",
        "auth-calls",
        "accept-blind-reg",
        "accept-blind-auth",
        "inbound-reg-force-matching-username",
        "challenge-realm",
        "force-register-domain",
        "force-subscription-domain",
        "force-register-db-domain",
        "manage-presence",
        "inbound-codec-prefs",
        "outbound-codec-prefs",
        "dtmf-type",
        "rtp-timer-name",
        "enable-timer",
        "nonce-ttl",
        "tls",
        # gateway
        "proxy",
        "register",
        "username",
        "password",
        "caller-id-in-from",
        "ping",
    },
}


def _render(tmp_path: Path, **config: object) -> Path:
    out = tmp_path / "conf"
    options: dict[str, object] = {"esl_password": "esl-s3cret", "caller_id": "4000"}
    options.update(config)
    render(out, config=FsConfig(**options), agents=AGENTS, sip_secret=SECRET)  # type: ignore[arg-type]
    return out


def _document(conf: Path) -> ET.Element:
    """freeswitch.xml with its X-PRE-PROCESS includes expanded, as FreeSWITCH's preprocessor does."""
    root = ET.parse(conf / "freeswitch.xml").getroot()
    for section in root.iter("section"):
        for pre in list(section):
            if pre.tag == "X-PRE-PROCESS" and pre.get("cmd") == "include":
                section.remove(pre)
                for path in sorted(conf.glob(pre.get("data", ""))):
                    included = ET.parse(path).getroot()
                    section.extend(list(included) if included.tag == "include" else [included])
    return root


def _context(doc: ET.Element, name: str) -> ET.Element:
    dialplan = next(s for s in doc.iter("section") if s.get("name") == "dialplan")
    return next(c for c in dialplan.iter("context") if c.get("name") == name)


def _group_of(m: re.Match[str]) -> Callable[[re.Match[str]], str]:
    """A `re.sub` replacement for FreeSWITCH's `$N`: group N of the condition's match `m`, empty if it
    took no part."""
    return lambda g: m.group(int(g.group(1))) or ""


def _hunt(context: ET.Element, destination: str, variables: dict[str, str] | None = None) -> tuple[str, list]:
    """The extension the XML dialplan picks for `destination`, and the actions it queues (with $1 etc.
    filled in): conditions in order, a false one ends the extension unless break="never"."""
    variables = {"destination_number": destination, **(variables or {})}
    for ext in context.iter("extension"):
        actions: list[tuple[str, str]] = []
        matched = True
        for cond in ext.findall("condition"):
            field = cond.get("field", "")
            value = variables.get(field.strip("${}"), "") if field.startswith("${") else variables[field]
            m = re.search(cond.get("expression", ""), value)
            kind = "action" if m else "anti-action"
            for act in cond.findall(kind):
                data = act.get("data", "")
                if m:
                    data = re.sub(r"\$(\d)", _group_of(m), data)
                actions.append((act.get("application", ""), data))
            if not m and cond.get("break", "on-false") != "never":
                matched = False
                break
        if matched:
            return ext.get("name", ""), actions
    raise AssertionError(f"no extension of {context.get('name')} matches {destination!r}")


def test_every_rendered_file_is_well_formed_xml_for_each_amd_engine(tmp_path: Path) -> None:
    for engine in ("avmd", "mod_amd", "none"):
        conf = _render(tmp_path / engine, amd_engine=engine)
        for path in conf.rglob("*.xml"):
            ET.parse(path)  # raises on anything FreeSWITCH's parser would refuse as XML
        doc = _document(conf)
        assert doc.get("type") == "freeswitch/xml"
        assert {s.get("name") for s in doc.iter("section")} == {"configuration", "dialplan", "directory"}


@pytest.mark.parametrize("engine", ["avmd", "mod_amd", "none"])
def test_only_known_applications_are_used_and_their_modules_are_loaded(tmp_path: Path, engine: str) -> None:
    doc = _document(_render(tmp_path, amd_engine=engine))
    used = {a.get("application") for tag in ("action", "anti-action") for a in doc.iter(tag)}
    assert used <= set(APPLICATIONS), used - set(APPLICATIONS)
    loaded = {m.get("module") for m in doc.iter("load")}
    assert {APPLICATIONS[a] for a in used if a} <= loaded
    assert {"mod_event_socket", "mod_sofia", "mod_dialplan_xml", "mod_tone_stream", "mod_sndfile"} <= loaded


def test_only_known_parameters_are_used(tmp_path: Path) -> None:
    doc = _document(_render(tmp_path, ext_ip="203.0.113.7", trunk_username="u", trunk_password="p"))
    for configuration in doc.iter("configuration"):
        allowed = PARAMS.get(configuration.get("name", ""))
        if allowed is None:
            continue
        names = {p.get("name") for p in configuration.iter("param")}
        assert names <= allowed, (configuration.get("name"), names - allowed)


def test_event_socket_is_bound_to_the_controller_network_with_the_password_and_an_acl(tmp_path: Path) -> None:
    conf = _render(tmp_path, esl_listen_ip="10.5.0.2", esl_acl=("10.5.0.0/24", "127.0.0.1/32"))
    doc = _document(conf)
    esl = next(c for c in doc.iter("configuration") if c.get("name") == "event_socket.conf")
    params = {p.get("name"): p.get("value") for p in esl.iter("param")}
    assert params["listen-ip"] == "10.5.0.2"
    assert params["password"] == "esl-s3cret"
    acl = next(c for c in doc.iter("configuration") if c.get("name") == "acl.conf")
    lists = {lst.get("name"): lst for lst in acl.iter("list")}
    assert lists[params["apply-inbound-acl"]].get("default") == "deny"
    assert [n.get("cidr") for n in lists[params["apply-inbound-acl"]]] == ["10.5.0.0/24", "127.0.0.1/32"]


def test_dialplan_routes_exactly_what_the_driver_sends(tmp_path: Path) -> None:
    gw = FreeswitchGateway(host="127.0.0.1", password="p")
    doc = _document(_render(tmp_path))

    def target(command: str) -> tuple[str, str]:
        words = command.split()
        assert words[-2] == "XML"
        return words[-1], words[-3]

    # originate: `... wait XML campaign-answered`
    request = OriginateRequest(call_id="c-1", number="+8613800000000", caller_id="4000")
    context, destination = target(gw.originate_command(request))
    name, actions = _hunt(_context(doc, context), destination)
    assert name == "wait"
    assert (
        "event",
        f"Event-Name=CUSTOM,Event-Subclass={ANSWERED_SUBCLASS},cc_call_id=${{cc_call_id}}",
    ) in actions
    assert actions[-2:] == [
        ("sleep", str(FAILSAFE_WAIT_MS)),
        ("transfer", "abandon_abandon XML campaign-answered"),
    ]

    # originate with AMD: `wait_amd`, then the verdict extension it transfers to
    doc = _document(_render(tmp_path / "avmd", amd_engine="avmd"))
    amd = OriginateRequest(call_id="c-2", number="+8613800000000", amd=True)
    context, destination = target(gw.originate_command(amd))
    name, actions = _hunt(_context(doc, context), destination)
    assert name == "wait_amd"
    transfer = next(data for app_, data in actions if app_ == "transfer")
    next_dest, _, next_context = transfer.split()
    for detected, verdict in (("TRUE", "MACHINE"), ("", "NOTSURE")):
        name, actions = _hunt(_context(doc, next_context), next_dest, {"avmd_detect": detected})
        assert name == "wait_amd_verdict"
        assert ("set", f"cc_amd={verdict}") in actions
        assert any(
            a == "event" and f"Event-Subclass={ANSWERED_SUBCLASS}" in d and "cc_amd=${cc_amd}" in d
            for a, d in actions
        )

    # connect_agent: `uuid_transfer <id> agent_1001 XML campaign-answered` bridges the agent template
    context, destination = target(gw.transfer_command("c-1", agent="1001"))
    name, actions = _hunt(_context(doc, context), destination)
    assert name == "agent"
    bridge = next(data for app_, data in actions if app_ == "bridge")
    assert bridge.endswith("}" + gw.agent_template.format(extension="1001"))
    assert ("set", "hangup_after_bridge=true") in actions

    # play_and_hangup: `uuid_transfer <id> abandon_<sound> ...` plays that sound, then hangs up
    context, destination = target(gw.transfer_command("c-1", sound="campaign7/abandon-en"))
    name, actions = _hunt(_context(doc, context), destination)
    assert name == "abandon"
    assert actions == [
        ("playback", "$${sounds_dir}/callcenter/en/campaign7/abandon-en.wav"),
        ("hangup", "NORMAL_CLEARING"),
    ]


def test_agent_phone_dialling_a_customer_fires_the_event_the_driver_subscribes_to(tmp_path: Path) -> None:
    gw = FreeswitchGateway(host="127.0.0.1", password="p")
    doc = _document(_render(tmp_path))
    agents = _context(doc, "agents")
    name, actions = _hunt(agents, "+10000077", {"cc_agent": "1001"})
    assert name == "manual"
    event = next(data for app_, data in actions if app_ == "event")
    assert (
        event
        == f"Event-Name=CUSTOM,Event-Subclass={MANUAL_SUBCLASS},cc_agent=${{cc_agent}},cc_number=10000077"
    )
    bridge = next(data for app_, data in actions if app_ == "bridge")
    assert bridge.endswith("}" + gw.dial_template.format(number="10000077"))
    assert _hunt(agents, "1002", {"cc_agent": "1001"})[0] == "agent_to_agent"
    assert _hunt(agents, "10000077")[0] == "refuse"  # not one of our agents
    for subclass in (ANSWERED_SUBCLASS, MANUAL_SUBCLASS):
        assert f" {subclass}" in SUBSCRIBE_COMMAND


def test_directory_has_one_user_per_agent_with_a_digest_hash_not_the_password(tmp_path: Path) -> None:
    conf = _render(tmp_path, domain="cc.example.org")
    text = (conf / "directory" / "callcenter.xml").read_text()
    doc = _document(conf)
    users = {u.attrib["id"]: u for u in doc.iter("user")}
    assert set(users) == {"1001", "1002", "1003"}
    for ext, user in users.items():
        password = sip_password(SECRET, ext)
        params = {p.get("name"): p.get("value") for p in user.iter("param")}
        assert params == {"a1-hash": hashlib.md5(f"{ext}:cc.example.org:{password}".encode()).hexdigest()}
        assert password not in text
        variables = {v.get("name"): v.get("value") for v in user.iter("variable")}
        assert variables["cc_agent"] == ext  # what the agents context keys on
    assert {v.get("value") for v in users["1003"].iter("variable")} >= {"王芳"}
    domain = next(doc.iter("domain"))
    assert any(p.get("name") == "dial-string" for p in domain.iter("param"))  # user/<ext> needs it


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("esl_password", ""),
        ("esl_password", "ClueCon"),
        ("esl_password", 'x"/><param name="listen-ip" value="0.0.0.0'),
        ("domain", "a b"),
        ("esl_listen_ip", "0.0.0.0/0"),
        ("esl_acl", ("everyone",)),
        ("esl_acl", ()),
        ("trunk_proxy", 'sip.example"/>'),
        ("dial_template", "sofia/gateway/trunk/{number} &park"),
        ("agent_template", "user/{extension},loopback/x"),
        ("sounds_dir", "../../etc"),
        ("caller_id", "40,00"),
        ("amd_engine", "guess"),
    ],
)
def test_hostile_or_broken_settings_are_refused(field: str, value: object) -> None:
    options: dict[str, object] = {"esl_password": "esl-s3cret", field: value}
    with pytest.raises(Invalid):
        FsConfig(**options)  # type: ignore[arg-type]


def test_agent_name_that_would_break_the_directory_is_refused() -> None:
    with pytest.raises(Invalid):
        AgentUser("1001", 'Ann" /><user id="9999')


def test_cli_renders_the_agents_from_the_database(
    tmp_path: Path, sqlite_url: str, sqlite_engine: Engine
) -> None:
    with session_scope(sqlite_engine) as session:
        for username, ext, simulated in (
            ("ann", "2001", False),
            ("bob", "2002", False),
            ("sim", "2999", True),
        ):
            user = accounts.create_user(session, username=username, password="password-123", roles=["agent"])
            assert user.id is not None
            accounts.create_agent(session, user_id=user.id, extension=ext, simulated=simulated)
    out = tmp_path / "conf"
    creds = tmp_path / "creds.csv"
    env = {
        "CALLCENTER_MODE": "dev",
        "CALLCENTER_SECRET_KEY": SECRET,
        "CALLCENTER_DATABASE_URL": sqlite_url,
        "CALLCENTER_ESL_PASSWORD": "esl-s3cret",
        "CALLCENTER_ESL_PORT": "8022",
    }
    result = CliRunner().invoke(
        fs_app,
        [
            "render",
            "-o",
            str(out),
            "--domain",
            "cc.test",
            "--esl-acl",
            "172.28.0.0/16",
            "--credentials",
            str(creds),
        ],
        env=env,
    )
    assert result.exit_code == 0, result.output
    doc = _document(out)
    users = {u.get("id") for u in doc.iter("user")}
    assert {"2001", "2002"} <= users and "2999" not in users
    esl = {
        p.get("name"): p.get("value")
        for c in doc.iter("configuration")
        if c.get("name") == "event_socket.conf"
        for p in c.iter("param")
    }
    assert (esl["listen-port"], esl["password"]) == ("8022", "esl-s3cret")
    lines = dict(line.split(",") for line in creds.read_text().splitlines())
    assert lines["2001"] == sip_password(SECRET, "2001")
    assert stat.S_IMODE(creds.stat().st_mode) == 0o600
    hashes = {u.get("id"): next(u.iter("param")).get("value") for u in doc.iter("user")}
    assert hashes["2001"] == a1_hash("2001", "cc.test", lines["2001"])


def test_cli_refuses_to_render_without_an_event_socket_password(tmp_path: Path, sqlite_url: str) -> None:
    env = {"CALLCENTER_MODE": "dev", "CALLCENTER_DATABASE_URL": sqlite_url, "CALLCENTER_ESL_PASSWORD": ""}
    result = CliRunner().invoke(fs_app, ["render", "-o", str(tmp_path / "conf")], env=env)
    assert result.exit_code == 2
    assert "esl_password" in result.output
    assert not (tmp_path / "conf").exists()


def _settings_of(doc: ET.Element, name: str) -> dict[str, str]:
    conf = next(c for c in doc.iter("configuration") if c.get("name") == name)
    return {p.get("name", ""): p.get("value", "") for p in conf.iter("param")}


@pytest.mark.parametrize("engine", ["none", "avmd"])
def test_a_customer_nobody_transfers_hears_the_abandon_message_and_is_hung_up(
    tmp_path: Path, engine: str
) -> None:
    """`sleep` (which the controller's uuid_transfer interrupts) stands where `park` waited for ever."""
    doc = _document(_render(tmp_path, amd_engine=engine, language="zh"))
    context = _context(doc, "campaign-answered")
    waits = {"wait": {}, "wait_amd_verdict": {"avmd_detect": ""}, "agent_1001": {}}
    for destination, variables in waits.items():
        _, actions = _hunt(context, destination, variables)
        sleeps = [int(d) for a, d in actions if a == "sleep"]
        assert sleeps[-1] == FAILSAFE_WAIT_MS and 2000 < FAILSAFE_WAIT_MS <= 10000
        assert actions[-1] == ("transfer", "abandon_abandon XML campaign-answered"), destination
        assert not any(a == "park" for a, _ in actions)
    name, actions = _hunt(context, "abandon_abandon")
    assert name == "abandon"
    assert actions == [
        ("playback", "$${sounds_dir}/callcenter/zh/abandon.wav"),
        ("hangup", "NORMAL_CLEARING"),
    ]


def test_modules_load_without_optional_ones_unless_a_task_asks_for_amd(tmp_path: Path) -> None:
    loaded = {m.get("module") for m in _document(_render(tmp_path / "a")).iter("load")}
    assert "mod_avmd" not in loaded and "mod_amd" not in loaded
    assert {m.get("module") for m in _document(_render(tmp_path / "b", amd_engine="avmd")).iter("load")} == (
        loaded | {"mod_avmd"}
    )
    assert not (tmp_path / "a" / "conf" / "autoload_configs" / "amd.conf.xml").exists()


def test_rtp_range_sessions_and_rate_come_from_the_gateway_tasks_and_originate_rate(tmp_path: Path) -> None:
    capacity = Capacity("pbx-east", 10.0, (TaskLoad(1, "a", 300), TaskLoad(2, "b", 48)), phones=2)
    config = sized(FsConfig(esl_password="esl-s3cret", rtp_start_port=20000), capacity, max_calls=2500)
    out = tmp_path / "conf"
    render(out, config=config, agents=AGENTS, sip_secret=SECRET)
    switch = _settings_of(_document(out), "switch.conf")
    assert (int(switch["rtp-start-port"]), int(switch["rtp-end-port"])) == (20000, 21399)  # 350 calls x 4
    assert int(switch["max-sessions"]) == 2 * 350
    assert (out / COMPOSE_ENV).read_text() == "FREESWITCH_RTP_PORTS=20000-21399\n"
    with pytest.raises(Invalid, match="'a' \\(id 1\\): 300"):
        sized(config, capacity, max_calls=100)


@pytest.mark.parametrize("rate", [1.0, 2.5, 10.0, 40.0])
def test_sessions_per_second_lets_through_every_leg_the_dialer_may_start(rate: float) -> None:
    """FreeSWITCH counts every new session and lets N-1 a second through (freeswitch-faults README):
    the dialer's originates at its bucket rate, one agent leg per answered call, and room for agents'
    own calls and supervisors must fit under that."""
    capacity = Capacity("default", rate, (TaskLoad(1, "t", 100),), phones=20)
    sps = sized(FsConfig(esl_password="esl-s3cret"), capacity, max_calls=2500).sessions_per_second
    customers = agents = math.ceil(rate)
    assert sps - 1 >= customers + agents + max(customers, 10)
    assert sps - 1 <= 3 * customers + 10  # and no more than that: a runaway dialer is still stopped


def test_both_renderers_size_one_gateway_alike(tmp_path: Path) -> None:
    from callcenter.pbxconfig.sipconfig import AgentEndpoint, Rows
    from callcenter.pbxconfig.sipconfig import render as render_asterisk
    from tests.conftest import make_settings

    tasks = (TaskLoad(1, "a", 120), TaskLoad(2, "b", 30))
    rows = Rows(agents=[AgentEndpoint(a.extension) for a in AGENTS], tasks=tasks)
    settings = make_settings(tmp_path, ami_secret="ami-secret-for-tests")
    render_asterisk(rows, tmp_path / "ast", settings, rtp_start=16384)
    fs = sized(FsConfig(esl_password="esl-s3cret"), rows.capacity(), max_calls=settings.pbx_max_calls)
    asterisk_env = (tmp_path / "ast" / "rtp.env").read_text().split("=")[1]
    assert asterisk_env.strip() == f"{fs.rtp_start_port}-{fs.rtp_end_port}"


def test_cli_takes_ports_and_a_gateway_row_with_its_own_secret(
    tmp_path: Path, sqlite_url: str, sqlite_engine: Engine
) -> None:
    from callcenter.models import Campaign, GatewayRow

    with session_scope(sqlite_engine) as session:
        group = accounts.create_skill_group(session, name="Sales")
        row = GatewayRow(
            name="fs1",
            kind="freeswitch",
            host="10.0.0.7",
            port=8022,
            secret_env="CALLCENTER_GATEWAY_SECRET_FS1",
            originates_per_s=4,
        )
        session.add(row)
        session.flush()
        session.add(
            Campaign(
                name="amd task",
                skill_group_id=accounts.row_id(group),
                gateway_id=row.id,
                max_concurrency=60,
                amd=True,
            )
        )
    env = {
        "CALLCENTER_MODE": "dev",
        "CALLCENTER_SECRET_KEY": SECRET,
        "CALLCENTER_DATABASE_URL": sqlite_url,
        "CALLCENTER_ESL_PASSWORD": "default-esl-pass",
        "CALLCENTER_GATEWAY_SECRET_FS1": "fs1-esl-pass",
    }
    out = tmp_path / "conf"
    args = ["render", "-o", str(out), "--gateway", "fs1", "--sip-port", "5090", "--trunk-port", "5092"]
    result = CliRunner().invoke(fs_app, args, env=env)
    assert result.exit_code == 0, result.output
    doc = _document(out)
    assert _settings_of(doc, "event_socket.conf")["password"] == "fs1-esl-pass"
    assert _settings_of(doc, "event_socket.conf")["listen-port"] == "8022"
    sofia = next(c for c in doc.iter("configuration") if c.get("name") == "sofia.conf")
    ports = {p.get("name"): _profile_port(p) for p in sofia.iter("profile")}
    assert ports == {"agents": "5090", "trunk": "5092"}
    switch = _settings_of(doc, "switch.conf")
    assert int(switch["sessions-per-second"]) == 4 + 4 + 10 + 1
    assert int(switch["rtp-end-port"]) - int(switch["rtp-start-port"]) + 1 == 300  # 60 calls x 4 -> 300
    assert "mod_avmd" in {m.get("module") for m in doc.iter("load")}  # its task asks for AMD
    env["CALLCENTER_GATEWAY_SECRET_FS1"] = ""
    refused = CliRunner().invoke(fs_app, args, env=env)
    assert refused.exit_code == 2 and "esl_password" in refused.output


def _profile_port(profile: ET.Element) -> str:
    settings = profile.find("settings")
    assert settings is not None
    return next(p.get("value", "") for p in settings.iter("param") if p.get("name") == "sip-port")
