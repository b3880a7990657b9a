"""The health of each gateway as the dialer sees it, and how fast it may place calls there. Pure.

A PBX's refusal is a gateway fault, never a customer's outcome (DOMAIN: gateways). Each gateway is:
- `up`: calls are placed, at most `originates_per_s` a second (a token bucket: a PBX throttles bursts
  - FreeSWITCH's sessions-per-second refused 101 of 300 calls of an 82-in-0.14-s burst);
- `degraded`: it refused calls (throttle, capacity, a burst of instant identical failures, many agent
  legs failing at once): nothing is placed until `retry_at` (exponential backoff, capped), then one
  probe call at a time until a call gets a customer-level outcome (ringing, answer, busy...);
- `draining`: it announced a shutdown; nothing until its link has gone down and come back;
- `down`: no link; `disabled`: switched off by an admin.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from callcenter.messages import GatewayState, GatewayStatus

BACKOFF_FIRST_S = 2.0
BACKOFF_MAX_S = 60.0
# Instant failures (the line never rang, ended within a second of the originate) with the same
# cause: this many within BURST_WINDOW_S on one gateway are the PBX's doing, not the customers'.
BURST_COUNT = 5
BURST_WINDOW_S = 1.0
# Q.850 causes that speak about the customer's line (busy, no answer, wrong number, rejected): never
# taken for a PBX fault, however many arrive at once (a bad list can fail fast in bulk).
CUSTOMER_CAUSES = frozenset({1, 3, 17, 18, 19, 20, 21, 22, 28})
# Agent legs failing for a PBX-side reason (no channel, no RTP port): this many distinct agents within
# AGENT_BURST_WINDOW_S trip the gateway instead of setting each agent not ready.
AGENT_BURST_COUNT = 3
AGENT_BURST_WINDOW_S = 2.0
PBX_SIDE_AGENT_FAILURES = frozenset({"CHANUNAVAIL", "CONGESTION", "CHAN_NOT_IMPLEMENTED", "SYSTEM_SHUTDOWN"})


@dataclass
class TokenBucket:
    """At most `rate` per second on average, `burst` at once.

    >>> b = TokenBucket(rate=2.0, burst=2.0, tokens=2.0, at=0.0)
    >>> b.available(0.0), b.take(2, 0.0), b.available(0.0), b.available(0.5)
    (2, 2, 0, 1)
    """

    rate: float
    burst: float
    tokens: float = 0.0
    at: float = 0.0

    def _refill(self, now: float) -> None:
        if now > self.at:
            self.tokens = min(self.burst, self.tokens + (now - self.at) * self.rate)
            self.at = now

    def available(self, now: float) -> int:
        self._refill(now)
        return int(self.tokens + 1e-6)

    def take(self, n: int, now: float) -> int:
        self._refill(now)
        n = min(n, int(self.tokens + 1e-6))
        self.tokens -= n
        return n

    def next_token_at(self, now: float) -> float:
        """When the next whole token is in, at least a millisecond ahead (epoch seconds carry about
        2e-7 s of precision: a smaller step would not move the clock at all)."""
        self._refill(now)
        if self.tokens + 1e-6 >= 1:
            return now
        return now + max(0.001, (1 - self.tokens) / self.rate)


@dataclass
class GatewayHealth:
    key: str
    name: str = ""
    originates_per_s: float = 10.0
    state: GatewayState = GatewayState.UP
    detail: str = ""
    retry_at: float | None = None
    backoff_s: float = 0.0
    probing: bool = False  # degraded, backoff over: one call at a time until one goes through
    probe_out: bool = False
    # What degraded it: "calls" (the PBX refused calls: a call reaching its customer clears it) or
    # "agents" (agent legs failing for a PBX reason: only a call bridged to an agent clears it).
    degraded_by: str = ""
    bucket: TokenBucket = field(init=False)
    instant: deque[tuple[float, int]] = field(default_factory=deque)  # (when, cause) of instant failures
    agent_failures: deque[tuple[float, int]] = field(default_factory=deque)  # (when, agent id)

    def __post_init__(self) -> None:
        rate = max(0.1, self.originates_per_s)
        self.bucket = TokenBucket(rate=rate, burst=max(1.0, rate), tokens=max(1.0, rate))

    # --- what may be placed -----------------------------------------------------------------------

    def allowance(self, now: float) -> int:
        """How many calls may be placed through this gateway now."""
        if self.state is GatewayState.DEGRADED:
            if self.retry_at is not None and now < self.retry_at:
                return 0
            self.probing = True
            return 0 if self.probe_out else min(1, self.bucket.available(now))
        if self.state is not GatewayState.UP:
            return 0
        return self.bucket.available(now)

    def placed(self, n: int, now: float) -> None:
        self.bucket.take(n, now)
        if n and self.probing:
            self.probe_out = True

    def wake_at(self, now: float) -> float | None:
        """When placing may become possible again (for the engine's timer), or None (an event will)."""
        if self.state is GatewayState.DEGRADED:
            return self.retry_at if self.retry_at is not None and now < self.retry_at else None
        if self.state is GatewayState.UP and self.bucket.available(now) < 1:
            return self.bucket.next_token_at(now)
        return None

    # --- what happened ----------------------------------------------------------------------------

    def went_through(self, now: float, *, bridged: bool = False) -> bool:
        """A call reached the customer's line (rang, was answered, was busy...), or was `bridged` to an
        agent: a gateway degraded for that kind of fault is healthy again. True when the state changed."""
        if self.state is not GatewayState.DEGRADED:
            self.probe_out = False
            return False
        if self.degraded_by == "agents" and not bridged:
            return False
        self.probe_out = False
        self.state, self.detail, self.retry_at = GatewayState.UP, "", None
        self.backoff_s, self.probing = 0.0, False
        return True

    def refused(self, now: float, detail: str, *, by: str = "calls") -> bool:
        """The PBX refused a call (`by` "calls"), or agent legs (`by` "agents"): back off (doubling,
        capped). True when the state changed."""
        self.probe_out = False
        if self.state in (GatewayState.DRAINING, GatewayState.DOWN, GatewayState.DISABLED):
            return False
        was = (self.state, self.retry_at)
        if self.state is GatewayState.DEGRADED and self.retry_at is not None and now < self.retry_at:
            return False  # a refusal of a call placed before the backoff began: same episode
        self.backoff_s = min(BACKOFF_MAX_S, self.backoff_s * 2 if self.backoff_s else BACKOFF_FIRST_S)
        self.state, self.detail, self.retry_at = GatewayState.DEGRADED, detail, now + self.backoff_s
        self.probing = False
        self.degraded_by = by
        return (self.state, self.retry_at) != was

    def instant_failure(self, now: float, cause: int) -> bool:
        """A call failed before its line rang, within a second of the originate. True when this makes
        a burst of identical ones (then the caller treats them as refusals)."""
        if cause in CUSTOMER_CAUSES:
            return False
        while self.instant and self.instant[0][0] < now - BURST_WINDOW_S:
            self.instant.popleft()
        self.instant.append((now, cause))
        return sum(1 for _, c in self.instant if c == cause) >= BURST_COUNT

    def agent_leg_failed(self, now: float, agent_id: int, detail: str) -> bool:
        """An agent's phone could not be reached for a PBX-side reason. True when several distinct
        agents failed like this at once: the PBX (capacity, RTP ports) is at fault, not the agents."""
        if detail.upper() not in PBX_SIDE_AGENT_FAILURES:
            return False
        while self.agent_failures and self.agent_failures[0][0] < now - AGENT_BURST_WINDOW_S:
            self.agent_failures.popleft()
        self.agent_failures.append((now, agent_id))
        return len({a for _, a in self.agent_failures}) >= AGENT_BURST_COUNT

    def recent_agent_failures(self, now: float) -> set[int]:
        return {a for t, a in self.agent_failures if t >= now - AGENT_BURST_WINDOW_S}

    def link(self, up: bool, detail: str) -> bool:
        """The link went up or down. True when the state changed."""
        if self.state is GatewayState.DISABLED:
            return False
        was = self.state
        if up:
            # A link that came back after a drain or a drop starts afresh; a degraded one keeps its
            # backoff (the link never went away).
            if self.state in (GatewayState.DOWN, GatewayState.DRAINING):
                self.state, self.detail, self.retry_at, self.backoff_s = GatewayState.UP, "", None, 0.0
                self.probing = self.probe_out = False
        else:
            self.state, self.detail = GatewayState.DOWN, detail
        return self.state is not was

    def draining(self, detail: str) -> bool:
        if self.state in (GatewayState.DRAINING, GatewayState.DOWN, GatewayState.DISABLED):
            return False
        self.state, self.detail, self.retry_at = GatewayState.DRAINING, detail, None
        return True

    def status(self, now: float) -> GatewayStatus:
        return GatewayStatus(
            gateway=self.key,
            name=self.name or self.key,
            state=self.state,
            detail=self.detail,
            retry_at=self.retry_at,
            at=now,
        )
