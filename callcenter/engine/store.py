"""What the engine reads and writes, as a `Store` protocol over plain rows: the core never sees SQL.
`callcenter.engine.sqlstore.SqlStore` implements it on SQLite and PostgreSQL. Every call of the core
happens inside one `transaction()` of the runner's; PBX commands are sent only after it commits."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from callcenter import agents as agent_table
from callcenter.messages import ScreenPop
from callcenter.models import AgentState, CallState, CampaignBase, CampaignState
from callcenter.stats import Counters


class CampaignConf(CampaignBase):
    """A task's settings as the engine reads them (once per refresh): every `CampaignBase` field plus
    its id and state. Built from the row without validation (`of_row`): the row is the truth."""

    id: int
    state: CampaignState

    @classmethod
    def of_row(cls, values: dict[str, Any]) -> CampaignConf:
        return cls.model_construct(**{**values, "state": CampaignState(values["state"])})

    def with_state(self, state: CampaignState) -> CampaignConf:
        return self.model_copy(update={"state": state})


@dataclass
class AgentRow:
    id: int
    extension: str
    state: str
    since: float
    idle_since: float
    call_id: str | None
    campaign_id: int | None
    simulated: bool
    after_wrap: str | None = None  # not_ready / away: where a hand-dialled call's wrap-up returns to
    wrap_extra_s: float = 0.0  # what the agent added to this wrap-up with "extend"
    groups: set[int] = field(default_factory=set)


@dataclass(frozen=True)
class ClaimedLead:
    call_id: str
    lead_id: int
    number: str
    attempt: int
    fields: str


class Store(Protocol):
    """The engine's persistence. Calls and leads are written as they move; agent and task moves are
    compare-and-sets that raise `Conflict` when the row moved on."""

    dialer_id: str

    # --- tasks
    def live_campaigns(self) -> list[CampaignConf]:
        """Running and paused tasks (paused ones still have calls to follow)."""
        ...

    def campaign_states(self, ids: Iterable[int]) -> dict[int, str]: ...

    def tz_keys(self, campaign_id: int) -> list[str]:
        """The time-zone keys of a task's leads (for its calling window)."""
        ...

    def leads_left(self, campaign_id: int) -> int: ...

    def active_calls_count(self, campaign_id: int, *, others_only: bool = False) -> int: ...

    def counters(self, campaign_id: int) -> Counters:
        """A task's counters recounted from its rows."""
        ...

    def finish_campaign(self, campaign_id: int, *, now: float, note: str) -> list[Any]:
        """The dialer's FINISH move of a running task (compare-and-set, audit row): its moves."""
        ...

    def pause_campaign(self, campaign_id: int, *, now: float, note: str) -> list[Any]:
        """The dialer pauses a task it cannot dial (the PBX refuses its every call): its moves."""
        ...

    def recent_calls(self, campaign_id: int, limit: int = 600) -> list[dict[str, Any]]: ...

    def abandon_totals(self, campaign_id: int) -> tuple[int, int]:
        """(live answered, abandoned) over the whole task."""
        ...

    # --- agents
    def agents(self) -> dict[int, AgentRow]: ...

    def agent_by_extension(self, extension: str) -> int | None: ...

    def outcomes_settled(self, call_ids: Sequence[str]) -> set[str]:
        """Of these calls, those whose outcome the agent saved (or discarded): the wrap-up hold."""
        ...

    def move_agent(
        self,
        *,
        agent_id: int,
        event: agent_table.AgentEvent,
        now: float,
        expect: AgentState | None,
        call_id: str | None = None,
        campaign_id: int | None = None,
        reason: str | None = None,
    ) -> agent_table.AgentMove: ...

    # --- leads and calls
    def claim(
        self,
        conf: CampaignConf,
        n: int,
        *,
        now: float,
        tz_keys: Sequence[str] | None,
        gateway: str,
        state: CallState = CallState.DIALING,
        agent_id: int | None = None,
    ) -> tuple[list[ClaimedLead], list[int]]:
        """Claim up to `n` due leads and create their Call rows; (claimed, lead ids found on DNC)."""
        ...

    def update_call(self, call_id: str, **values: Any) -> None: ...

    def start_call(self, call_id: str, *, created_at: float) -> None: ...

    def insert_manual_call(
        self, *, call_id: str, number: str, agent_id: int | None, gateway: str, now: float
    ) -> None: ...

    def end_call(self, call_id: str, *, now: float, result: str, cause: int, detail: str) -> None: ...

    def log_call(self, call_id: str, at: float, kind: str, detail: str = "") -> None:
        """One step of the call's ladder (what the PBX said, what the dialer did)."""
        ...

    def settle_lead(
        self, lead_id: int, *, status: str, next_at: float, attempts: int, result: str
    ) -> None: ...

    def open_calls(self, *, mine: bool = True) -> list[dict[str, Any]]: ...

    def orphan_claims(self, dialer_ids: Sequence[str]) -> int:
        """Leads these dialers claimed that have no open call: back to the queue. How many."""
        ...

    def call_owners(self, call_ids: Iterable[str]) -> dict[str, str]:
        """The dialer following each of these calls, for those still open."""
        ...

    # --- dialers
    def register_dialer(self, *, host: str, pid: int, now: float) -> None: ...

    def beat(self, now: float) -> None: ...

    def stop_dialer(self, now: float) -> None: ...

    def dialers(self) -> list[dict[str, Any]]: ...

    def take_over(self, dialer_ids: Sequence[str], now: float) -> None:
        """This dialer follows the open calls and claims of dialers found dead from now on."""
        ...

    def lease_groups(self, wanted: Sequence[int], *, now: float, ttl: float, at_most: int) -> set[int]:
        """Renew and take skill-group leases (at most `at_most`): the groups this dialer holds."""
        ...

    def screen_pop(self, call_id: str, *, preview: bool = False) -> ScreenPop | None:
        """The pop (or preview offer) of a call that has an agent."""
        ...
