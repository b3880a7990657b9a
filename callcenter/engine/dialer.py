"""The dialer engine's core: from gateway events and the clock to database writes and PBX commands.

`DialerCore` is synchronous and does no network I/O: the async runner (`engine.runner`) feeds it
gateway events and ticks and sends the commands it returns; the simulation feeds it from a
discrete-event clock instead. Every entry point runs inside one store transaction and returns the
commands to send after that transaction commits, so a crash never leaves a dialled call without its
row. The rules live next door: the call's moves in `calls`, who takes a call in `routing`, preview
offers in `preview`, how many to place in `pacing`, retries and calling windows in `policy`.

On every event that frees capacity, and on a tick of at most one second, each running task's pacer
says how many calls to place; that many due leads are claimed in their calling window and
originated. An answered call goes to a ready agent; if none is connected within `abandon_after_s`
(2 s) it is abandoned: the message plays, the PBX hangs up. An end settles the lead (retry policy),
frees the agent into wrap-up and teaches the pacer.
"""

from __future__ import annotations

import heapq
import itertools
import logging
from collections.abc import Callable, Iterable, Mapping
from dataclasses import replace
from typing import Any

from callcenter.agents import AgentEvent as AE
from callcenter.engine import preview, routing, wrapup
from callcenter.engine.calls import CallEvent, LiveCall, can, result_of
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
    GatewayDraining,
    GatewayEvent,
    GatewayLink,
    ManualCallStarted,
    UnknownChannel,
)
from callcenter.engine.health import BURST_COUNT, BURST_WINDOW_S, PBX_SIDE_AGENT_FAILURES, GatewayHealth
from callcenter.engine.pacing import (
    ABANDON_AFTER_S,
    AgentSlot,
    Pacer,
    PacingView,
    PredictivePacer,
    PreviewPacer,
)
from callcenter.engine.roster import Roster
from callcenter.engine.store import AgentRow, CampaignConf, Store
from callcenter.engine.tasks import TaskRuntime, make_pacer, pacing_key, warm
from callcenter.errors import Conflict, Invalid
from callcenter.messages import AgentCallEnded, GatewayState
from callcenter.models import AgentState, CallResult, CallState, CampaignState
from callcenter.notifier import Notifier
from callcenter.policy import after_attempt

log = logging.getLogger(__name__)
S = CallState
MANUAL_WRAP_UP_S = 30.0
REFRESH_S = 1.0
# An abandon while the reserved agent's phone has rung this long counts as the agent missing the call
# (they go not ready). Shorter, and the agent was reserved too late to be blamed: back to ready.
MISSED_AFTER_S = 1.0
# Results after which the call never reached a person: the pacer learns a non-answer from them.
_NOT_DIALS = (CallResult.CANCELLED, CallResult.SKIPPED, CallResult.NOT_DIALLED, CallResult.REFUSED)
# A dialer whose heartbeat is older than this is dead: its calls and skill groups are taken over.
DEAD_AFTER_S = 15.0
LEASE_TTL_S = 10.0
# A task whose calls the PBX refused this many times in a row for one reason is paused, with it.
REFUSALS_TO_PAUSE = 5
# A task that found nothing due takes no share of its group's agents until it looks again.
DRY_RECHECK_S = 5.0
_AFTER_WRAP = {
    AgentState.NOT_READY.value: (AE.SET_NOT_READY, "after_manual_call"),
    AgentState.AWAY.value: (AE.SET_AWAY, "after_manual_call"),
}
# Results of a line that never rang which may be the PBX's doing when many come at once.
_INSTANT = (CallResult.FAILED, CallResult.CONGESTION)


class DialerCore:
    def __init__(
        self,
        store: Store,
        *,
        notifier: Notifier | None = None,
        pacer_factory: Callable[[CampaignConf], Pacer] = make_pacer,
        wrap_sampler: Callable[[AgentRow], float | None] | None = None,
        abandon_after_s: float = ABANDON_AFTER_S,
        refresh_s: float = REFRESH_S,
        originates_per_s: float = 10.0,
        normalise: Callable[[str], str] | None = None,
    ) -> None:
        self.store = store
        self.notifier = notifier
        self.pacer_factory = pacer_factory
        self.wrap_sampler = wrap_sampler
        self.abandon_after_s = abandon_after_s
        self.refresh_s = refresh_s
        self.tasks: dict[int, TaskRuntime] = {}
        self.calls: dict[str, LiveCall] = {}
        self.roster = Roster(store, notifier)
        self.waiting = routing.WaitingQueues()
        self._timers: list[tuple[float, int, str, str]] = []
        self._seq = itertools.count()
        self._dirty: set[int] = set()
        self._next_refresh = 0.0
        self._out: list[Command] = []
        self._now = 0.0
        self.originated = 0
        self.originates_per_s = originates_per_s  # for a gateway `set_gateways` did not name
        # E.164 of a number as an agent's phone dialled it (Invalid when it is not a phone number).
        self.normalise = normalise or (lambda number: number)
        self.health: dict[str, GatewayHealth] = {}
        # Calls that failed instantly, held for BURST_WINDOW_S before their lead is settled: a burst
        # of identical ones is the PBX's fault (refused), not the customers' (see health.py).
        self._held: dict[str, tuple[LiveCall, CallEnded, float]] = {}
        self._gone: dict[int, CampaignConf] = {}  # tasks no longer followed, newest last (wrap-up rules)
        # Per skill group: the split of its ready agents between its tasks, and what it was made for.
        self._shares: dict[int, tuple[tuple[int, tuple[int, ...]], dict[int, float]]] = {}
        # Calls loaded from the database (start, take-over) not yet checked against their PBX.
        self._unverified: dict[str, str] = {}

    def set_gateways(self, gateways: Mapping[str, tuple[str, float]]) -> None:
        """Name and originate rate of each gateway key ("default", "gw<id>")."""
        for key, (name, rate) in gateways.items():
            old = self.health.get(key)
            if old is None or old.originates_per_s != rate:
                self.health[key] = GatewayHealth(key, name, rate)
            else:
                old.name = name

    def gateway(self, key: str) -> GatewayHealth:
        gw = self.health.get(key)
        if gw is None:
            gw = self.health[key] = GatewayHealth(key, key, self.originates_per_s)
        return gw

    @property
    def agents(self) -> dict[int, AgentRow]:
        return self.roster.agents

    # --- entry points (each inside one store transaction) -----------------------------------

    def start(self, now: float, replay: Iterable[GatewayEvent] = ()) -> list[Command]:
        """Resume after a start, a crash or a database outage: load the open calls this dialer follows,
        replay the gateway events that arrived while it could not write them, give back leads claimed
        but never dialled. Calls are then checked against each PBX by `reconcile` once its link is up;
        until then they are followed as they are."""
        self._refresh(now)
        self._load_calls(self.store.open_calls(mine=True), now)
        for event in replay:
            try:
                self._on_event(event, now)
            except Conflict as exc:
                log.info("skipped replayed %s: %s", type(event).__name__, exc)
        released = self.store.orphan_claims([self.store.dialer_id])
        if released:
            log.info("gave back %d leads claimed but never dialled", released)
        self._release_stranded_agents(now)
        return self._flush(now)

    def reconcile(
        self, gateway: str, active: Iterable[ActiveCall], adopt: Callable[[str], bool], now: float
    ) -> list[Command]:
        """Check the calls loaded by `start` or `take_over` against what the PBX behind `gateway` has
        now: follow those it still has (one answered meanwhile is routed now: an agent within the 2 s,
        else the abandon message), settle the others (a call that had reached its customer is never
        dialled again), release agents held by calls that ended."""
        live = {a.call_id: a for a in active if a.call_id}
        for call_id, key in list(self._unverified.items()):
            if key != gateway:
                continue
            del self._unverified[call_id]
            call = self.calls.get(call_id)
            if call is None:
                continue  # settled by a replayed event
            if call_id in live and adopt(call_id):
                self._adopted(call, live[call_id], now)
            else:
                self._end(
                    call, result_of(call, EndResult.LOST), 0, "not on the PBX after dialer restart", now
                )
        self._release_stranded_agents(now)
        return self._flush(now)

    def take_over(self, dialer_ids: list[str], now: float) -> set[str]:
        """Follow the open calls of dialers found dead (they are reconciled like ours at a start).
        Returns the gateways whose calls need `reconcile`."""
        self.store.take_over(dialer_ids, now)
        rows = [r for r in self.store.open_calls(mine=True) if r["id"] not in self.calls]
        self._load_calls(rows, now)
        self.store.orphan_claims([self.store.dialer_id])
        return {r["gateway"] for r in rows}

    def _load_calls(self, rows: Iterable[Mapping[str, Any]], now: float) -> None:
        for row in rows:
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
                preview=row["state"] == S.PREVIEW.value,
                answered_at=row["answered_at"],
                answer_kind=row["answer_kind"] or "",
                agent_at=row["agent_at"],
                connected_at=row["connected_at"],
                agent_id=row["agent_id"],
            )
            self._follow(call)
            if call.state is S.PREVIEW:
                self._end(call, CallResult.CANCELLED, 0, "preview dropped at dialer restart", now)
            else:
                self._unverified[call.id] = call.gateway

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
        self._now = now
        refreshed = now >= self._next_refresh
        if refreshed:
            self._refresh(now)
        wrap_due: set[int] = set()
        while self._timers and self._timers[0][0] <= now:
            _, _, kind, key = heapq.heappop(self._timers)
            if kind == "abandon":
                self._abandon_check(key, now)
            elif kind == "settle":
                self._settle_held(key, now)
            elif kind == "gateway":  # a backoff ended or a token is due: its tasks may place again
                self._dirty.update(cid for cid, task in self.tasks.items() if task.gateway == key)
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
            call_id = command.request.call_id if isinstance(command, Originate) else command.call_id
            call = self.calls.get(call_id)
            if call is None:
                continue
            if isinstance(command, Originate):
                self._end(call, CallResult.NOT_DIALLED, 0, f"not sent: {error}", now)
            elif isinstance(command, ConnectAgent):
                log.warning("connect of %s to agent failed: %s", call.id, error)
                self._abandon(call, now, f"agent connect failed: {error}")
            else:
                log.warning("%s of %s failed: %s", type(command).__name__, call.id, error)
        return self._flush(now)

    def gateway_changed(self, key: str, event: GatewayLink | GatewayDraining, now: float) -> list[Command]:
        """A gateway's link went up or down, or it announced a shutdown. Nothing new is placed through
        a gateway that is not up (it would only fail); calls already placed are followed by the
        driver's resync."""
        gw = self.gateway(key)
        changed = (
            gw.link(event.up, event.detail) if isinstance(event, GatewayLink) else gw.draining(event.detail)
        )
        if changed:
            self._gateway_status(gw, now)
        return self._flush(now)

    def note_on_agents_call(self, extension: str, kind: str, detail: str, now: float) -> None:
        """A step on the ladder of the call an agent is on (a supervisor starts or stops listening)."""
        agent_id = self.roster.by_extension(extension)
        agent = self.roster.get(agent_id)
        if agent is not None and agent.call_id:
            self.store.log_call(agent.call_id, now, kind, detail)

    def agents_away(self, agent_ids: Iterable[int], now: float) -> list[Command]:
        """Ready agents whose workstation has been closed or cut off too long: not ready, saying why
        (calls must not go to a screen nobody watches)."""
        for agent_id in agent_ids:
            agent = self.roster.get(agent_id)
            if agent is None or agent.state != AgentState.READY.value or agent.simulated:
                continue
            log.warning("agent %s has no workstation open: set not ready", agent.extension)
            try:
                self._move_agent(
                    agent_id,
                    AE.SET_NOT_READY,
                    now,
                    expect=AgentState.READY,
                    reason="workstation_disconnected",
                )
            except Conflict:
                continue
        return self._flush(now)

    def agent_changed(self, now: float) -> list[Command]:
        """An agent's state changed elsewhere (web): refresh and pace now."""
        self._refresh(now)
        self._dirty.update(self.tasks)
        return self._flush(now)

    def preview_dial(self, call_id: str, agent_id: int, now: float) -> list[Command]:
        self._now = now
        call = self._offered(call_id, agent_id)
        task = self.tasks.get(call.campaign_id or -1)
        if task is None or task.conf.state is not CampaignState.RUNNING:
            raise Conflict("the task is not running", field="state")
        self._move(call, CallEvent.DIAL)
        call.created_at = now
        task.index(call)
        self.store.start_call(call.id, created_at=now)
        self._originate(task, call)
        return self._flush(now)

    def preview_skip(self, call_id: str, agent_id: int, now: float) -> list[Command]:
        call = self._offered(call_id, agent_id)
        self._end(call, CallResult.SKIPPED, 0, "skipped by the agent in preview", now)
        return self._flush(now)

    def snapshot(self, campaign_id: int, now: float) -> dict[str, Any] | None:
        """The live counters of a task this dialer paces (published every second)."""
        task = self.tasks.get(campaign_id)
        if task is None or not task.held:
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
                self._gone[cid] = self.tasks.pop(cid).conf  # its agents' wrap-ups still follow it
                while len(self._gone) > 256:
                    del self._gone[next(iter(self._gone))]
        for cid, conf in confs.items():
            task = self.tasks.get(cid)
            if task is None:
                self.tasks[cid] = self._new_task(conf)
            elif task.conf != conf:
                if pacing_key(task.conf) != pacing_key(conf):
                    task.pacer = self.pacer_factory(conf)
                    self._warm(task)
                task.conf = conf
        held = self._lease_groups(now)
        for cid, task in self.tasks.items():
            if cid not in confs:  # stopped or deleted with calls still to follow
                state = self.store.campaign_states([cid]).get(cid, CampaignState.STOPPED.value)
                task.conf = task.conf.with_state(CampaignState(state))
            mine = task.conf.skill_group_id in held
            if mine and not task.held:  # taken over from another dialer: its counters from the rows
                task.counters = self.store.counters(cid)
            task.held = mine
            task.others_active = (
                self.store.active_calls_count(cid, others_only=True)
                if task.conf.state is CampaignState.RUNNING
                else 0
            )
        old = self.roster.reload()
        for aid, row in self.agents.items():
            before = old.get(aid)
            if before and before.state == AgentState.WRAP_UP.value and row.state == AgentState.READY.value:
                self._observe_wrap(before, now)

    def _lease_groups(self, now: float) -> set[int]:
        """The skill groups this dialer paces and routes for: several dialers on one database split
        the groups of live tasks between them (a fair share each), so no agent is counted or reserved
        by two of them; a dead dialer's leases run out and others take its groups."""
        groups = sorted({t.conf.skill_group_id for t in self.tasks.values()})
        alive = {
            d["id"]
            for d in self.store.dialers()
            if d["stopped_at"] is None and d["heartbeat_at"] >= now - DEAD_AFTER_S
        }
        alive.add(self.store.dialer_id)
        at_most = -(-len(groups) // len(alive))
        ttl = max(LEASE_TTL_S, 3 * self.refresh_s)
        return self.store.lease_groups(groups, now=now, ttl=ttl, at_most=at_most)

    def _new_task(self, conf: CampaignConf) -> TaskRuntime:
        task = TaskRuntime.of(
            conf,
            self.pacer_factory(conf),
            tz_keys=self.store.tz_keys(conf.id),
            counters=self.store.counters(conf.id),
        )
        self._warm(task)
        return task

    def _warm(self, task: TaskRuntime) -> None:
        warm(task.pacer, self.store.recent_calls(task.conf.id), self.store.abandon_totals(task.conf.id))

    # --- gateway events -------------------------------------------------------------------------

    def _on_event(self, event: GatewayEvent, now: float) -> None:
        if isinstance(event, UnknownChannel):
            log.warning("unknown channel on the PBX: %s %s", event.channel, event.detail)
            return
        if isinstance(event, ManualCallStarted):
            self._manual_started(event, now)
            return
        call = self.calls.get(getattr(event, "call_id", ""))
        if call is None:
            return  # another dialer's call, a spy leg, already settled, or a gateway event
        self.store.log_call(call.id, now, *_ladder(event))
        if isinstance(event, CallRinging | CallAnswered | CallConnected):
            self._went_through(call.gateway, now, call, bridged=isinstance(event, CallConnected))
        if isinstance(event, CallRinging):
            if call.state is S.DIALING:
                self._move(call, CallEvent.RING)
                self.store.update_call(call.id, state=call.state.value, ringing_at=now)
        elif isinstance(event, CallAnswered):
            self._answered(call, event.answer, now)
        elif isinstance(event, CallConnected):
            self._connected(call, now)
        elif isinstance(event, AgentLegFailed):
            self._agent_leg_failed(call, event, now)
        elif isinstance(event, CallEnded):
            self._ended(call, event, now)

    def _answered(self, call: LiveCall, answer: AnswerKind, now: float) -> None:
        if call.answered_at is not None or call.state not in (S.DIALING, S.RINGING):
            return
        call.answered_at = now
        call.answer_kind = answer.value
        task = self.tasks.get(call.campaign_id or -1)
        if answer is AnswerKind.MACHINE:
            self._observe_dial(call, human=False, now=now)
            self._move(call, CallEvent.ANSWER_MACHINE)
            self.store.update_call(call.id, state=call.state.value, answered_at=now, answer_kind=answer.value)
            self._out.append(Hangup(call.gateway, call.id))
            return
        self._observe_dial(call, human=True, now=now)
        self._move(call, CallEvent.ANSWER)
        self.store.update_call(call.id, state=call.state.value, answered_at=now, answer_kind=answer.value)
        if task:
            task.counters.answered += 1
        agent = self.roster.get(call.agent_id) if call.preview else None
        if agent is not None:
            self._connect(call, agent, now)
        else:
            self._route(call, now)
        self._timer(now + self.abandon_after_s, "abandon", call.id)

    def _agent_leg_failed(self, call: LiveCall, event: AgentLegFailed, now: float) -> None:
        """The reserved agent's phone did not take the call: that agent missed it (not ready), and the
        customer, still waiting, goes to the next ready agent within what is left of the 2 s."""
        if call.state is not S.AGENT_RINGING:
            return
        log.warning("agent %s did not take call %s (%s)", event.extension, call.id, event.detail)
        gw = self.gateway(call.gateway)
        agent_id = call.agent_id if call.agent_id is not None else -1
        if gw.agent_leg_failed(now, agent_id, event.detail):
            # Several agents' phones unreachable at once for a PBX-side reason (no channel, no RTP
            # port): the PBX is out of capacity. Trip the gateway; the agents did nothing wrong.
            if gw.refused(now, f"agent legs failing at once ({event.detail}): PBX capacity?", by="agents"):
                self._gateway_status(gw, now)
            self._unreserve(call, now, missed=False)
            self._restore_agents(gw.recent_agent_failures(now), now)
        else:
            pbx_fault = gw.state is GatewayState.DEGRADED and event.detail.upper() in PBX_SIDE_AGENT_FAILURES
            self._unreserve(call, now, missed=not pbx_fault)
        call.agent_id = call.agent_at = None
        self._move(call, CallEvent.AGENT_FAILED)
        self.store.update_call(
            call.id,
            state=call.state.value,
            agent_id=None,
            agent_at=None,
            detail=f"agent {event.extension} did not take it ({event.detail})"[:200],
        )
        self._route(call, now)

    def _connected(self, call: LiveCall, now: float) -> None:
        manual = call.direction == "manual"
        if not (call.state is S.AGENT_RINGING or (manual and can(call.state, CallEvent.CONNECT))):
            return
        call.connected_at = now
        self._move(call, CallEvent.CONNECT)
        self.store.update_call(call.id, state=call.state.value, connected_at=now)
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
        result = result_of(call, event.result)
        gw = self.gateway(call.gateway)
        if result is CallResult.REFUSED:
            # A refusal while the gateway takes calls (up, or its probe) may be this task's own doing:
            # a value the PBX rejects every time. Counted per task; a burst after a gateway fault is not.
            healthy = gw.state is GatewayState.UP or (gw.state is GatewayState.DEGRADED and gw.probing)
            if gw.refused(now, event.detail or "refused by the PBX"):
                self._gateway_status(gw, now)
            if healthy:
                self._task_refused(call, event.detail, now)
        elif call.state is S.DIALING and now - call.created_at < BURST_WINDOW_S and result in _INSTANT:
            # Failed before the line rang, at once: hold it a moment; a burst of identical ones is
            # the PBX's doing (refused, the leads go back), a lone one is the customer's line.
            if gw.instant_failure(now, event.cause):
                self._refuse_burst(
                    gw, event.cause, f"{BURST_COUNT} identical instant failures: {event.detail}", now
                )
                self._end(call, CallResult.REFUSED, event.cause, event.detail, now)
            else:
                self._hold(call, event, now)
            return
        elif result is not CallResult.LOST:
            self._went_through(call.gateway, now, call)
        if result is CallResult.ABANDONED and call.state is not S.ABANDONING:
            task = self.tasks.get(call.campaign_id or -1)
            if task:  # the customer hung up before an agent came: abandoned, counted now
                task.counters.abandoned += 1
                task.pacer.observe_answer(abandoned=True, now=now)
        self._end(call, result, event.cause, event.detail, now)

    def _adopted(self, call: LiveCall, active: ActiveCall, now: float) -> None:
        """A call the PBX still has after a restart: follow it from where the PBX says it is."""
        if call.state in (S.DIALING, S.RINGING) and active.answered:
            self._answered(call, AnswerKind.UNKNOWN, now)  # answered while the dialer was away
        elif call.state is S.ANSWERED:
            # It waited for an agent while the dialer was away: one now, within a fresh 2 s.
            self._route(call, now)
            self._timer(now + self.abandon_after_s, "abandon", call.id)
        elif call.state is S.AGENT_RINGING and active.extension:
            self._connected(call, now)  # bridged to its agent while the dialer was away
        elif call.state is S.HANGING_UP:
            self._out.append(Hangup(call.gateway, call.id))

    # --- gateways -----------------------------------------------------------------------------

    def _gateway_status(self, gw: GatewayHealth, now: float) -> None:
        """A gateway's health changed: tell supervisors; when it is up again, its tasks place calls."""
        log.warning("gateway %s is %s%s", gw.key, gw.state.value, f": {gw.detail}" if gw.detail else "")
        if self.notifier:
            self.notifier.publish(gw.status(now))
        if gw.retry_at is not None:
            self._timer(gw.retry_at, "gateway", gw.key)
        self._dirty.update(cid for cid, task in self.tasks.items() if task.gateway == gw.key)

    def _went_through(
        self, key: str, now: float, call: LiveCall | None = None, *, bridged: bool = False
    ) -> None:
        gw = self.gateway(key)
        if gw.went_through(now, bridged=bridged):
            self._gateway_status(gw, now)
        task = self.tasks.get(call.campaign_id or -1) if call is not None else None
        if task is not None:
            task.refusals = 0

    def _hold(self, call: LiveCall, event: CallEnded, now: float) -> None:
        self.calls.pop(call.id, None)
        task = self.tasks.get(call.campaign_id or -1)
        if task is not None:
            task.unfollow(call)
        self._held[call.id] = (call, event, now)
        self._timer(now + BURST_WINDOW_S, "settle", call.id)

    def _settle_held(self, call_id: str, now: float) -> None:
        held = self._held.pop(call_id, None)
        if held is not None:
            call, event, _ = held
            self._end(call, result_of(call, event.result), event.cause, event.detail, now)

    def _refuse_burst(self, gw: GatewayHealth, cause: int, why: str, now: float) -> None:
        """A burst of identical instant failures: every held one of this gateway and cause was refused."""
        for call_id, (call, event, _) in list(self._held.items()):
            if call.gateway == gw.key and event.cause == cause:
                del self._held[call_id]
                self._end(call, CallResult.REFUSED, event.cause, event.detail, now)
        if gw.refused(now, why):
            self._gateway_status(gw, now)

    def _task_refused(self, call: LiveCall, detail: str, now: float) -> None:
        """The PBX refused a call of this task for a reason it gave before: after REFUSALS_TO_PAUSE in a
        row (no call of the task going through meanwhile) the task is paused with the reason, instead of
        retrying for ever (a caller name Asterisk rejects fails every originate)."""
        task = self.tasks.get(call.campaign_id or -1)
        if task is None:
            return
        if detail != task.refusal:
            task.refusal, task.refusals = detail, 0
        task.refusals += 1
        if task.refusals < REFUSALS_TO_PAUSE or task.conf.state is not CampaignState.RUNNING:
            return
        note = f"paused by the dialer: the PBX refused {task.refusals} calls in a row ({detail})"[:500]
        log.error("task %s: %s", task.conf.id, note)
        try:
            moves = self.store.pause_campaign(task.conf.id, now=now, note=note)
        except Conflict:
            return
        task.conf = task.conf.with_state(CampaignState.PAUSED)
        task.refusals = 0
        if self.notifier:
            for m in moves:
                self.notifier.publish(m.message())

    def _restore_agents(self, agent_ids: Iterable[int], now: float) -> None:
        """Agents set not ready for a missed call the PBX was to blame for: ready again."""
        for agent_id in agent_ids:
            agent = self.roster.get(agent_id)
            if agent is not None and agent.state == AgentState.NOT_READY.value:
                try:
                    self._move_agent(agent_id, AE.SET_READY, now, expect=AgentState.NOT_READY)
                except Conflict:
                    continue

    # --- the parts ------------------------------------------------------------------------------

    def _move(self, call: LiveCall, event: CallEvent) -> None:
        """Move the call by the table and put it in its task's pacing stage."""
        call.move(event)
        task = self.tasks.get(call.campaign_id or -1)
        if task is not None:
            task.index(call)

    def _follow(self, call: LiveCall) -> None:
        self.calls[call.id] = call
        task = self.tasks.get(call.campaign_id or -1)
        if task is not None:
            task.follow(call)

    def _end(self, call: LiveCall, result: CallResult, cause: int, detail: str, now: float) -> None:
        """Settle a call: its row, its lead, its agent, the pacer's learning."""
        self.calls.pop(call.id, None)
        call.move(CallEvent.END)
        task = self.tasks.get(call.campaign_id or -1)
        if task:
            task.unfollow(call)
            self._dirty.add(task.conf.id)
            task.counters.count_end(result.value, cause)
        if call.answered_at is None and result not in _NOT_DIALS:
            self._observe_dial(call, human=False, now=now)
        if call.connected_at is not None and task:
            task.pacer.observe_talk(now - call.connected_at)
        self.waiting.remove(call.id)
        if call.note:
            detail = f"{call.note}; {detail}" if detail else call.note
        self.store.end_call(call.id, now=now, result=result.value, cause=cause, detail=detail)
        self.store.log_call(
            call.id, now, "settled", f"{result.value} (cause {cause}){': ' + detail if detail else ''}"
        )
        if call.lead_id is not None and task is not None:
            status, next_at, attempts = after_attempt(
                result, attempts=call.attempt, policy=task.policy, now=now, agent_guaranteed=call.preview
            )
            self.store.settle_lead(
                call.lead_id, status=status.value, next_at=next_at, attempts=attempts, result=result.value
            )
            if status.value != "pending":
                task.counters.leads_left -= 1
        agent = self.roster.get(call.agent_id)
        if agent is not None and agent.call_id == call.id:
            if agent.state == AgentState.ON_CALL.value:
                self._move_agent(agent.id, AE.HANGUP, now)
                wrap = task.conf.wrap_up_s if task else MANUAL_WRAP_UP_S
                sampled = self.wrap_sampler(agent) if self.wrap_sampler else None
                self._timer(
                    now + (min(wrap, sampled) if sampled is not None else wrap), "wrap", str(agent.id)
                )
            elif agent.state == AgentState.RESERVED.value:
                self._move_agent(agent.id, AE.RELEASE, now)
        if call.agent_id is not None and self.notifier:
            self.notifier.publish(
                AgentCallEnded(agent_id=call.agent_id, call_id=call.id, result=result.value, at=now)
            )

    def _observe_dial(self, call: LiveCall, *, human: bool, now: float) -> None:
        """A placed call left the ringing stage (each call once: at its answer, or at its end)."""
        if call.direction == "manual":
            return
        task = self.tasks.get(call.campaign_id or -1)
        if task:
            task.pacer.observe_dial(human=human, ring_s=now - call.created_at, now=now)

    def _observe_wrap(self, agent: AgentRow, now: float) -> None:
        task = self.tasks.get(agent.campaign_id or -1)
        if task:
            task.pacer.observe_wrap(now - agent.since)

    def _route(self, call: LiveCall, now: float) -> None:
        """Give an answered call to the longest-idle ready agent of its task's group, or queue it."""
        task = self.tasks.get(call.campaign_id or -1)
        group = task.conf.skill_group_id if task else -1
        if not self._reserve_for(group, call, now):
            self.waiting.add(group, call.id)

    def _reserve_for(self, group: int, call: LiveCall, now: float) -> bool:
        """Reserve the longest-idle ready agent of `group` for `call` and ask the PBX to connect."""
        for agent in routing.longest_idle_first(self.roster.group(group)[0]):
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
            return True
        return False

    def _connect(self, call: LiveCall, agent: AgentRow, now: float) -> None:
        call.agent_id = agent.id
        call.agent_at = now
        self._move(call, CallEvent.RESERVE)
        self.store.update_call(call.id, state=call.state.value, agent_id=agent.id, agent_at=now)
        self.store.log_call(call.id, now, "agent", f"agent {agent.extension} reserved, phone rung")
        self._out.append(ConnectAgent(call.gateway, call.id, agent.extension))

    def _route_waiting(self, now: float) -> None:
        for group, queue in self.waiting.groups():
            while queue:
                call = self.calls.get(queue[0])
                if call is None or call.state is not S.ANSWERED:
                    queue.popleft()
                    continue
                if not self._reserve_for(group, call, now):
                    break
                queue.popleft()

    def _abandon_check(self, call_id: str, now: float) -> None:
        call = self.calls.get(call_id)
        if call is None:
            return
        why = f"no agent connected within {self.abandon_after_s:g} s"
        if call.state is S.ANSWERED:
            self._abandon(call, now, why)
        elif call.state is S.AGENT_RINGING:
            rang = now - (call.agent_at if call.agent_at is not None else now)
            missed = rang >= MISSED_AFTER_S
            if missed:
                why += f" (agent's phone rang {rang:.1f} s unanswered)"
            self._abandon(call, now, why, missed=missed)

    def _unreserve(self, call: LiveCall, now: float, *, missed: bool) -> None:
        """Free the agent reserved for `call`, if one still is: to not ready if they missed it (see
        `AgentEvent.MISS`), else back to ready."""
        agent = self.roster.get(call.agent_id)
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
        self._move(call, CallEvent.ABANDON)
        self.waiting.remove(call.id)
        task = self.tasks.get(call.campaign_id or -1)
        if task:
            task.counters.abandoned += 1
            task.pacer.observe_answer(abandoned=True, now=now)
        self._unreserve(call, now, missed=missed)
        call.note = why
        self.store.update_call(call.id, state=call.state.value, detail=why)
        self.store.log_call(call.id, now, "abandon", why)
        sound = task.conf.abandon_sound if task else "abandon"
        self._out.append(PlayAndHangup(call.gateway, call.id, sound))

    def _hangup(self, call: LiveCall) -> None:
        """Hang up a call still ringing (task paused or stopped): once."""
        self._move(call, CallEvent.HANG_UP)
        self.store.update_call(call.id, state=call.state.value)
        self.store.log_call(call.id, self._now, "hangup", "task no longer running: hung up before answer")
        self._out.append(Hangup(call.gateway, call.id))

    def _move_agent(self, agent_id: int, event: AE, now: float, **kw: Any) -> AgentState:
        """Move an agent (see `Roster.move`); one who became ready lets their groups' tasks place
        calls again."""
        new = self.roster.move(agent_id, event, now, **kw)
        if new is AgentState.READY:
            agent = self.roster.get(agent_id)
            for task in self.tasks.values():
                if agent is None or task.conf.skill_group_id in agent.groups:
                    self._dirty.add(task.conf.id)
        return new

    def _wrap_up_timeouts(self, now: float, ids: set[int], *, scan: bool) -> None:
        """End the wrap-ups whose timer fired (`ids`); with `scan` (once per refresh) also those of
        rows moved to wrap-up by another process or before a restart, which have no timer here."""
        for agent in self.agents.values() if scan else ():
            if agent.state == AgentState.WRAP_UP.value and agent.id not in ids:
                wrap_s, _ = self._wrap_conf(agent)
                if wrapup.time_is_up(now, since=agent.since, wrap_s=wrap_s, extra_s=agent.wrap_extra_s):
                    ids.add(agent.id)
        for agent_id in self._wrap_up_held(now, ids):
            row = self.agents.get(agent_id)
            if row is None or row.state != AgentState.WRAP_UP.value:
                continue
            before = replace(row, groups=set(row.groups))
            # A call dialled by hand from not ready (or away) returns there, not to campaign calls.
            event, reason = _AFTER_WRAP.get(row.after_wrap or "", (AE.WRAP_UP_DONE, None))
            try:
                self._move_agent(agent_id, event, now, expect=AgentState.WRAP_UP, reason=reason)
            except Conflict:
                continue
            self._observe_wrap(before, now)

    def _wrap_up_held(self, now: float, ids: set[int]) -> set[int]:
        """Of the wrap-ups due to end, those that may: an extended one waits for its new end, and
        one whose task holds for an unsaved outcome waits for the agent (`engine.wrapup`)."""
        due: dict[int, AgentRow] = {}
        for agent_id in ids:
            row = self.agents.get(agent_id)
            if row is None or row.state != AgentState.WRAP_UP.value:
                continue
            wrap_s, _ = self._wrap_conf(row)
            if wrapup.time_is_up(
                now, since=row.since, wrap_s=wrap_s, extra_s=row.wrap_extra_s, timer_fired=True
            ):
                due[agent_id] = row
        unsure = {
            r.call_id
            for r in due.values()
            if r.call_id and wrapup.held(hold=self._wrap_conf(r)[1], simulated=r.simulated, saved=False)
        }
        saved = self.store.outcomes_settled(sorted(unsure)) if unsure else set()
        return {aid for aid, r in due.items() if r.call_id not in unsure or r.call_id in saved}

    def _wrap_conf(self, row: AgentRow) -> tuple[float, bool]:
        """(wrap-up seconds, hold for the outcome) of the task of an agent's call, also of a task
        that has just finished; a call dialled by hand has its own time and no hold."""
        task = self.tasks.get(row.campaign_id or -1)
        conf = task.conf if task else self._gone.get(row.campaign_id or -1)
        return (conf.wrap_up_s, conf.wrap_up_hold) if conf else (MANUAL_WRAP_UP_S, False)

    def _enforce_task_states(self, now: float) -> None:
        for task in list(self.tasks.values()):
            state = task.conf.state
            if state is not CampaignState.RUNNING:
                # DOMAIN: on pause or stop, calls still ringing are hung up; answered ones are never cut.
                for cid in list(task.calls):
                    call = self.calls[cid]
                    if call.state is S.PREVIEW:
                        self._end(call, CallResult.CANCELLED, 0, f"task {state.value}", now)
                    elif call.state in (S.DIALING, S.RINGING):
                        self._hangup(call)
                continue
            if now >= task.next_left_check and not task.calls and not task.others_active:
                task.next_left_check = now + 5.0
                left = self.store.leads_left(task.conf.id)
                task.counters.leads_left = left
                if left == 0:
                    moves = self.store.finish_campaign(task.conf.id, now=now, note="nothing left to dial")
                    task.conf = task.conf.with_state(CampaignState.STOPPED)
                    if self.notifier:
                        for m in moves:
                            self.notifier.publish(m.message())

    def _pace(self, task: TaskRuntime, now: float) -> None:
        conf = task.conf
        gw = self.gateway(task.gateway)
        if not task.held:
            return  # another dialer paces this skill group
        if now < task.dry_until:
            return  # nothing was due a moment ago; looked at again on a tick after `dry_until`
        if conf.state is not CampaignState.RUNNING or gw.allowance(now) <= 0:
            if conf.state is CampaignState.RUNNING:
                wake = gw.wake_at(now)
                if wake is not None:
                    self._timer(wake, "gateway", gw.key)
            return
        open_keys = task.window.open_keys(task.tz_keys, now)
        if not open_keys and task.tz_keys:
            return
        tz_filter = None if len(open_keys) == len(task.tz_keys) else open_keys
        group_agents, slots = self.roster.group(conf.skill_group_id)
        if isinstance(task.pacer, PreviewPacer):
            self._offer_previews(task, group_agents, tz_filter, now)
            return
        view = PacingView(
            now=now,
            max_concurrency=conf.max_concurrency - task.others_active,
            agents=slots,
            share=self._share(task, slots, now),
            ringing_since=tuple(task.ringing.values()),
            waiting=len(task.waiting),
            agent_ringing=len(task.agent_ringing),
            connected=len(task.connected),
        )
        n = task.pacer.place(view)
        if n <= 0:
            return
        allowed = gw.allowance(now)
        if n > allowed:  # the gateway's rate: the rest when the next tokens are due
            n = allowed
            wake = gw.wake_at(now + 1e-6) or now + 0.1
            self._timer(wake, "gateway", gw.key)
        claimed, dnc = self.store.claim(conf, n, now=now, tz_keys=tz_filter, gateway=task.gateway)
        gw.placed(len(claimed), now)
        if not claimed and not dnc:  # nothing due now: it takes no share of the group's agents
            task.dry_until = now + DRY_RECHECK_S
        task.counters.leads_left -= len(dnc)
        for cl in claimed:
            call = LiveCall(cl.call_id, conf.id, cl.lead_id, cl.number, task.gateway, now, cl.attempt)
            self._follow(call)
            self._originate(task, call)

    def _share(self, task: TaskRuntime, slots: tuple[AgentSlot, ...], now: float) -> float:
        """The part of its skill group's agents this task paces for: ready agents are shared as whole
        agents between the group's tasks that have something to dial (`routing.apportion`). The split
        holds while the ready count and those tasks stay the same, so a leftover agent one task is
        already dialling for is not handed to the next task too; it moves on when agents move."""
        group = task.conf.skill_group_id
        active = [
            t
            for t in self.tasks.values()
            if t.conf.skill_group_id == group
            and t.conf.state is CampaignState.RUNNING
            and t.held
            and now >= t.dry_until
        ]
        ready = sum(1 for s in slots if s.state is AgentState.READY)
        key = (ready, tuple(t.conf.id for t in active))
        cached = self._shares.get(group)
        if cached is None or cached[0] != key:
            allotted = routing.apportion(ready, [(t.conf.id, t.last_extra) for t in active])
            base = ready // max(1, len(active))
            for t in active:
                if allotted[t.conf.id] > base:
                    t.last_extra = now
            shares = {tid: (n / ready if ready else 1.0 / len(active)) for tid, n in allotted.items()}
            cached = self._shares[group] = (key, shares)
        return cached[1].get(task.conf.id, 0.0)

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
            why = f"refused before sending: {exc.message}"
            self._end(call, CallResult.FAILED, 0, why, self._now)
            self._task_refused(call, why, self._now)
            return
        task.counters.dialled += 1
        self.originated += 1
        self.store.log_call(call.id, self._now, "originate", f"{call.number} via {call.gateway}")
        self._out.append(Originate(call.gateway, request))

    def _offered(self, call_id: str, agent_id: int) -> LiveCall:
        """The call offered to this agent in preview mode and not dialled yet, or Conflict."""
        call = self.calls.get(call_id)
        if call is None or not call.preview or call.agent_id != agent_id or call.state is not S.PREVIEW:
            raise Conflict("this preview is no longer yours", field="call_id")
        return call

    def _offer_previews(
        self, task: TaskRuntime, group_agents: list[AgentRow], tz_filter: list[str] | None, now: float
    ) -> None:
        """Give each ready agent of the group one lead to look at (nothing is dialled yet)."""
        conf = task.conf
        for agent in preview.agents_to_offer(group_agents):
            claimed, _ = self.store.claim(
                conf, 1, now=now, tz_keys=tz_filter, gateway=task.gateway, state=S.PREVIEW, agent_id=agent.id
            )
            if not claimed:
                return
            cl = claimed[0]
            call = LiveCall(
                cl.call_id,
                conf.id,
                cl.lead_id,
                cl.number,
                task.gateway,
                now,
                cl.attempt,
                state=S.PREVIEW,
                preview=True,
                agent_id=agent.id,
            )
            self._follow(call)
            try:
                self._move_agent(
                    agent.id, AE.RESERVE, now, expect=AgentState.READY, call_id=call.id, campaign_id=conf.id
                )
            except Conflict:
                self._end(call, CallResult.CANCELLED, 0, "agent no longer ready", now)
                continue
            if self.notifier:
                offer = self.store.screen_pop(call.id, preview=True)
                if offer is not None:
                    self.notifier.publish(offer)

    def _manual_started(self, event: ManualCallStarted, now: float) -> None:
        agent_id = self.roster.by_extension(event.extension)
        try:
            number = self.normalise(event.number)  # stored in E.164 like every campaign call
        except Invalid:
            number = event.number  # an internal extension or a service code: as dialled
        call = LiveCall(
            event.call_id, None, None, number, "default", now, direction="manual", agent_id=agent_id
        )
        self._follow(call)
        self.store.insert_manual_call(
            call_id=call.id, number=number, agent_id=agent_id, gateway=call.gateway, now=now
        )
        self.store.log_call(call.id, now, "manual", f"dialled {event.number} from {event.extension}")
        if agent_id is not None:
            try:
                self._move_agent(agent_id, AE.MANUAL_CALL, now, call_id=call.id)
            except Conflict as exc:
                log.info("manual call of %s recorded without a state change: %s", event.extension, exc)
            self._pop(call)

    def _pop(self, call: LiveCall) -> None:
        if self.notifier is None or call.agent_id is None:
            return
        pop = self.store.screen_pop(call.id)
        if pop is not None:
            self.notifier.publish(pop)

    def _release_stranded_agents(self, now: float) -> None:
        """Agents held by a call nobody follows any more (it ended while no dialer watched) are freed;
        those on a call another live dialer follows are left alone."""
        stranded = [
            a
            for a in self.agents.values()
            if a.call_id
            and a.call_id not in self.calls
            and a.state in (AgentState.RESERVED.value, AgentState.ON_CALL.value)
        ]
        owners = self.store.call_owners(a.call_id for a in stranded if a.call_id) if stranded else {}
        for agent in stranded:
            if agent.call_id in owners:
                continue
            event = AE.RELEASE if agent.state == AgentState.RESERVED.value else AE.HANGUP
            try:
                self._move_agent(agent.id, event, now)
            except Conflict:
                continue

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


def _ladder(event: GatewayEvent) -> tuple[str, str]:
    """(kind, detail) of a gateway event for the call's ladder."""
    if isinstance(event, CallRinging):
        return "ringing", ""
    if isinstance(event, CallAnswered):
        return "answered", event.answer.value
    if isinstance(event, CallConnected):
        return "connected", f"bridged to {event.extension}"
    if isinstance(event, AgentLegFailed):
        return "agent_failed", f"{event.extension}: {event.detail}"
    if isinstance(event, CallEnded):
        return "pbx_end", f"{event.result.value} cause {event.cause} {event.detail}".strip()
    return type(event).__name__, ""
