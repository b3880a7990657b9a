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
from callcenter.engine import preview, routing
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
    GatewayEvent,
    ManualCallStarted,
    UnknownChannel,
)
from callcenter.engine.pacing import ABANDON_AFTER_S, Pacer, PacingView, PredictivePacer, PreviewPacer
from callcenter.engine.roster import Roster
from callcenter.engine.store import AgentRow, CampaignConf, Store
from callcenter.engine.tasks import TaskRuntime, make_pacer, pacing_key, warm
from callcenter.errors import Conflict, Invalid
from callcenter.messages import AgentCallEnded, GatewayLinkChanged
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
_NOT_DIALS = (CallResult.CANCELLED, CallResult.NOT_DIALLED, CallResult.REFUSED)


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
        self.links_down: set[str] = set()

    @property
    def agents(self) -> dict[int, AgentRow]:
        return self.roster.agents

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
            elif call.id in live.get(call.gateway, set()) and adopt(call.gateway, call.id):
                if call.state is S.ANSWERED and call.answered_at is not None:
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

    def link_changed(self, gateway: str, up: bool, detail: str, now: float) -> list[Command]:
        """A gateway's link went down or up: no new calls are placed through a gateway that is down
        (they would only fail); calls already placed are followed by the driver's resync."""
        if up:
            self.links_down.discard(gateway)
            self._dirty.update(self.tasks)
        else:
            self.links_down.add(gateway)
        if self.notifier:
            self.notifier.publish(GatewayLinkChanged(gateway=gateway, up=up, detail=detail, at=now))
        return self._flush(now)

    def agent_changed(self, now: float) -> list[Command]:
        """An agent's state changed elsewhere (web): refresh and pace now."""
        self._refresh(now)
        self._dirty.update(self.tasks)
        return self._flush(now)

    def preview_dial(self, call_id: str, agent_id: int, now: float) -> list[Command]:
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
                if pacing_key(task.conf) != pacing_key(conf):
                    task.pacer = self.pacer_factory(conf)
                    self._warm(task)
                task.conf = conf
        for cid, task in self.tasks.items():
            if cid not in confs:  # stopped or deleted with calls still to follow
                state = self.store.campaign_states([cid]).get(cid, CampaignState.STOPPED.value)
                task.conf = task.conf.with_state(CampaignState(state))
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
            return  # another dialer's call, a spy leg, already settled, or a link event (link_changed)
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
        self._unreserve(call, now, missed=True)
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
        if result is CallResult.ABANDONED and call.state is not S.ABANDONING:
            task = self.tasks.get(call.campaign_id or -1)
            if task:  # the customer hung up before an agent came: abandoned, counted now
                task.counters.abandoned += 1
                task.pacer.observe_answer(abandoned=True, now=now)
        self._end(call, result, event.cause, event.detail, now)

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
        sound = task.conf.abandon_sound if task else "abandon"
        self._out.append(PlayAndHangup(call.gateway, call.id, sound))

    def _hangup(self, call: LiveCall) -> None:
        """Hang up a call still ringing (task paused or stopped): once."""
        self._move(call, CallEvent.HANG_UP)
        self.store.update_call(call.id, state=call.state.value)
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
        if conf.state is not CampaignState.RUNNING or task.gateway in self.links_down:
            return
        open_keys = task.window.open_keys(task.tz_keys, now)
        if not open_keys and task.tz_keys:
            return
        tz_filter = None if len(open_keys) == len(task.tz_keys) else open_keys
        group_agents, slots = self.roster.group(conf.skill_group_id)
        if isinstance(task.pacer, PreviewPacer):
            self._offer_previews(task, group_agents, tz_filter, now)
            return
        sharing = sum(
            1
            for t in self.tasks.values()
            if t.conf.state is CampaignState.RUNNING and t.conf.skill_group_id == conf.skill_group_id
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
        claimed, dnc = self.store.claim(conf, n, now=now, tz_keys=tz_filter, gateway=task.gateway)
        task.counters.leads_left -= len(dnc)
        for cl in claimed:
            call = LiveCall(cl.call_id, conf.id, cl.lead_id, cl.number, task.gateway, now, cl.attempt)
            self._follow(call)
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
        call = LiveCall(
            event.call_id, None, None, event.number, "default", now, direction="manual", agent_id=agent_id
        )
        self._follow(call)
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
        pop = self.store.screen_pop(call.id)
        if pop is not None:
            self.notifier.publish(pop)

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
