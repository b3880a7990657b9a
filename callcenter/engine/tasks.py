"""What the dialer keeps per running task: its settings, its pacer, its rules, its counters and an
index of its calls by pacing stage (so pacing never walks every call). Pure, no I/O."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from callcenter.engine.calls import AGENT_STAGE, CONNECTED_STAGE, RINGING_STAGE, WAITING_STAGE, LiveCall
from callcenter.engine.pacing import Pacer, PredictivePacer, PredictiveSettings, PreviewPacer, RatioPacer
from callcenter.engine.store import CampaignConf
from callcenter.models import PacingMode
from callcenter.policy import RetryPolicy, Window
from callcenter.stats import Counters


def make_pacer(conf: CampaignConf) -> Pacer:
    mode = PacingMode(conf.pacing_mode)
    if mode is PacingMode.PREDICTIVE:
        return PredictivePacer(
            PredictiveSettings(
                target_abandon=conf.abandon_target_pct / 100.0, min_agents=conf.predictive_min_agents
            ),
            wrap_up_s=conf.wrap_up_s,
        )
    if mode is PacingMode.PREVIEW:
        return PreviewPacer()
    return RatioPacer(1.0 if mode is PacingMode.PROGRESSIVE else conf.agent_ratio)


def pacing_key(conf: CampaignConf) -> tuple[Any, ...]:
    """The settings a pacer is built from: a change of any of them rebuilds it."""
    return (conf.pacing_mode, conf.agent_ratio, conf.abandon_target_pct, conf.predictive_min_agents)


def gateway_key(gateway_id: int | None) -> str:
    return f"gw{gateway_id}" if gateway_id is not None else "default"


@dataclass
class TaskRuntime:
    conf: CampaignConf
    pacer: Pacer
    window: Window
    policy: RetryPolicy
    tz_keys: list[str]
    counters: Counters
    others_active: int = 0  # this task's calls other dialers have up
    held: bool = False  # this dialer holds the lease of the task's skill group: it paces the task
    dry_until: float = 0.0  # found nothing due: no share of the group's agents until then
    last_extra: float = 0.0  # when it last got one of the group's ready agents left over by a split
    # Calls of this task the PBX refused in a row for the same reason while it took others' calls.
    refusals: int = 0
    refusal: str = ""
    next_left_check: float = 0.0
    calls: set[str] = field(default_factory=set)
    # `calls` by pacing stage (see `index`): placed and not answered (id -> when placed), answered
    # and waiting for an agent, an agent being connected, connected.
    ringing: dict[str, float] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    agent_ringing: set[str] = field(default_factory=set)
    connected: set[str] = field(default_factory=set)

    @classmethod
    def of(cls, conf: CampaignConf, pacer: Pacer, *, tz_keys: list[str], counters: Counters) -> TaskRuntime:
        return cls(
            conf=conf,
            pacer=pacer,
            window=Window.of(conf.window_start, conf.window_end, conf.window_days, conf.timezone),
            policy=RetryPolicy.parse(conf.max_attempts, conf.retry_delays),
            tz_keys=tz_keys,
            counters=counters,
        )

    @property
    def gateway(self) -> str:
        return gateway_key(self.conf.gateway_id)

    def follow(self, call: LiveCall) -> None:
        self.calls.add(call.id)
        self.index(call)

    def unfollow(self, call: LiveCall) -> None:
        self.calls.discard(call.id)
        self.unindex(call.id)

    def index(self, call: LiveCall) -> None:
        """Put `call` in the pacing stage of its current state."""
        if call.id not in self.calls:
            return
        self.unindex(call.id)
        state = call.state
        if state in RINGING_STAGE:
            self.ringing[call.id] = call.created_at
        elif state in WAITING_STAGE:
            self.waiting.add(call.id)
        elif state in AGENT_STAGE:
            self.agent_ringing.add(call.id)
        elif state in CONNECTED_STAGE:
            self.connected.add(call.id)

    def unindex(self, call_id: str) -> None:
        self.ringing.pop(call_id, None)
        self.waiting.discard(call_id)
        self.agent_ringing.discard(call_id)
        self.connected.discard(call_id)


def warm(pacer: Pacer, recent: Iterable[Mapping[str, Any]], abandon_totals: tuple[int, int]) -> None:
    """Teach a new pacer from the task's recent ended calls (oldest first), so a restart does not
    start it cold."""
    for row in recent:
        created, answered, connected, ended, result = (
            row["created_at"],
            row["answered_at"],
            row["connected_at"],
            row["ended_at"],
            row["result"],
        )
        if result in ("cancelled", "not_dialled", "refused", "dnc", ""):
            continue
        human = answered is not None and row["answer_kind"] != "machine"
        pacer.observe_dial(
            human=human, ring_s=((answered if human else ended) or created) - created, now=created
        )
        if result in ("answered", "abandoned"):
            pacer.observe_answer(abandoned=result == "abandoned", now=answered or created)
        if connected is not None and ended is not None:
            pacer.observe_talk(ended - connected)
    if isinstance(pacer, PredictivePacer):
        pacer.live, pacer.abandoned = abandon_totals
