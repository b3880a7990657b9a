"""The contract between the Asterisk driver and the dialplan we ship (`sip-config/`): context names,
extensions, channel variables and UserEvent names. The driver sends exactly these;
`callcenter.pbxconfig.sipconfig` renders the dialplan from the same object, and a test checks that the
two agree."""

from __future__ import annotations

from dataclasses import dataclass

from callcenter.engine.events import SpyMode


@dataclass(frozen=True)
class Dialplan:
    """Names the driver and `sip-config/templates/extensions.conf.j2` share."""

    # An answered customer lands here (Originate Context/Exten/Priority), raises `answered_event` and
    # waits for the controller to redirect it.
    answered_context: str = "campaign-answered"
    # The same, after AMD(): the UserEvent carries AMDStatus / AMDCause.
    amd_context: str = "campaign-answered-amd"
    answered_exten: str = "s"
    # Redirect target that dials the agent endpoint; the extension is the agent's.
    agent_connect_context: str = "agent-connect"
    # Redirect target that plays `${CC_SOUND}` then hangs up with cause 16.
    abandon_context: str = "abandon-message"
    abandon_exten: str = "s"
    # The supervisor leg is originated into this context; the extension is the spy mode.
    spy_context: str = "supervisor-spy"
    # Agent phones' own context: a call dialled by hand starts here (`Newchannel` with Exten = number).
    agents_context: str = "from-agents"
    # Channel variables the driver sets and the dialplan reads.
    call_id_var: str = "CC_CALL_ID"
    sound_var: str = "CC_SOUND"
    spy_channel_var: str = "CC_SPY_CHANNEL"
    # UserEvents the dialplan raises.
    answered_event: str = "CallCenterAnswered"
    agent_failed_event: str = "CallCenterAgentFailed"

    def spy_exten(self, mode: SpyMode) -> str:
        return mode.value  # listen / whisper / barge


DEFAULT_DIALPLAN = Dialplan()

# ChanSpy options per mode: q = no beep or name announcement, E = leave when the spied-on channel
# hangs up, w = whisper to the spied-on channel (the agent), B = barge: talk to both parties.
CHANSPY_OPTIONS: dict[SpyMode, str] = {
    SpyMode.LISTEN: "qE",
    SpyMode.WHISPER: "qEw",
    SpyMode.BARGE: "qEB",
}
