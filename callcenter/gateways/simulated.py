"""The simulated PBX: a driver of the gateway contract with no telephony behind it.

Customers answer, are busy, don't answer, meet congestion, fail or are answering machines with
configurable probabilities; ring, talk, patience and wrap-up times follow configurable distributions
drawn from a seeded RNG. It runs on an injected `Scheduler`, so the same code serves the demo in real
time and the benchmarks at thousands of times real speed. Numbers can be scripted one by one (`script`)
for tests.

What real PBXs did to the dialer can be produced too (tests/fixtures/freeswitch-faults/ and
asterisk-20-pjsip/): the answer reported before the originate returns (`originate_result_s`), a
graceful shutdown (`shut_down()`, then `restart()`), a session-rate limit (`session_rate`), and a PBX
that refuses every call (`refusing`).
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

from callcenter.clock import Scheduler, Timer
from callcenter.engine.commands import OriginateRequest
from callcenter.engine.events import (
    ActiveCall,
    AgentLegFailed,
    AnswerKind,
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    EventSink,
    GatewayDraining,
    GatewayEvent,
    GatewayLink,
    ManualCallStarted,
    SpyEnded,
    SpyMode,
    SpyStarted,
)
from callcenter.gateways.base import CallNotFound, GatewayUnavailable, check_spy_request
from callcenter.validation import validate_call_id, validate_extension, validate_number, validate_sound


@dataclass(frozen=True)
class Dist:
    """A duration distribution in seconds: const, uniform(lo, hi), exp(mean) or lognormal(mean, sd)."""

    kind: str = "const"
    mean: float = 0.0
    sd: float = 0.0
    lo: float = 0.0
    hi: float = 0.0

    @staticmethod
    def const(v: float) -> Dist:
        return Dist("const", mean=v)

    @staticmethod
    def uniform(lo: float, hi: float) -> Dist:
        return Dist("uniform", mean=(lo + hi) / 2, lo=lo, hi=hi)

    @staticmethod
    def exp(mean: float) -> Dist:
        return Dist("exp", mean=mean)

    @staticmethod
    def lognormal(mean: float, sd: float) -> Dist:
        return Dist("lognormal", mean=mean, sd=sd)

    def sample(self, rng: random.Random) -> float:
        if self.kind == "const":
            return self.mean
        if self.kind == "uniform":
            return rng.uniform(self.lo, self.hi)
        if self.kind == "exp":
            return rng.expovariate(1.0 / self.mean) if self.mean > 0 else 0.0
        if self.kind == "lognormal":
            if self.mean <= 0:
                return 0.0
            s2 = math.log(1 + (self.sd / self.mean) ** 2)
            return rng.lognormvariate(math.log(self.mean) - s2 / 2, math.sqrt(s2))
        raise ValueError(f"unknown distribution {self.kind!r}")


class Outcome(StrEnum):
    HUMAN = "human"
    MACHINE = "machine"
    BUSY = "busy"
    NO_ANSWER = "no_answer"
    CONGESTION = "congestion"  # the network had no room (Q.850 34): kept apart from a failed number
    FAILED = "failed"


@dataclass(frozen=True)
class Script:
    """A scripted customer for one number (tests): what happens and when."""

    outcome: Outcome
    ring_s: float = 0.05
    talk_s: float = 3600.0  # after connect; the customer hangs up then
    patience_s: float = 3600.0  # waiting for an agent after answer; hangs up then


def load_script(path: str) -> dict[str, Script]:
    """Scripted customers from a JSON file: {"+8613800000001": {"outcome": "human", "ring_s": 1,
    "talk_s": 30, "patience_s": 60}, ...}; numbers not listed follow the profile."""
    import json

    with open(path, encoding="utf-8") as f:
        raw = json.load(f)
    return {
        validate_number(number): Script(
            Outcome(spec["outcome"]), **{k: float(v) for k, v in spec.items() if k != "outcome"}
        )
        for number, spec in raw.items()
    }


@dataclass(frozen=True)
class SimProfile:
    """How simulated customers and agents behave. Probabilities of the outcomes; the rest fail."""

    p_human: float = 0.35
    p_machine: float = 0.05
    p_busy: float = 0.10
    p_no_answer: float = 0.40
    p_congestion: float = 0.0
    ring: Dist = field(default_factory=lambda: Dist.uniform(3.0, 14.0))  # until a person/machine answers
    busy_after: Dist = field(default_factory=lambda: Dist.uniform(0.5, 2.0))
    fail_after: Dist = field(default_factory=lambda: Dist.uniform(0.1, 1.0))
    talk: Dist = field(default_factory=lambda: Dist.lognormal(120.0, 60.0))
    wrap_up: Dist = field(default_factory=lambda: Dist.const(15.0))
    agent_answer: Dist = field(default_factory=lambda: Dist.const(0.3))  # agent phone picks up
    patience: Dist = field(default_factory=lambda: Dist.uniform(2.0, 20.0))  # waiting for an agent
    machine_message: Dist = field(default_factory=lambda: Dist.uniform(10.0, 30.0))
    amd_delay: Dist = field(default_factory=lambda: Dist.uniform(1.5, 3.0))
    amd_false_machine: float = 0.02  # a live person classified as a machine
    amd_miss: float = 0.15  # a machine classified as a person
    abandon_message_s: float = 4.0
    seed: int = 1

    @property
    def p_failed(self) -> float:
        return max(
            0.0, 1.0 - self.p_human - self.p_machine - self.p_busy - self.p_no_answer - self.p_congestion
        )


def demo_profile(seed: int | None = None, *, time_scale: float = 1.0) -> SimProfile:
    """Customers for the real-time demo: short rings and talks so a task visibly moves. `time_scale`
    divides every duration (a scale of 20 runs a minute of calling in three seconds)."""
    import time as _time

    k = 1.0 / time_scale
    return SimProfile(
        p_human=0.40,
        p_machine=0.0,
        p_busy=0.15,
        p_no_answer=0.35,
        ring=Dist.uniform(2.0 * k, 8.0 * k),
        busy_after=Dist.uniform(0.5 * k, 2.0 * k),
        fail_after=Dist.uniform(0.1 * k, 1.0 * k),
        talk=Dist.lognormal(40.0 * k, 20.0 * k),
        wrap_up=Dist.uniform(4.0 * k, 10.0 * k),
        agent_answer=Dist.const(0.3 * k),
        patience=Dist.uniform(3.0 * k, 15.0 * k),
        machine_message=Dist.uniform(10.0 * k, 30.0 * k),
        amd_delay=Dist.uniform(1.5 * k, 3.0 * k),
        abandon_message_s=3.0 * k,
        seed=seed if seed is not None else int(_time.time()),
    )


# Outcomes that end before any ringing: the end each one reports.
_FAILURES: dict[Outcome, tuple[EndResult, int, str]] = {
    Outcome.BUSY: (EndResult.BUSY, 17, "busy"),
    Outcome.CONGESTION: (EndResult.CONGESTION, 34, "congestion"),
    Outcome.FAILED: (EndResult.FAILED, 41, "temporary failure"),
}


class _Phase(StrEnum):
    RINGING = "ringing"
    ANSWERED = "answered"
    CONNECTING = "connecting"
    CONNECTED = "connected"
    MESSAGE = "message"


@dataclass
class _SimCall:
    call_id: str
    number: str
    outcome: Outcome
    talk_s: float
    patience_s: float
    phase: _Phase = _Phase.RINGING
    extension: str | None = None
    timers: list[Timer] = field(default_factory=list)
    manual: bool = False


class SimulatedGateway:
    """A `Gateway` backed by `SimProfile`; see the module docstring."""

    kind = "simulated"

    def __init__(
        self,
        scheduler: Scheduler,
        profile: SimProfile | None = None,
        script: dict[str, Script] | None = None,
        *,
        time_scale: float = 1.0,
        originate_result_s: float = 0.0,
        session_rate: int = 0,
    ) -> None:
        self.scheduler = scheduler
        self.profile = profile or SimProfile()
        self.time_scale = time_scale  # the requests' ring timeouts are divided by it, like the profile
        self.rng = random.Random(self.profile.seed)
        self.script: dict[str, Script] = dict(script or {})
        self.calls: dict[str, _SimCall] = {}
        self.spies: dict[str, str] = {}  # spy id -> call id
        # Extensions whose phone rings and is never picked up (an agent who left their desk), and
        # extensions whose phone cannot be reached at all (unregistered: the agent leg fails at once).
        self.unattended: set[str] = set()
        self.unreachable: set[str] = set()
        # Set to a PBX word ("CHANUNAVAIL"): every agent leg fails at once for that PBX-side reason (no
        # channel, no RTP port: agent-leg-unavailable.jsonl), whatever the agent does.
        self.agent_legs_failing: str | None = None
        # The race of a real PBX (tests/fixtures/freeswitch-faults/, early-transfer-originator-cancel):
        # the answer is reported before the originate itself returns, `originate_result_s` later. A call
        # given to an agent in between gets the PBX's "ORIGINATOR_CANCEL" for its originate and goes on;
        # each originate's result is kept in `originate_results` (call id, "+OK" or that word).
        self.originate_result_s = originate_result_s
        self.originate_results: list[tuple[str, str]] = []
        # Originates the PBX takes per second (0: no limit); the excess is refused at once, as
        # FreeSWITCH's sessions-per-second does (session-rate-throttle.jsonl; it lets N-1 through, this
        # one N). `refusing`: every originate is refused (no channel driver, a PBX that says no).
        self.session_rate = session_rate
        self._rate_window: tuple[float, int] = (-1.0, 0)  # (second it counts, originates taken in it)
        self.refusing = False
        self.draining = False  # shut_down() until restart(): every originate refused
        self._emit: EventSink | None = None
        self._ids = itertools.count(1)
        self.originates = 0
        self.up = False

    # --- lifecycle ---------------------------------------------------------------------------

    async def start(self, emit: EventSink) -> None:
        self._emit = emit
        self.up = True
        self._send(GatewayLink(True, self.scheduler.now(), "simulated PBX"))

    async def close(self) -> None:
        self.up = False
        for call in self.calls.values():
            self._cancel_timers(call)
        self.calls.clear()

    # --- commands ----------------------------------------------------------------------------

    async def originate(self, request: OriginateRequest) -> None:
        self.originate_now(request)

    def originate_now(self, request: OriginateRequest) -> None:
        """Synchronous originate for discrete-event simulations (same behaviour as `originate`)."""
        if not self.up:
            raise GatewayUnavailable("simulated PBX is not started")
        self.originates += 1
        refusal = self._refusal()
        if refusal:
            # Refused before any line was tried: no ringing, the end comes at once (but not inside the
            # caller's originate(): events always follow the command that caused them).
            call = _SimCall(request.call_id, request.number, Outcome.FAILED, 0.0, 0.0)
            self.calls[request.call_id] = call
            self._later(call, 0.0, lambda: self._end(call, EndResult.REFUSED, 0, refusal))
            return
        scripted = self.script.get(request.number)
        p = self.profile
        if scripted is not None:
            outcome, ring_s = scripted.outcome, scripted.ring_s
            talk_s, patience_s = scripted.talk_s, scripted.patience_s
        else:
            outcome = self._draw_outcome()
            ring_s = {
                Outcome.BUSY: p.busy_after,
                Outcome.FAILED: p.fail_after,
                Outcome.CONGESTION: p.fail_after,
            }.get(outcome, p.ring).sample(self.rng)
            talk_s = (p.machine_message if outcome is Outcome.MACHINE else p.talk).sample(self.rng)
            patience_s = p.patience.sample(self.rng)
        call = _SimCall(request.call_id, request.number, outcome, talk_s, patience_s)
        self.calls[request.call_id] = call
        if outcome in _FAILURES:
            result, cause, detail = _FAILURES[outcome]
            self._later(call, ring_s, lambda: self._end(call, result, cause, detail))
            return
        self._later(
            call, min(0.05, ring_s / 2), lambda: self._send(CallRinging(call.call_id, self.scheduler.now()))
        )
        timeout = request.ring_timeout_s / self.time_scale
        if outcome is Outcome.NO_ANSWER or ring_s >= timeout:
            self._later(call, timeout, lambda: self._end(call, EndResult.NO_ANSWER, 19, "ring timeout"))
            return
        verdict = self._verdict(outcome, request.amd)
        delay = ring_s + (p.amd_delay.sample(self.rng) if request.amd else 0.0)
        self._later(call, ring_s, lambda: self._answered(call))
        self._later(
            call, delay, lambda: self._send(CallAnswered(call.call_id, self.scheduler.now(), verdict))
        )
        if self.originate_result_s > 0:
            # Not one of the call's timers: connect_agent and the end cancel those, not the originate.
            self.scheduler.call_later(ring_s + self.originate_result_s, lambda: self._originate_result(call))

    def shut_down(self, detail: str = "the PBX is shutting down") -> None:
        """A graceful shutdown, as both PBXs showed it: GatewayDraining, ringing calls cut (refused: the
        customer never had a chance), answered ones hung up, every later originate refused at once while
        the link stays up; `restart()` ends it."""
        now = self.scheduler.now()
        self.draining = True
        self._send(GatewayDraining(now, detail))
        for call in list(self.calls.values()):
            if call.phase is _Phase.RINGING:
                self._end(call, EndResult.REFUSED, 0, f"cut while ringing: {detail}")
            else:
                self._end(call, EndResult.ANSWERED, 16, f"hung up: {detail}")

    def restart(self) -> None:
        """The PBX after a shutdown: the link goes down and comes back, taking calls again."""
        self.draining = False
        self._send(GatewayLink(False, self.scheduler.now(), "the PBX shut down"))
        self._send(GatewayLink(True, self.scheduler.now(), "simulated PBX restarted"))

    async def hangup(self, call_id: str) -> None:
        self.hangup_now(call_id)

    def hangup_now(self, call_id: str) -> None:
        call = self._call(call_id)
        if call.phase is _Phase.RINGING:
            self._end(call, EndResult.CANCELLED, 16, "hung up by the controller while ringing")
        else:
            self._end(call, EndResult.ANSWERED, 16, "hung up by the controller")

    async def connect_agent(self, call_id: str, extension: str) -> None:
        self.connect_agent_now(call_id, extension)

    def connect_agent_now(self, call_id: str, extension: str) -> None:
        validate_extension(extension)
        call = self._call(call_id)
        if call.phase is not _Phase.ANSWERED:
            raise CallNotFound(f"call {call_id} is {call.phase.value}, not waiting for an agent")
        self._cancel_timers(call)  # the customer's patience timer: an agent is coming
        call.phase = _Phase.CONNECTING
        call.extension = extension
        if extension in self.unattended:
            return  # rings until the controller gives up on it
        if extension in self.unreachable or self.agent_legs_failing:
            self._later(call, 0.05, lambda: self._agent_leg_failed(call, extension))
            return
        self._later(call, self.profile.agent_answer.sample(self.rng), lambda: self._connected(call))

    async def play_and_hangup(self, call_id: str, sound: str) -> None:
        self.play_and_hangup_now(call_id, sound)

    def play_and_hangup_now(self, call_id: str, sound: str) -> None:
        validate_sound(sound)
        call = self._call(call_id)
        self._cancel_timers(call)
        call.phase = _Phase.MESSAGE
        self._later(
            call,
            self.profile.abandon_message_s,
            lambda: self._end(call, EndResult.ANSWERED, 16, f"played {sound}"),
        )

    async def spy(self, *, target_extension: str, supervisor_extension: str, mode: SpyMode) -> str:
        mode = check_spy_request(target_extension, supervisor_extension, mode)
        for call in self.calls.values():
            if call.extension == target_extension and call.phase is _Phase.CONNECTED:
                spy_id = f"spy-{next(self._ids)}"
                self.spies[spy_id] = call.call_id
                self._send(SpyStarted(spy_id, self.scheduler.now(), target_extension, mode))
                return spy_id
        raise CallNotFound(f"agent {target_extension} has no call to listen to")

    async def active_calls(self) -> list[ActiveCall]:
        return [
            ActiveCall(
                channel=f"SIM/{c.number}-{c.call_id}",
                call_id=c.call_id,
                state=c.phase.value,
                extension=c.extension,
                answered=c.phase is not _Phase.RINGING,
            )
            for c in self.calls.values()
        ]

    async def adopt(self, call_id: str) -> bool:
        return call_id in self.calls

    def agent_dials(
        self, extension: str, number: str, *, ring_s: float = 1.0, talk_s: float = 30.0, answered: bool = True
    ) -> str:
        """Simulate an agent dialling a customer by hand from their phone; returns the call id."""
        validate_extension(extension)
        validate_number(number)
        call_id = validate_call_id(f"manual-{next(self._ids)}")
        call = _SimCall(
            call_id,
            number,
            Outcome.HUMAN if answered else Outcome.NO_ANSWER,
            talk_s,
            0.0,
            extension=extension,
            manual=True,
        )
        self.calls[call_id] = call
        self._send(ManualCallStarted(call_id, self.scheduler.now(), extension, number))
        if answered:
            self._later(call, ring_s, lambda: self._connected(call))
        else:
            self._later(call, ring_s, lambda: self._end(call, EndResult.NO_ANSWER, 19, "no answer"))
        return call_id

    def sample_wrap_up(self) -> float:
        """How long a simulated agent spends in wrap-up after a call."""
        return self.profile.wrap_up.sample(self.rng)

    # --- internals ---------------------------------------------------------------------------

    def _refusal(self) -> str:
        """Why the PBX refuses an originate now ("" if it takes it)."""
        if self.draining:
            return "refused: the PBX is shutting down"
        if self.refusing:
            return "refused by the PBX"
        if self.session_rate > 0:
            second = math.floor(self.scheduler.now())
            start, taken = self._rate_window
            taken = taken if start == second else 0
            if taken >= self.session_rate:
                self._rate_window = (second, taken)
                return f"refused: over the PBX's session rate ({self.session_rate} per second)"
            self._rate_window = (second, taken + 1)
        return ""

    def _draw_outcome(self) -> Outcome:
        p = self.profile
        x = self.rng.random()
        for outcome, prob in (
            (Outcome.HUMAN, p.p_human),
            (Outcome.MACHINE, p.p_machine),
            (Outcome.BUSY, p.p_busy),
            (Outcome.NO_ANSWER, p.p_no_answer),
            (Outcome.CONGESTION, p.p_congestion),
        ):
            if x < prob:
                return outcome
            x -= prob
        return Outcome.FAILED

    def _verdict(self, outcome: Outcome, amd: bool) -> AnswerKind:
        if not amd:
            return AnswerKind.UNKNOWN
        p = self.profile
        if outcome is Outcome.MACHINE:
            return AnswerKind.HUMAN if self.rng.random() < p.amd_miss else AnswerKind.MACHINE
        return AnswerKind.MACHINE if self.rng.random() < p.amd_false_machine else AnswerKind.HUMAN

    def _answered(self, call: _SimCall) -> None:
        call.phase = _Phase.ANSWERED
        self._later(
            call, call.patience_s, lambda: self._end(call, EndResult.ANSWERED, 16, "customer hung up waiting")
        )

    def _originate_result(self, call: _SimCall) -> None:
        if call.call_id not in self.calls:
            return  # ended before: its end was its result
        taken = call.phase in (_Phase.CONNECTING, _Phase.CONNECTED, _Phase.MESSAGE)
        self.originate_results.append((call.call_id, "ORIGINATOR_CANCEL" if taken else "+OK"))

    def _agent_leg_failed(self, call: _SimCall, extension: str) -> None:
        call.extension = None
        self._answered(call)  # waiting again, with its patience
        detail = self.agent_legs_failing or "USER_NOT_REGISTERED"
        self._send(AgentLegFailed(call.call_id, self.scheduler.now(), extension, detail))

    def _connected(self, call: _SimCall) -> None:
        call.phase = _Phase.CONNECTED
        assert call.extension is not None
        self._send(CallConnected(call.call_id, self.scheduler.now(), call.extension))
        self._later(call, call.talk_s, lambda: self._end(call, EndResult.ANSWERED, 16, "normal clearing"))

    def _end(self, call: _SimCall, result: EndResult, cause: int, detail: str) -> None:
        if self.calls.pop(call.call_id, None) is None:
            return
        self._cancel_timers(call)
        now = self.scheduler.now()
        for spy_id, target in list(self.spies.items()):
            if target == call.call_id:
                del self.spies[spy_id]
                self._send(SpyEnded(spy_id, now))
        self._send(CallEnded(call.call_id, now, result, cause, detail))

    def _later(self, call: _SimCall, delay: float, fn: Callable[[], None]) -> None:
        call.timers.append(self.scheduler.call_later(delay, fn))

    @staticmethod
    def _cancel_timers(call: _SimCall) -> None:
        for t in call.timers:
            t.cancel()
        call.timers.clear()

    def _call(self, call_id: str) -> _SimCall:
        call = self.calls.get(call_id)
        if call is None:
            raise CallNotFound(f"no call {call_id}")
        return call

    def _send(self, event: GatewayEvent) -> None:
        if self._emit is not None:
            self._emit(event)
