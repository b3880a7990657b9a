"""The dialer engine's core: from events and the clock to database writes and PBX commands.

`DialerCore` is synchronous and does no network I/O: the async runner (`callcenter.engine.runner`) feeds it
gateway events and ticks, and sends the commands it returns to the gateways; the benchmark feeds it
from a discrete-event clock instead. Every method runs inside one store transaction and returns the
commands to send after that transaction commits, so a crash never leaves a dialled call without its
row.

For each running task: on every event that frees capacity, and on a tick of at most one second, it
asks the task's pacer how many calls to place, claims that many due leads in their calling window,
and originates them. An answered call goes to the longest-idle ready agent of the task's skill
group; if no agent is connected within `abandon_after_s` (2 s) it is abandoned: the message plays
and the call is hung up; a reserved agent whose phone rang unanswered goes not ready (missed call).
Ends settle the lead (retry policy), free the agent into wrap-up, and
teach the pacer.
"""

from __future__ import annotations

import heapq
import itertools
import json
import logging
from collections import deque
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from callcenter import agents as agent_table
from callcenter import campaigns as campaign_table
from callcenter.engine.commands import (
    Command,
    ConnectAgent,
    Hangup,
    Originate,
    OriginateRequest,
    PlayAndHangup,
)
from callcenter.engine.events import (
    ActiveCall,
    AgentLegFailed,
    AnswerKind,
    CallAnswered,
    CallConnected,
    CallEnded,
    CallRinging,
    EndResult,
    GatewayEvent,
    GatewayLink,
    ManualCallStarted,
    UnknownChannel,
)
from callcenter.engine.pacing import (
    ABANDON_AFTER_S,
    AgentSlot,
    Pacer,
    PacingView,
    PredictivePacer,
    PredictiveSettings,
    PreviewPacer,
    RatioPacer,
)
from callcenter.engine.store import AgentRow, CampaignConf, SqlStore
from callcenter.errors import Conflict, Invalid
from callcenter.models import AgentState, CallResult, CallState, CampaignState, PacingMode
from callcenter.notifier import Notifier
from callcenter.policy import RetryPolicy, Window, after_attempt
from callcenter.stats import Counters, snapshot_from_db

log = logging.getLogger(__name__)
AE = agent_table.AgentEvent
MANUAL_WRAP_UP_S = 30.0
REFRESH_S = 1.0
_STATES = {s.value: s for s in AgentState}  # row value -> enum, without Enum.__call__ per agent per pace
OFFLINE = AgentState.OFFLINE.value
# An abandon while the reserved agent's phone has rung this long counts as the agent missing the call
# (they go not ready). Shorter, and the agent was reserved too late to be blamed: back to ready.
MISSED_AFTER_S = 1.0


@dataclass
class LiveCall:
    """A call this dialer follows (its row in the database is the durable copy). After a change of
    `state`, `abandoning` or `created_at`, `DialerCore._index` puts it in its task's pacing index."""

    id: str
    campaign_id: int | None
    lead_id: int | None
    number: str
    gateway: str
    created_at: float
    attempt: int = 1
    state: CallState = CallState.DIALING
    direction: str = "outbound"
    answered_at: float | None = None
    agent_at: float | None = None
    connected_at: float | None = None
    agent_id: int | None = None
    machine: bool = False
    abandoning: bool = False
    hangup_sent: bool = False
    preview: bool = False
    dial_observed: bool = False
    note: str = ""  # why we ended it ourselves (abandon), kept ahead of the PBX's detail


@dataclass
class TaskRuntime:
    conf: CampaignConf
    pacer: Pacer
    window: Window
    policy: RetryPolicy
    tz_keys: list[str]
    counters: Counters
    others_active: int = 0
    next_left_check: float = 0.0
    calls: set[str] = field(default_factory=set)
    # `calls` by pacing stage, kept by DialerCore._follow / _index / _unfollow so that pacing does not
    # walk every call: placed and not answered (id -> when placed), answered and waiting for an agent,
    # an agent being connected, connected.
    ringing: dict[str, float] = field(default_factory=dict)
    waiting: set[str] = field(default_factory=set)
    agent_ringing: set[str] = field(default_factory=set)
    connected: set[str] = field(default_factory=set)

    def unindex(self, call_id: str) -> None:
        self.ringing.pop(call_id, None)
        self.waiting.discard(call_id)
        self.agent_ringing.discard(call_id)
        self.connected.discard(call_id)


def gateway_key(gateway_id: int | None) -> str:
    return f"gw{gateway_id}" if gateway_id is not None else "default"


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


class DialerCore:
    def __init__(
        self,
        store: SqlStore,
        *,
        notifier: Notifier | None = None,
        pacer_factory: Callable[[CampaignConf], Pacer] = make_pacer,
        wrap_sampler: Callable[[AgentRow], float | None] | None = None,
        abandon_after_s: float = ABANDON_AFTER_S,
        pop_builder: Callable[[str], Mapping[str, Any] | None] | None = None,
        refresh_s: float = REFRESH_S,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.pacer_factory = pacer_factory
        self.wrap_sampler = wrap_sampler
        self.abandon_after_s = abandon_after_s
        self.pop_builder = pop_builder
        self.refresh_s = refresh_s
        self.tasks: dict[int, TaskRuntime] = {}
        self.calls: dict[str, LiveCall] = {}
        self.agents: dict[int, AgentRow] = {}
        # Per skill group: (agents generation, its agents, their pacing slots). The generation moves
        # on every agent move and refresh, so a pace reuses the slots while no agent changed.
        self._agents_gen = 0
        self._groups: dict[int, tuple[int, list[AgentRow], tuple[AgentSlot, ...]]] = {}
        self.waiting: dict[int, deque[str]] = {}  # skill group -> answered calls waiting for an agent
        self._timers: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._dirty: set[int] = set()
        self._next_refresh = 0.0
        self._out: list[Command] = []
        self._now = 0.0
        self.originated = 0
        self.links_down: set[str] = set()

    # --- entry points (each inside one store transaction) -----------------------------------

    def start(
        self, active: Mapping[str, Iterable[ActiveCall]], adopt: Callable[[str, str], bool], now: float
    ) -> list[Command]:
        """Resume after a start or a crash: follow open calls the PBX still has, end the others as
        lost, give back leads claimed but never dialled, release agents held by ended calls."""
        self._refresh(now)
        live = {key: {a.call_id for a in calls if a.call_id} for key, calls in active.items()}
        for row in self.store.open_calls(mine=True):
            call = LiveCall(
                id=row["id"],
                campaign_id=row["campaign_id"],
                lead_id=row["lead_id"],
                number=row["number"],
                gateway=row["gateway"],
                created_at=row["created_at"],
                attempt=row["attempt"],
                state=CallState(row["state"]),
                direction=row["direction"],
                answered_at=row["answered_at"],
                agent_at=row["agent_at"],
                connected_at=row["connected_at"],
                agent_id=row["agent_id"],
                machine=row["answer_kind"] == "machine",
                preview=row["state"] == CallState.PREVIEW.value,
            )
            self.calls[call.id] = call
            if call.campaign_id in self.tasks:
                self._follow(self.tasks[call.campaign_id], call)
            if call.preview:
                self._end(call, CallResult.CANCELLED, 0, "preview dropped at dialer restart", now)
            elif call.id in live.get(call.gateway, set()) and adopt(call.gateway, call.id):
                if call.state is CallState.ANSWERED and call.answered_at is not None:
                    self._timer(call.answered_at + self.abandon_after_s, "abandon", call.id)
            else:
                self._end(call, CallResult.LOST, 0, "not on the PBX after dialer restart", now)
        released = self.store.orphan_claims([self.store.dialer_id])
        if released:
            log.info("gave back %d leads claimed but never dialled", released)
        self._release_stranded_agents(now)
        return self._flush(now)

    def handle(self, events: Iterable[GatewayEvent], now: float) -> list[Command]:
        self._now = now
        for event in events:
            try:
                self._on_event(event, now)
            except Conflict as exc:  # a compare-and-set lost a race: the row moved on, nothing to undo
                log.info("skipped %s: %s", type(event).__name__, exc)
        return self._flush(now)

    def tick(self, now: float) -> list[Command]:
        """Timers, wrap-up ends, task state changes, completion, and pacing of every running task."""
        refreshed = now >= self._next_refresh
        if refreshed:
            self._refresh(now)
        wrap_due: set[int] = set()
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._timers)
            if kind == "abandon":
                self._abandon_check(key, now)
            else:
                wrap_due.add(int(key))
        self._wrap_up_timeouts(now, wrap_due, scan=refreshed)
        self._enforce_task_states(now)
        self._dirty.update(cid for cid, t in self.tasks.items() if t.conf.state is CampaignState.RUNNING)
        return self._flush(now)

    def next_wake(self) -> float | None:
        return self._timers[0][0] if self._timers else None

    def command_failed(self, command: Command, error: Exception, now: float) -> list[Command]:
        """The runner could not send a command: settle what it was for."""
        return self.commands_failed([(command, error)], now)

    def commands_failed(self, failed: Iterable[tuple[Command, Exception]], now: float) -> list[Command]:
        """The runner could not send these commands: settle what each was for, then pace once."""
        for command, error in failed:
            call = self.calls.get(
                command.call_id if not isinstance(command, Originate) else command.request.call_id
            )
            if call is None:
                continue
            if isinstance(command, Originate):
                self._end(call, CallResult.NOT_DIALLED, 0, f"not sent: {error}", now)
            elif isinstance(command, ConnectAgent):
                log.warning("connect of %s to agent failed: %s", call.id, error)
                self._abandon(call, now, f"agent connect failed: {error}")
            elif isinstance(command, PlayAndHangup | Hangup):
                log.warning("%s of %s failed: %s", type(command).__name__, call.id, error)
        return self._flush(now)

    def link_changed(self, gateway: str, up: bool, detail: str, now: float) -> list[Command]:
        """A gateway's link went down or up: no new calls are placed through a gateway that is down
        (they would only fail); calls already placed are followed by the driver's resync."""
        if up:
            self.links_down.discard(gateway)
            self._dirty.update(self.tasks)
        else:
            self.links_down.add(gateway)
        if self.notifier:
            self.notifier.gateway_link(gateway=gateway, up=up, detail=detail, at=now)
        return self._flush(now)

    def agent_changed(self, now: float) -> list[Command]:
        """An agent's state changed elsewhere (web): refresh and pace now."""
        self._refresh(now)
        self._dirty.update(self.tasks)
        return self._flush(now)

    def _offered(self, call_id: str, agent_id: int) -> LiveCall:
        """The call offered to this agent in preview mode and not dialled yet, or Conflict."""
        call = self.calls.get(call_id)
        if (
            call is None
            or not call.preview
            or call.agent_id != agent_id
            or call.state is not CallState.PREVIEW
        ):
            raise Conflict("this preview is no longer yours", field="call_id")
        return call

    def preview_dial(self, call_id: str, agent_id: int, now: float) -> list[Command]:
        call = self._offered(call_id, agent_id)
        task = self.tasks.get(call.campaign_id or -1)
        if task is None or task.conf.state is not CampaignState.RUNNING:
            raise Conflict("the task is not running", field="state")
        call.state = CallState.DIALING
        call.created_at = now
        self._index(call)
        self.store.start_call(call.id, created_at=now)
        self._originate(task, call)
        return self._flush(now)

    def preview_skip(self, call_id: str, agent_id: int, now: float) -> list[Command]:
        call = self._offered(call_id, agent_id)
        self._end(call, CallResult.CANCELLED, 0, "skipped by the agent in preview", now)
        return self._flush(now)

    def snapshot(self, campaign_id: int, now: float) -> dict[str, Any] | None:
        """The live counters of a task this dialer runs (published every second)."""
        task = self.tasks.get(campaign_id)
        if task is None:
            return None
        c = task.counters
        c.ringing = len(task.ringing)
        c.lines_per_agent = task.pacer.lines_per_agent
        if isinstance(task.pacer, PredictivePacer):
            c.abandon_rolling_pct = 100.0 * task.pacer.abandon_rates(now)[0]
        data = c.as_dict()
        data.update(
            state=task.conf.state.value, name=task.conf.name, pacing_mode=task.conf.pacing_mode, at=now
        )
        return data

    # --- refresh from the database ------------------------------------------------------------

    def _refresh(self, now: float) -> None:
        self._next_refresh = now + self.refresh_s
        self._now = now
        confs = {c.id: c for c in self.store.live_campaigns()}
        for cid in list(self.tasks):
            if cid not in confs and not self.tasks[cid].calls:
                del self.tasks[cid]
        for cid, conf in confs.items():
            task = self.tasks.get(cid)
            if task is None:
                self.tasks[cid] = self._new_task(conf)
            elif task.conf != conf:
                if (
                    task.conf.pacing_mode,
                    task.conf.agent_ratio,
                    task.conf.abandon_target_pct,
                    task.conf.predictive_min_agents,
                ) != (
                    conf.pacing_mode,
                    conf.agent_ratio,
                    conf.abandon_target_pct,
                    conf.predictive_min_agents,
                ):
                    task.pacer = self.pacer_factory(conf)
                    self._warm(task)
                task.conf = conf
        for cid, task in self.tasks.items():
            if cid not in confs:  # stopped or deleted with calls still to follow
                state = self.store.campaign_states([cid]).get(cid, CampaignState.STOPPED.value)
                task.conf = _replace_state(task.conf, CampaignState(state))
            task.others_active = (
                self.store.active_calls_count(cid, others_only=True)
                if task.conf.state is CampaignState.RUNNING
                else 0
            )
        old = self.agents
        self.agents = self.store.agents()
        self._agents_gen += 1
        for aid, row in self.agents.items():
            before = old.get(aid)
            if before and before.state == AgentState.WRAP_UP.value and row.state == AgentState.READY.value:
                self._observe_wrap(before, now)

    def _new_task(self, conf: CampaignConf) -> TaskRuntime:
        task = TaskRuntime(
            conf=conf,
            pacer=self.pacer_factory(conf),
            window=Window.of(conf.window_start, conf.window_end, conf.window_days, conf.timezone),
            policy=RetryPolicy.parse(conf.max_attempts, conf.retry_delays),
            tz_keys=self.store.tz_keys(conf.id),
            counters=snapshot_from_db(self.store.c, conf.id),
        )
        self._warm(task)
        return task

    def _warm(self, task: TaskRuntime) -> None:
        """Teach a new pacer from the task's recent calls, so a restart does not start it cold."""
        pacer = task.pacer
        for row in self.store.recent_calls(task.conf.id):
            created, answered, connected, ended, result = (
                row["created_at"],
                row["answered_at"],
                row["connected_at"],
                row["ended_at"],
                row["result"],
            )
            if result in ("cancelled", "not_dialled", "dnc", ""):
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
            live, abandoned = self.store.abandon_totals(task.conf.id)
            pacer.live, pacer.abandoned = live, abandoned

    # --- gateway events -------------------------------------------------------------------------

    def _on_event(self, event: GatewayEvent, now: float) -> None:
        if isinstance(event, UnknownChannel):
            log.warning("unknown channel on the PBX: %s %s", event.channel, event.detail)
            return
        if isinstance(event, GatewayLink):  # the runner reports links per gateway: see link_changed
            return
        if isinstance(event, ManualCallStarted):
            self._manual_started(event, now)
            return
        call = self.calls.get(getattr(event, "call_id", ""))
        if call is None:
            return  # another dialer's call, a spy leg, or already settled
        if isinstance(event, CallRinging):
            if call.state is CallState.DIALING:
                call.state = CallState.RINGING
                self._index(call)
                self.store.update_call(call.id, state=CallState.RINGING.value, ringing_at=now)
        elif isinstance(event, CallAnswered):
            self._answered(call, event.answer, now)
        elif isinstance(event, CallConnected):
            self._connected(call, now)
        elif isinstance(event, AgentLegFailed):
            self._agent_leg_failed(call, event, now)
        elif isinstance(event, CallEnded):
            self._ended(call, event, now)

    def _answered(self, call: LiveCall, answer: AnswerKind, now: float) -> None:
        if call.answered_at is not None:
            return
        call.answered_at = now
        task = self.tasks.get(call.campaign_id or -1)
        if answer is AnswerKind.MACHINE:
            call.machine = True
            self._observe_dial(call, human=False, now=now)
            self.store.update_call(
                call.id, state=CallState.ANSWERED.value, answered_at=now, answer_kind="machine"
            )
            self._hangup(call)
            return
        self._observe_dial(call, human=True, now=now)
        call.state = CallState.ANSWERED
        self._index(call)
        self.store.update_call(
            call.id, state=CallState.ANSWERED.value, answered_at=now, answer_kind=answer.value
        )
        if task:
            task.counters.answered += 1
        if call.preview and call.agent_id is not None:
            self._connect(call, self.agents[call.agent_id], now)
        else:
            self._route(call, now)
        self._timer(now + self.abandon_after_s, "abandon", call.id)

    def _route(self, call: LiveCall, now: float) -> None:
        """Give an answered call to the longest-idle ready agent of its task's group, or queue it."""
        task = self.tasks.get(call.campaign_id or -1)
        group = task.conf.skill_group_id if task else -1
        if self._pick_agent(group, now, call) is None:
            self.waiting.setdefault(group, deque()).append(call.id)

    def _agent_leg_failed(self, call: LiveCall, event: AgentLegFailed, now: float) -> None:
        """The reserved agent's phone did not take the call: that agent missed it (not ready), and the
        customer, still waiting, goes to the next ready agent within what is left of the 2 s."""
        if call.state is not CallState.AGENT_RINGING or call.abandoning or call.connected_at is not None:
            return
        log.warning("agent %s did not take call %s (%s)", event.extension, call.id, event.detail)
        self._unreserve(call, now, missed=True)
        call.agent_id = call.agent_at = None
        call.state = CallState.ANSWERED
        self._index(call)
        self.store.update_call(
            call.id,
            state=CallState.ANSWERED.value,
            agent_id=None,
            agent_at=None,
            detail=f"agent {event.extension} did not take it ({event.detail})"[:200],
        )
        self._route(call, now)

    def _connected(self, call: LiveCall, now: float) -> None:
        if call.abandoning or call.connected_at is not None:
            return
        call.connected_at = now
        call.state = CallState.CONNECTED
        self._index(call)
        self.store.update_call(call.id, state=CallState.CONNECTED.value, connected_at=now)
        if call.direction == "manual":
            return
        task = self.tasks.get(call.campaign_id or -1)
        if task:
            task.counters.connected += 1
            task.pacer.observe_answer(abandoned=False, now=now)
            if call.agent_at is not None:
                task.pacer.observe_connect(now - call.agent_at)
        if call.agent_id is not None:
            self._move_agent(call.agent_id, AE.CONNECT, now, call_id=call.id, campaign_id=call.campaign_id)
            self._pop(call)

    def _ended(self, call: LiveCall, event: CallEnded, now: float) -> None:
        if call.machine:
            result = CallResult.MACHINE
        elif event.result is EndResult.ANSWERED or (
            event.result is EndResult.LOST and call.answered_at is not None
        ):
            if call.connected_at is not None:
                result = CallResult.ANSWERED
            elif call.answered_at is not None:
                result = CallResult.ABANDONED
            else:
                result = CallResult.ANSWERED if call.direction == "manual" else CallResult.FAILED
        else:
            result = CallResult(event.result.value)
        if result is CallResult.ABANDONED and not call.abandoning:
            task = self.tasks.get(call.campaign_id or -1)
            if task:  # the customer hung up before an agent came: abandoned, counted now
                task.counters.abandoned += 1
                task.pacer.observe_answer(abandoned=True, now=now)
        self._end(call, result, event.cause, event.detail, now)

    # --- the parts ------------------------------------------------------------------------------

    def _end(self, call: LiveCall, result: CallResult, cause: int, detail: str, now: float) -> None:
        """Settle a call: its row, its lead, its agent, the pacer's learning."""
        self.calls.pop(call.id, None)
        task = self.tasks.get(call.campaign_id or -1)
        if task:
            self._unfollow(task, call)
            self._dirty.add(task.conf.id)
            task.counters.count_end(result.value, cause)
        if call.answered_at is None and result not in (CallResult.CANCELLED, CallResult.NOT_DIALLED):
            self._observe_dial(call, human=False, now=now)
        if call.connected_at is not None and task:
            task.pacer.observe_talk(now - call.connected_at)
        for queue in self.waiting.values():
            if call.id in queue:
                queue.remove(call.id)
        if call.note:
            detail = f"{call.note}; {detail}" if detail else call.note
        self.store.end_call(call.id, now=now, result=result.value, cause=cause, detail=detail)
        if call.lead_id is not None and task is not None:
            status, next_at, attempts = after_attempt(
                result, attempts=call.attempt, policy=task.policy, now=now, agent_guaranteed=call.preview
            )
            self.store.settle_lead(
                call.lead_id, status=status.value, next_at=next_at, attempts=attempts, result=result.value
            )
            if status.value != "pending":
                task.counters.leads_left -= 1
        if call.agent_id is not None:
            agent = self.agents.get(call.agent_id)
            if agent is not None and agent.call_id == call.id:
                if agent.state == AgentState.ON_CALL.value:
                    self._move_agent(agent.id, AE.HANGUP, now)
                    wrap = task.conf.wrap_up_s if task else MANUAL_WRAP_UP_S
                    sampled = self.wrap_sampler(agent) if self.wrap_sampler else None
                    self._timer(
                        now + min(wrap, sampled) if sampled is not None else now + wrap, "wrap", str(agent.id)
                    )
                elif agent.state == AgentState.RESERVED.value:
                    self._move_agent(agent.id, AE.RELEASE, now)
            if self.notifier:
                self.notifier.call_ended(agent_id=call.agent_id, call_id=call.id, result=result.value, at=now)

    def _observe_dial(self, call: LiveCall, *, human: bool, now: float) -> None:
        if call.dial_observed or call.direction == "manual":
            return
        call.dial_observed = True
        task = self.tasks.get(call.campaign_id or -1)
        if task:
            task.pacer.observe_dial(human=human, ring_s=now - call.created_at, now=now)

    def _observe_wrap(self, agent: AgentRow, now: float) -> None:
        task = self.tasks.get(agent.campaign_id or -1)
        if task:
            task.pacer.observe_wrap(now - agent.since)

    def _pick_agent(self, group: int, now: float, call: LiveCall) -> AgentRow | None:
        """Reserve the longest-idle ready agent of `group` for `call` and ask the PBX to connect."""
        candidates = sorted(
            (a for a in self._group(group)[0] if a.state == AgentState.READY.value),
            key=lambda a: (a.idle_since, a.id),
        )
        for agent in candidates:
            try:
                self._move_agent(
                    agent.id,
                    AE.RESERVE,
                    now,
                    expect=AgentState.READY,
                    call_id=call.id,
                    campaign_id=call.campaign_id,
                )
            except Conflict:
                continue
            self._connect(call, agent, now)
            return agent
        return None

    def _connect(self, call: LiveCall, agent: AgentRow, now: float) -> None:
        call.agent_id = agent.id
        call.agent_at = now
        call.state = CallState.AGENT_RINGING
        self._index(call)
        self.store.update_call(call.id, state=CallState.AGENT_RINGING.value, agent_id=agent.id, agent_at=now)
        self._out.append(ConnectAgent(call.gateway, call.id, agent.extension))

    def _route_waiting(self, now: float) -> None:
        for group, queue in self.waiting.items():
            while queue:
                call = self.calls.get(queue[0])
                if call is None or call.state is not CallState.ANSWERED or call.abandoning:
                    queue.popleft()
                    continue
                if self._pick_agent(group, now, call) is None:
                    break
                queue.popleft()

    def _abandon_check(self, call_id: str, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None or call.connected_at is not None or call.abandoning or call.machine:
            return
        if call.state is CallState.ANSWERED:
            self._abandon(call, now, f"no agent connected within {self.abandon_after_s:g} s")
        elif call.state is CallState.AGENT_RINGING:
            rang = now - (call.agent_at if call.agent_at is not None else now)
            missed = rang >= MISSED_AFTER_S
            why = f"no agent connected within {self.abandon_after_s:g} s"
            if missed:
                why += f" (agent's phone rang {rang:.1f} s unanswered)"
            self._abandon(call, now, why, missed=missed)

    def _unreserve(self, call: LiveCall, now: float, *, missed: bool) -> None:
        """Free the agent reserved for `call`, if one still is: to not ready if they missed it (see
        `AgentEvent.MISS`), else back to ready."""
        agent = self.agents.get(call.agent_id) if call.agent_id is not None else None
        if agent is None or agent.state != AgentState.RESERVED.value or agent.call_id != call.id:
            return
        if missed:
            log.warning("agent %s missed call %s: set not ready", agent.extension, call.id)
            self._move_agent(agent.id, AE.MISS, now, reason="missed_call")
        else:
            self._move_agent(agent.id, AE.RELEASE, now)

    def _abandon(self, call: LiveCall, now: float, why: str, *, missed: bool = False) -> None:
        """Play the abandon message to an answered customer no agent took, and hang up. `missed`: the
        reserved agent's phone rang long enough and was not answered: the agent goes not ready (see
        `AgentEvent.MISS`); otherwise a reserved agent is released to ready."""
        call.abandoning = True
        self._index(call)
        for queue in self.waiting.values():
            if call.id in queue:
                queue.remove(call.id)
        task = self.tasks.get(call.campaign_id or -1)
        if task:
            task.counters.abandoned += 1
            task.pacer.observe_answer(abandoned=True, now=now)
        self._unreserve(call, now, missed=missed)
        call.note = why
        self.store.update_call(call.id, detail=why)
        sound = task.conf.abandon_sound if task else "abandon"
        self._out.append(PlayAndHangup(call.gateway, call.id, sound))
        call.hangup_sent = True

    def _hangup(self, call: LiveCall) -> None:
        if not call.hangup_sent:
            call.hangup_sent = True
            self._out.append(Hangup(call.gateway, call.id))

    def _move_agent(
        self,
        agent_id: int,
        event: agent_table.AgentEvent,
        now: float,
        *,
        expect: AgentState | None = None,
        call_id: str | None = None,
        campaign_id: int | None = None,
        reason: str | None = None,
    ) -> None:
        agent = self.agents.get(agent_id)
        if expect is None and agent is not None:
            expect = AgentState(agent.state)
        try:
            move = agent_table.apply(
                self.store.c,
                agent_id=agent_id,
                event=event,
                now=now,
                expect=expect,
                call_id=call_id,
                campaign_id=campaign_id,
                reason=reason,
            )
        except Conflict:
            fresh = self.store.agents().get(agent_id)
            if fresh is not None:
                self.agents[agent_id] = fresh
                self._agents_gen += 1
            raise
        if agent is not None:
            self._agents_gen += 1
            agent.state = move.new.value
            agent.since = now
            if move.new is AgentState.READY:
                agent.idle_since = now
            if event in (AE.RESERVE, AE.MANUAL_CALL):
                agent.call_id, agent.campaign_id = call_id, campaign_id
            elif move.new is not AgentState.ON_CALL and move.new is not AgentState.WRAP_UP:
                agent.call_id, agent.campaign_id = None, None
            if self.notifier:
                self.notifier.agent_state(
                    agent_id=agent_id,
                    extension=agent.extension,
                    state=agent.state,
                    since=now,
                    call_id=agent.call_id,
                    campaign_id=agent.campaign_id,
                    reason=reason,
                )
        if move.new is AgentState.READY:
            for task in self.tasks.values():
                if agent is None or task.conf.skill_group_id in agent.groups:
                    self._dirty.add(task.conf.id)

    def _wrap_up_timeouts(self, now: float, ids: set[int], *, scan: bool) -> None:
        """End the wrap-ups whose timer fired (`ids`); with `scan` (once per refresh) also those of
        rows moved to wrap-up by another process or before a restart, which have no timer here."""
        for agent in self.agents.values() if scan else ():
            if agent.state == AgentState.WRAP_UP.value and agent.id not in ids:
                task = self.tasks.get(agent.campaign_id or -1)
                if now - agent.since >= (task.conf.wrap_up_s if task else MANUAL_WRAP_UP_S):
                    ids.add(agent.id)
        for agent_id in ids:
            row = self.agents.get(agent_id)
            if row is None or row.state != AgentState.WRAP_UP.value:
                continue
            before = replace(row, groups=set(row.groups))
            try:
                self._move_agent(agent_id, AE.WRAP_UP_DONE, now, expect=AgentState.WRAP_UP)
            except Conflict:
                continue
            self._observe_wrap(before, now)

    def _enforce_task_states(self, now: float) -> None:
        for task in list(self.tasks.values()):
            state = task.conf.state
            if state is not CampaignState.RUNNING:
                # DOMAIN: on pause or stop, calls still ringing are hung up; answered ones are never cut.
                for cid in list(task.calls):
                    call = self.calls[cid]
                    if call.state is CallState.PREVIEW:
                        self._end(call, CallResult.CANCELLED, 0, f"task {state.value}", now)
                    elif call.state in (CallState.DIALING, CallState.RINGING):
                        self._hangup(call)
                continue
            if now >= task.next_left_check and not task.calls and not task.others_active:
                task.next_left_check = now + 5.0
                left = self.store.leads_left(task.conf.id)
                task.counters.leads_left = left
                if left == 0:
                    moves = campaign_table.transition(
                        self.store.c,
                        campaign_id=task.conf.id,
                        event=campaign_table.CampaignEvent.FINISH,
                        actor="dialer",
                        now=now,
                        note="nothing left to dial",
                    )
                    task.conf = _replace_state(task.conf, CampaignState.STOPPED)
                    if self.notifier:
                        for m in moves:
                            self.notifier.task_state(
                                campaign_id=m.campaign_id,
                                name=m.name,
                                old=m.old.value,
                                new=m.new.value,
                                by=m.actor,
                                at=now,
                            )

    def _group(self, group: int) -> tuple[list[AgentRow], tuple[AgentSlot, ...]]:
        """The agents of a skill group and their pacing slots (offline ones left out), cached until
        an agent moves or the rows are reloaded."""
        cached = self._groups.get(group)
        if cached is not None and cached[0] == self._agents_gen:
            return cached[1], cached[2]
        agents = [a for a in self.agents.values() if group in a.groups]
        slots = tuple(AgentSlot(_STATES[a.state], a.since) for a in agents if a.state != OFFLINE)
        self._groups[group] = (self._agents_gen, agents, slots)
        return agents, slots

    def _pace(self, task: TaskRuntime, now: float) -> None:
        conf = task.conf
        if conf.state is not CampaignState.RUNNING or gateway_key(conf.gateway_id) in self.links_down:
            return
        open_keys = task.window.open_keys(task.tz_keys, now)
        if not open_keys and task.tz_keys:
            return
        tz_filter = None if len(open_keys) == len(task.tz_keys) else open_keys
        group = conf.skill_group_id
        group_agents, slots = self._group(group)
        if isinstance(task.pacer, PreviewPacer):
            self._preview(task, group_agents, tz_filter, now)
            return
        sharing = sum(
            1
            for t in self.tasks.values()
            if t.conf.state is CampaignState.RUNNING and t.conf.skill_group_id == group
        )
        view = PacingView(
            now=now,
            max_concurrency=conf.max_concurrency - task.others_active,
            agents=slots,
            share=1.0 / max(1, sharing),
            ringing_since=tuple(task.ringing.values()),
            waiting=len(task.waiting),
            agent_ringing=len(task.agent_ringing),
            connected=len(task.connected),
        )
        n = task.pacer.place(view)
        if n <= 0:
            return
        claimed, dnc = self.store.claim(
            conf, n, now=now, tz_keys=tz_filter, gateway=gateway_key(conf.gateway_id)
        )
        task.counters.leads_left -= len(dnc)
        for cl in claimed:
            call = LiveCall(
                cl.call_id, conf.id, cl.lead_id, cl.number, gateway_key(conf.gateway_id), now, cl.attempt
            )
            self.calls[call.id] = call
            self._follow(task, call)
            self._originate(task, call)

    def _originate(self, task: TaskRuntime, call: LiveCall) -> None:
        conf = task.conf
        try:
            request = OriginateRequest(
                call_id=call.id,
                number=call.number,
                caller_id=conf.caller_id,
                caller_name=conf.caller_name,
                ring_timeout_s=float(conf.ring_timeout_s),
                amd=conf.amd,
                variables={"CC_CAMPAIGN": str(conf.id)},
            )
        except Invalid as exc:
            self._end(call, CallResult.FAILED, 0, f"refused before sending: {exc.message}", self._now)
            return
        task.counters.dialled += 1
        self.originated += 1
        self._out.append(Originate(call.gateway, request))

    def _preview(
        self, task: TaskRuntime, group_agents: list[AgentRow], tz_filter: list[str] | None, now: float
    ) -> None:
        """Give each ready agent of the group one lead to look at (nothing is dialled yet)."""
        conf = task.conf
        for agent in sorted(group_agents, key=lambda a: a.idle_since):
            if agent.state != AgentState.READY.value:
                continue
            claimed, _ = self.store.claim(
                conf,
                1,
                now=now,
                tz_keys=tz_filter,
                gateway=gateway_key(conf.gateway_id),
                state=CallState.PREVIEW,
                agent_id=agent.id,
            )
            if not claimed:
                return
            cl = claimed[0]
            call = LiveCall(
                cl.call_id,
                conf.id,
                cl.lead_id,
                cl.number,
                gateway_key(conf.gateway_id),
                now,
                cl.attempt,
                state=CallState.PREVIEW,
                preview=True,
                agent_id=agent.id,
            )
            self.calls[call.id] = call
            self._follow(task, call)
            try:
                self._move_agent(
                    agent.id, AE.RESERVE, now, expect=AgentState.READY, call_id=call.id, campaign_id=conf.id
                )
            except Conflict:
                self._end(call, CallResult.CANCELLED, 0, "agent no longer ready", now)
                continue
            if self.notifier:
                payload = self.pop_builder(call.id) if self.pop_builder else None
                self.notifier.preview(
                    agent_id=agent.id,
                    payload=payload
                    or {
                        "call_id": call.id,
                        "number": call.number,
                        "campaign_id": conf.id,
                        "campaign_name": conf.name,
                        "lead_id": cl.lead_id,
                        "lead_fields": _fields(cl.fields),
                    },
                )

    def _manual_started(self, event: ManualCallStarted, now: float) -> None:
        agent_id = next((a.id for a in self.agents.values() if a.extension == event.extension), None)
        if agent_id is None:
            agent_id = self.store.agent_by_extension(event.extension)
        call = LiveCall(
            event.call_id, None, None, event.number, "default", now, direction="manual", agent_id=agent_id
        )
        self.calls[call.id] = call
        self.store.insert_manual_call(
            call_id=call.id, number=event.number, agent_id=agent_id, gateway=call.gateway, now=now
        )
        if agent_id is not None:
            try:
                self._move_agent(agent_id, AE.MANUAL_CALL, now, call_id=call.id)
            except Conflict as exc:
                log.info("manual call of %s recorded without a state change: %s", event.extension, exc)
            self._pop(call)

    def _pop(self, call: LiveCall) -> None:
        if self.notifier is None or call.agent_id is None:
            return
        payload = self.pop_builder(call.id) if self.pop_builder else None
        if payload is None:
            agent = self.agents.get(call.agent_id)
            task = self.tasks.get(call.campaign_id or -1)
            payload = {
                "call_id": call.id,
                "extension": agent.extension if agent else None,
                "direction": call.direction,
                "number": call.number,
                "campaign_id": call.campaign_id,
                "campaign_name": task.conf.name if task else None,
                "lead_id": call.lead_id,
                "lead_fields": self.store.lead_fields(call.lead_id) if call.lead_id else {},
                "dispositions": [],
                "connected_at": call.connected_at,
            }
        self.notifier.screen_pop(agent_id=call.agent_id, payload=payload)

    def _release_stranded_agents(self, now: float) -> None:
        for agent in list(self.agents.values()):
            if (
                agent.call_id
                and agent.call_id not in self.calls
                and agent.state in (AgentState.RESERVED.value, AgentState.ON_CALL.value)
            ):
                event = AE.RELEASE if agent.state == AgentState.RESERVED.value else AE.HANGUP
                try:
                    self._move_agent(agent.id, event, now)
                except Conflict:
                    continue

    def _follow(self, task: TaskRuntime, call: LiveCall) -> None:
        task.calls.add(call.id)
        self._index(call, task)

    def _unfollow(self, task: TaskRuntime, call: LiveCall) -> None:
        task.calls.discard(call.id)
        task.unindex(call.id)

    def _index(self, call: LiveCall, task: TaskRuntime | None = None) -> None:
        """Put `call` in its task's pacing index by its current state (see TaskRuntime)."""
        task = task or self.tasks.get(call.campaign_id or -1)
        if task is None or call.id not in task.calls:
            return
        task.unindex(call.id)
        state = call.state
        if state is CallState.DIALING or state is CallState.RINGING:
            task.ringing[call.id] = call.created_at
        elif state is CallState.ANSWERED:
            if not call.abandoning:
                task.waiting.add(call.id)
        elif state is CallState.AGENT_RINGING:
            task.agent_ringing.add(call.id)
        elif state is CallState.CONNECTED:
            task.connected.add(call.id)

    def _timer(self, at: float, kind: str, key: str) -> None:
        heapq.heappush(self._timers, (at, next(self._seq), kind, key))

    def _flush(self, now: float) -> list[Command]:
        self._route_waiting(now)
        for cid in sorted(self._dirty):
            task = self.tasks.get(cid)
            if task is not None:
                self._pace(task, now)
        self._dirty.clear()
        out, self._out = self._out, []
        return out


def _replace_state(conf: CampaignConf, state: CampaignState) -> CampaignConf:
    return replace(conf, state=state)


def _fields(raw: str) -> dict[str, Any]:
    try:
        data = json.loads(raw or "{}")
    except json.JSONDecodeError:
        return {}
    return data if isinstance(data, dict) else {}
