"""Pacing: how many calls to place now. Plain data in, a number out; no I/O, the clock passed in.

Every pacer answers `place(view)` with the number of new calls for one task and learns from
`observe_*` calls. All modes share the final cap (`cap`): a task never has more calls up at once
than its max concurrency, whatever the mode.

Modes
- `ratio` (the seed's rule): target = min(max concurrency, floor(ready x ratio)); place target - in_flight.
- `progressive`: ratio 1.
- `preview`: places nothing by itself; the engine hands each ready agent a lead to dial by click.
- `predictive` (`PredictivePacer`): lines per agent follow the measured answer rate, the ring-time
  and talk-time distributions and the agents about to become free, so that answered calls meet free
  agents; a feedback loop keeps the abandon rate under the task's target over a rolling window and
  over the whole task. Below `min_agents` agents it falls back to progressive.
"""

from __future__ import annotations

import math
from collections import deque
from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from callcenter.models import AgentState

ABANDON_AFTER_S = 2.0  # DOMAIN: abandoned = answered by a person and no agent within 2 s


@dataclass(frozen=True, slots=True)
class AgentSlot:
    state: AgentState
    since: float  # when the agent entered `state`


@dataclass(frozen=True)
class PacingView:
    """What one task looks like at `now`."""

    now: float
    max_concurrency: int
    agents: tuple[AgentSlot, ...] = ()  # the skill group's agents (offline ones may be left out)
    share: float = 1.0  # the part of the group this task counts on (1/k with k running tasks on it)
    ringing_since: tuple[float, ...] = ()  # placed, not answered yet: when each was placed
    waiting: int = 0  # answered, no agent yet
    agent_ringing: int = 0  # answered, an agent is being connected
    connected: int = 0

    @property
    def in_flight(self) -> int:
        """DOMAIN: placed, not yet connected to an agent nor ended (agent-ringing ones have an agent)."""
        return len(self.ringing_since) + self.waiting

    @property
    def active(self) -> int:
        return self.in_flight + self.agent_ringing + self.connected

    @cached_property
    def ready(self) -> float:
        return self.share * sum(1 for a in self.agents if a.state is AgentState.READY)

    @cached_property
    def working(self) -> float:
        """Agents taking part (ready, reserved, on a call or in wrap-up), times the share."""
        busy = (AgentState.READY, AgentState.RESERVED, AgentState.ON_CALL, AgentState.WRAP_UP)
        return self.share * sum(1 for a in self.agents if a.state in busy)


def ratio_target(max_concurrency: int, ready: float, ratio: float) -> int:
    """The seed's rule. `ready` may be fractional (a shared skill group); 1e-9 absorbs float noise.

    >>> ratio_target(10, 4, 1.5)
    6
    """
    return max(0, min(max_concurrency, math.floor(ready * ratio + 1e-9)))


def cap(view: PacingView, wanted: int) -> int:
    """Never below zero, never above what max concurrency leaves."""
    return max(0, min(wanted, view.max_concurrency - view.active))


class Pacer:
    """Base pacer: observations are optional; `place` must be given."""

    lines_per_agent: float = 0.0

    def place(self, view: PacingView) -> int:
        raise NotImplementedError

    def observe_dial(self, *, human: bool, ring_s: float, now: float) -> None:
        """A placed call left the ringing stage: answered by a person after `ring_s`, or not."""

    def observe_answer(self, *, abandoned: bool, now: float) -> None:
        """A person answered: connected to an agent in time, or abandoned."""

    def observe_talk(self, talk_s: float) -> None:
        """A connected call ended after `talk_s` of conversation."""

    def observe_wrap(self, wrap_s: float) -> None:
        """An agent finished after-call work."""

    def observe_connect(self, connect_s: float) -> None:
        """An agent's phone was connected `connect_s` after the dialer asked for it."""

    def _lpa(self, view: PacingView, placed: int) -> None:
        self.lines_per_agent = (view.in_flight + placed) / max(view.ready, 1e-9) if view.ready else 0.0


class RatioPacer(Pacer):
    """`ratio` mode (and `progressive` with ratio 1)."""

    def __init__(self, ratio: float) -> None:
        self.ratio = ratio

    def place(self, view: PacingView) -> int:
        n = cap(view, ratio_target(view.max_concurrency, view.ready, self.ratio) - view.in_flight)
        self._lpa(view, n)
        return n


class PreviewPacer(Pacer):
    """Preview: the engine gives each ready agent a lead; nothing is dialled without a click."""

    def place(self, view: PacingView) -> int:
        return 0


class Samples:
    """The last `size` observations, with a prior that fades as real ones arrive."""

    def __init__(self, size: int, prior: list[float]) -> None:
        self.values: deque[float] = deque(maxlen=size)
        self.prior = prior
        self.version = 0

    def add(self, value: float) -> None:
        self.values.append(value)
        self.version += 1

    def __len__(self) -> int:
        return len(self.values)

    def array(self) -> np.ndarray:
        data = list(self.values)
        if len(data) < len(self.prior):
            data += self.prior[: len(self.prior) - len(data)]
        return np.sort(np.asarray(data, dtype=float))

    def mean(self) -> float:
        return float(self.array().mean())


def _erf(x: np.ndarray) -> np.ndarray:
    """erf, vectorised (Abramowitz & Stegun 7.1.26, error below 1.5e-7): numpy has none built in."""
    sign = np.sign(x)
    x = np.abs(x)
    t = 1.0 / (1.0 + 0.3275911 * x)
    poly = t * (0.254829592 + t * (-0.284496736 + t * (1.421413741 + t * (-1.453152027 + t * 1.061405429))))
    return sign * (1.0 - poly * np.exp(-x * x))


def survival(sorted_samples: np.ndarray, grid: np.ndarray) -> np.ndarray:
    """P(X > x) for each x of `grid`, from sorted samples."""
    n = len(sorted_samples)
    return 1.0 - np.searchsorted(sorted_samples, grid, side="right") / n


@dataclass
class PredictiveSettings:
    target_abandon: float = 0.03  # fraction of live answers
    min_agents: int = 10  # fewer agents than this: progressive
    tolerance_s: float = 1.8  # at most this long may an answer wait for an agent (see `tolerance`)
    horizon_s: int = 40  # how far ahead answers and free agents are compared
    window_s: float = 1800.0  # rolling window of the abandon rate
    max_lines_per_agent: float = 6.0
    warmup_dials: int = 30  # dials before the model is trusted (progressive until then)
    z_start: float = 1.0  # safety margin in standard deviations, adjusted by feedback
    z_min: float = -0.5
    z_max: float = 4.0
    gain: float = 0.15  # feedback gain (log-space) on the abandon rate
    adjust_every_s: float = 30.0
    aim: float = 0.95  # aim at this part of the target, keeping the rest as a margin
    method: str = "expected"  # "expected": bound the expected abandon ratio; "z": a fixed safety margin
    ring_prior: list[float] = field(default_factory=lambda: [float(x) for x in range(3, 15)])
    talk_prior: list[float] = field(default_factory=lambda: [60.0, 90.0, 120.0, 150.0, 180.0])
    wrap_prior: list[float] = field(default_factory=lambda: [15.0])


class PredictivePacer(Pacer):
    """Predictive dialling: see the module docstring.

    For each second t of the horizon it compares the answers expected by `now + t` (calls ringing,
    from their elapsed time and the learned ring-time distribution, plus the new calls) with the
    agents expected to be free by `now + t + tolerance` (ready ones, plus busy ones from their
    elapsed talk / wrap-up time and the learned distributions), and places the most calls for which
    answers never outrun agents by more than `z` standard deviations. `z` follows the measured
    abandon rate (rolling and whole-task) towards `aim x target`.
    """

    def __init__(self, settings: PredictiveSettings | None = None, *, wrap_up_s: float | None = None) -> None:
        self.s = settings or PredictiveSettings()
        self.ring = Samples(400, self.s.ring_prior)  # dial -> human answer, seconds
        self.non = Samples(400, [1.0, 25.0])  # dial -> end, for dials no person answered
        self.talk = Samples(300, self.s.talk_prior)
        self.wrap = Samples(200, [float(wrap_up_s)] if wrap_up_s else self.s.wrap_prior)
        self.connect = Samples(100, [0.5])  # agent phone pick-up after the dialer asked, seconds
        self.outcomes: deque[int] = deque(maxlen=600)
        self.live = 0
        self.abandoned = 0
        self.recent: deque[tuple[float, int]] = deque()
        self.z = self.s.z_start
        # The model's own abandon estimate runs low (it sees the worst moment of the horizon, not
        # every one), so its budget starts at half the aim and the feedback finds the level.
        self.aim_now = 0.5 * self.s.aim * self.s.target_abandon
        self._next_adjust = -math.inf
        self._tables_version = (-1, -1, -1, -1)
        self._tables: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float] | None = None
        self.progressive = RatioPacer(1.0)

    # --- learning ---------------------------------------------------------------------------

    def observe_dial(self, *, human: bool, ring_s: float, now: float) -> None:
        self.outcomes.append(1 if human else 0)
        (self.ring if human else self.non).add(max(0.0, ring_s))

    def observe_answer(self, *, abandoned: bool, now: float) -> None:
        self.live += 1
        self.abandoned += int(abandoned)
        self.recent.append((now, int(abandoned)))

    def observe_talk(self, talk_s: float) -> None:
        self.talk.add(max(0.0, talk_s))

    def observe_wrap(self, wrap_s: float) -> None:
        self.wrap.add(max(0.0, wrap_s))

    def observe_connect(self, connect_s: float) -> None:
        self.connect.add(max(0.0, connect_s))

    @property
    def tolerance(self) -> float:
        """How long an answer can wait for an agent to free up: the 2 s of the abandon rule minus
        the time agents' phones take to connect (90th percentile, measured), with a margin."""
        connect = self.connect.array()
        p90 = float(connect[min(len(connect) - 1, int(0.9 * len(connect)))])
        return max(0.2, min(self.s.tolerance_s, ABANDON_AFTER_S - 1.1 * p90 - 0.05))

    @property
    def answer_rate(self) -> float:
        # A Beta(2, 6) prior (about 25 %) so the first few dials do not swing it.
        return (sum(self.outcomes) + 2.0) / (len(self.outcomes) + 8.0)

    def abandon_rates(self, now: float) -> tuple[float, float]:
        """(rolling, whole task) abandon rates as fractions of live answers."""
        while self.recent and self.recent[0][0] < now - self.s.window_s:
            self.recent.popleft()
        rolling = sum(a for _, a in self.recent) / len(self.recent) if self.recent else 0.0
        total = self.abandoned / self.live if self.live else 0.0
        return rolling, total

    def _adjust(self, now: float) -> None:
        """Steer the model's abandon budget with the measured rate: the model knows the shape of the
        trade-off, the measurement corrects its level. Log-space steps, so a rate twice the aim halves
        the budget over a few periods; bounded so one bad minute cannot stall the task."""
        if now < self._next_adjust:
            return
        self._next_adjust = now + self.s.adjust_every_s
        rolling, total = self.abandon_rates(now)
        aim = self.s.aim * self.s.target_abandon
        n = len(self.recent)
        if n < 20:
            return
        # The whole-task rate is what the law looks at; the rolling one reacts faster.
        observed = max(rolling, total if self.live >= 100 else 0.0)
        weight = min(1.0, n / 200.0)
        step = self.s.gain * weight * (math.log(aim + 0.002) - math.log(observed + 0.002))
        self.aim_now = min(
            self.s.target_abandon * 1.5, max(self.s.target_abandon / 30, self.aim_now * math.exp(step))
        )

    # --- deciding ---------------------------------------------------------------------------

    def _model(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray, float]:
        """Tables on a 1-second grid: Q[e, t] = P(person answers by e + t | still ringing at e),
        talk survival, wrap survival, G[t] = P(person answers by t) for a new call; and the mean wrap."""
        version = (self.ring.version, self.non.version, self.talk.version, self.wrap.version)
        # Rebuild after every 20 new observations: the distributions move slowly, the tables cost.
        if self._tables is not None and sum(version) - sum(self._tables_version) < 20:
            return self._tables
        p = self.answer_rate
        h = self.s.horizon_s
        e_grid = np.arange(0, 121, dtype=float)
        t_grid = np.arange(0, h + 1, dtype=float)
        s_ring = self.ring.array()
        s_non = self.non.array()
        sa_e = survival(s_ring, e_grid)
        sn_e = survival(s_non, e_grid)
        denom = p * sa_e + (1 - p) * sn_e
        sa_et = survival(s_ring, (e_grid[:, None] + t_grid[None, :]).ravel()).reshape(
            len(e_grid), len(t_grid)
        )
        with np.errstate(divide="ignore", invalid="ignore"):
            q = np.where(denom[:, None] > 1e-9, p * (sa_e[:, None] - sa_et) / denom[:, None], 0.0)
        talk_grid = np.arange(0, 7201, dtype=float)
        s_talk = survival(self.talk.array(), talk_grid)
        wrap_arr = self.wrap.array()
        s_wrap = survival(wrap_arr, np.arange(0, 3601, dtype=float))
        self._tables = (np.clip(q, 0.0, 1.0), s_talk, s_wrap, q[0], float(wrap_arr.mean()))
        self._tables_version = version
        return self._tables

    @staticmethod
    def _excess_ratio(
        n: int, a_mean: np.ndarray, a_var: np.ndarray, g: np.ndarray, f_mean: np.ndarray, f_var: np.ndarray
    ) -> float:
        """Expected answers left without an agent, as a fraction of expected answers, if `n` more
        calls are placed: answers by t minus agents free by t + tolerance, worst t, normal approx."""
        mu = a_mean + n * g - f_mean
        sd = np.sqrt(np.maximum(a_var + f_var + n * g * (1 - g), 1e-9))
        x = mu / sd
        cdf = 0.5 * (1.0 + _erf(x / math.sqrt(2.0)))
        pdf = np.exp(-0.5 * x * x) / math.sqrt(2.0 * math.pi)
        excess = sd * pdf + mu * cdf
        answers = a_mean[-1] + n * g[-1]
        return float(excess.max() / answers) if answers > 1e-9 else 0.0

    def _largest_n(
        self,
        a_mean: np.ndarray,
        a_var: np.ndarray,
        g: np.ndarray,
        f_mean: np.ndarray,
        f_var: np.ndarray,
        aim: float,
    ) -> int:
        ratio = self._excess_ratio
        if ratio(0, a_mean, a_var, g, f_mean, f_var) > aim:
            return 0
        lo, hi = 0, 1
        while hi < 4096 and ratio(hi, a_mean, a_var, g, f_mean, f_var) <= aim:
            lo, hi = hi, hi * 2
        while hi - lo > 1:
            mid = (lo + hi) // 2
            if ratio(mid, a_mean, a_var, g, f_mean, f_var) <= aim:
                lo = mid
            else:
                hi = mid
        return lo

    def place(self, view: PacingView) -> int:
        agents_now = view.working / max(view.share, 1e-9)
        if agents_now < self.s.min_agents or len(self.outcomes) < self.s.warmup_dials:
            n = self.progressive.place(view)
            self.lines_per_agent = self.progressive.lines_per_agent
            return n
        self._adjust(view.now)
        q, s_talk, s_wrap, g, wrap_mean = self._model()
        h = self.s.horizon_s
        tol = self.tolerance
        t = np.arange(0, h + 1, dtype=float)

        # Answers expected by now + t from calls already ringing (plus those already waiting).
        elapsed = np.clip(np.array([view.now - s for s in view.ringing_since], dtype=float), 0, 120).astype(
            int
        )
        qi = q[elapsed] if len(elapsed) else np.zeros((0, h + 1))
        a_mean = view.waiting + qi.sum(axis=0)
        a_var = (qi * (1 - qi)).sum(axis=0)

        # Agents expected free by now + t + tolerance.
        ft = t + tol
        free_mean = np.full(h + 1, view.ready)
        free_var = np.zeros(h + 1)
        wrap_age = [view.now - a.since for a in view.agents if a.state is AgentState.WRAP_UP]
        talk_age = [
            view.now - a.since for a in view.agents if a.state in (AgentState.ON_CALL, AgentState.RESERVED)
        ]
        probs = []
        if wrap_age:  # free when their wrap-up ends
            i = np.minimum(np.maximum(np.array(wrap_age), 0).astype(int), len(s_wrap) - 1)
            base = s_wrap[i][:, None]
            later = s_wrap[np.minimum(i[:, None] + ft.astype(int)[None, :], len(s_wrap) - 1)]
            probs.append(np.where(base > 1e-9, (base - later) / np.maximum(base, 1e-9), 1.0))
        if talk_age:  # free when their call ends and then their wrap-up
            i = np.minimum(np.maximum(np.array(talk_age), 0).astype(int), len(s_talk) - 1)
            base = s_talk[i][:, None]
            reach = np.clip(i[:, None] + (ft - wrap_mean)[None, :], i[:, None], len(s_talk) - 1).astype(int)
            done = np.where(base > 1e-9, (base - s_talk[reach]) / np.maximum(base, 1e-9), 1.0)
            probs.append(np.where((ft > wrap_mean)[None, :], done, 0.0))
        for prob in probs:
            prob = np.clip(prob, 0.0, 1.0) * view.share
            free_mean += prob.sum(axis=0)
            free_var += (prob * (1 - prob)).sum(axis=0)

        mask = g > 0.02
        if not mask.any():
            return 0
        a_mean, a_var, g_m = a_mean[mask], a_var[mask], g[mask]
        f_mean, f_var = free_mean[mask], free_var[mask]
        if self.s.method == "expected":
            n = self._largest_n(a_mean, a_var, g_m, f_mean, f_var, self.aim_now)
        else:
            # Largest n with a_mean + n g + z sd <= free_mean at every t of the horizon.
            slack = f_mean - a_mean
            var0 = a_var + f_var
            n = int(max(0.0, np.floor((slack - self.z * np.sqrt(var0)) / g_m).min()))
            var1 = var0 + n * g_m * (1 - g_m)
            n = int(max(0.0, np.floor((slack - self.z * np.sqrt(var1)) / g_m).min()))
        limit = math.floor(self.s.max_lines_per_agent * view.working) - view.in_flight
        n = cap(view, min(n, limit))
        self._lpa(view, n)
        return n
