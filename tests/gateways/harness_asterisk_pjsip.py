"""Contract harness for the Asterisk driver on the chan_pjsip recordings (tests/fixtures/asterisk-20-pjsip/):
busy and 503 give OriginateResponse Reason 0 (the Hangup cause decides), a customer who hangs up in
Wait() gives Cause 0, and the answer's UserEvent may come before the OriginateResponse. What that set
has no recording of (an unknown endpoint, AMD) is played from the chan_sip set (`tests/peers/ami.py`)."""

from __future__ import annotations

from tests.gateways.harness_asterisk import AMD_NUMBER, NUMBERS, AsteriskHarness
from tests.peers.ami import CHAN_PJSIP

SCENARIOS = {
    NUMBERS["answer"].lstrip("+"): "originate-answered-agent-bridged.jsonl",
    NUMBERS["busy"].lstrip("+"): "originate-busy.jsonl",
    NUMBERS["no_answer"].lstrip("+"): "originate-no-answer.jsonl",
    NUMBERS["congestion"].lstrip("+"): "originate-congestion.jsonl",
    NUMBERS["unknown"].lstrip("+"): CHAN_PJSIP.unknown,
    NUMBERS["abandon"].lstrip("+"): "answered-then-abandoned-in-wait.jsonl",
    # recorded with the UserEvent before the OriginateResponse, which the peer holds until the Redirect
    NUMBERS["answer_race"].lstrip("+"): "chanspy-listen-whisper-barge.jsonl",
    AMD_NUMBER.lstrip("+"): "asterisk-20/answered-amd-verdict.jsonl",
}

HARNESS = AsteriskHarness("asterisk_pjsip", CHAN_PJSIP, SCENARIOS)
