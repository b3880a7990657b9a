"""How big a PBX must be for the tasks that dial through it, and how fast it must let new calls in:
one place for both renderers, so Asterisk's rtp.conf, FreeSWITCH's switch.conf, the compose port
mapping and the dialer's originate rate agree.

Capacity. A bridged call has two legs (customer, agent), each with an RTP and an RTCP port: four
ports. The calls a PBX may carry at once are the sum of the max concurrency of the tasks that dial
through it, plus one per agent phone (a call dialled by hand, a supervisor's listening leg). The
RTP range is rendered from that, rounded up to a hundred ports, and a task set over the ceiling
(`CALLCENTER_PBX_MAX_CALLS`) is refused with the tasks named, rather than rendered into a PBX that
cannot take them.

Rate. FreeSWITCH refuses new sessions over `sessions-per-second`, and every new session counts:
customer legs (the dialer's token bucket, `GatewayRow.originates_per_s`), the agent leg of each
answered call, agents' own calls and supervisors' legs; and its throttle lets only N-1 a second
through (tests/fixtures/freeswitch-faults/README.md). Asterisk has no such limit.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from typing import Any

from callcenter.errors import Invalid

PORTS_PER_CALL = 4  # two legs x (RTP + RTCP)
PORT_STEP = 100  # ranges are rounded up to this many ports
MIN_OTHER_SESSIONS_PER_S = 10  # agents' own calls, supervisors, refused inbound calls


@dataclass(frozen=True)
class TaskLoad:
    id: int
    name: str
    max_concurrency: int
    amd: bool = False


@dataclass(frozen=True)
class Capacity:
    """The load one PBX is rendered for: its tasks, the agent phones, the dialer's originate rate."""

    gateway: str  # "default" or the gateway row's name
    originates_per_s: float
    tasks: tuple[TaskLoad, ...] = ()
    phones: int = 0

    @property
    def calls(self) -> int:
        """Calls at once: every task at its max concurrency, and one per agent phone."""
        return sum(t.max_concurrency for t in self.tasks) + self.phones

    @property
    def rtp_ports(self) -> int:
        """RTP + RTCP ports for `calls` bridged calls, rounded up to a multiple of PORT_STEP."""
        need = PORTS_PER_CALL * max(self.calls, 1)
        return math.ceil(need / PORT_STEP) * PORT_STEP

    def rtp_range(self, start: int) -> tuple[int, int]:
        """(first, last) port of the RTP range that starts at `start` (even, as both PBXs want)."""
        if start % 2 or not 1024 <= start <= 65534:
            raise Invalid(
                f"the RTP range must start at an even port 1024-65534, not {start}", field="rtp_start"
            )
        end = start + self.rtp_ports - 1
        if end > 65535:
            raise Invalid(
                f"{self.calls} calls need {self.rtp_ports} RTP ports, more than fit above {start}: "
                "start the range lower or lower the tasks' max concurrency",
                field="rtp_start",
            )
        return start, end

    @property
    def sessions(self) -> int:
        """FreeSWITCH max-sessions: two legs per call."""
        return 2 * self.calls

    @property
    def sessions_per_second(self) -> int:
        """FreeSWITCH sessions-per-second: the dialer's customer legs, as many agent legs, the
        agents' and supervisors' own legs, plus one because the throttle lets only N-1 through."""
        rate = math.ceil(self.originates_per_s)
        return rate + rate + max(rate, MIN_OTHER_SESSIONS_PER_S) + 1

    def check(self, max_calls: int) -> None:
        """Refuse a task set this PBX should not be configured for, naming the tasks."""
        if self.calls <= max_calls:
            return
        tasks = sorted(self.tasks, key=lambda t: (-t.max_concurrency, t.id))
        named = ", ".join(f"{t.name!r} (id {t.id}): {t.max_concurrency}" for t in tasks) or "none"
        raise Invalid(
            f"gateway {self.gateway}: its tasks may place {self.calls - self.phones} calls at once "
            f"(max concurrency of {named}) and its {self.phones} agent phones one each: {self.calls} "
            f"calls, over the ceiling of {max_calls} (CALLCENTER_PBX_MAX_CALLS). Lower those tasks' "
            "max concurrency, move some to another gateway, or raise the ceiling for a bigger PBX.",
            field="max_concurrency",
        )


@dataclass(frozen=True)
class GatewayPlan:
    """The PBX a configuration is rendered for: a gateway row, or the default one from settings
    (`row` None), with the load it must carry."""

    capacity: Capacity
    row: dict[str, Any] | None = None


def default_originates_per_s() -> float:
    """The rate of the default gateway (no row of its own), as the dialer reads it: the
    CALLCENTER_GATEWAY_ORIGINATES_PER_S setting."""
    from callcenter.config import Settings

    raw = os.environ.get("CALLCENTER_GATEWAY_ORIGINATES_PER_S")
    try:
        return float(raw) if raw else float(Settings.model_fields["gateway_originates_per_s"].default)
    except ValueError:
        raise Invalid(
            "CALLCENTER_GATEWAY_ORIGINATES_PER_S must be a number", field="originates_per_s"
        ) from None


def load_plan(session: Any, *, kind: str, gateway: str | None, phones: int) -> GatewayPlan:
    """The plan for the gateway row named `gateway` (which must be of `kind`), or for the default
    gateway when `gateway` is None: its tasks are those with no gateway row (deleted tasks never
    dial again and are left out)."""
    from sqlmodel import col, select

    from callcenter.models import Campaign, CampaignState, GatewayRow

    row = None
    if gateway is not None:
        row = session.exec(select(GatewayRow).where(col(GatewayRow.name) == gateway)).first()
        if row is None:
            raise Invalid(f"no gateway named {gateway!r}", field="gateway")
        if row.kind != kind:
            raise Invalid(f"gateway {gateway!r} is a {row.kind} gateway, not {kind}", field="gateway")
    query = select(Campaign.id, Campaign.name, Campaign.max_concurrency, Campaign.amd).where(
        col(Campaign.state) != CampaignState.DELETED.value
    )
    query = query.where(col(Campaign.gateway_id) == row.id if row else col(Campaign.gateway_id).is_(None))
    rows = session.exec(query.order_by(col(Campaign.id)))
    tasks = tuple(TaskLoad(int(i), n, int(m), bool(a)) for i, n, m, a in rows)
    rate = float(row.originates_per_s) if row else default_originates_per_s()
    capacity = Capacity(gateway or "default", rate, tasks, phones)
    return GatewayPlan(capacity, row.model_dump() if row else None)
