"""Engine throughput figures used by bench/pacing.py: originates per second against the simulated PBX
(the real async runner, in real time) and the list import rate with the memory it takes."""

from __future__ import annotations

import asyncio
import random
import re
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from callcenter.clock import LoopScheduler
from callcenter.db import make_engine, upgrade
from callcenter.engine.runner import DialerRunner
from callcenter.engine.simulation import seed_world
from callcenter.gateways.simulated import Dist, SimProfile, SimulatedGateway


def originate_rate(
    seconds: float = 10.0, *, agents: int = 100, workdir: str | None = None
) -> tuple[float, float]:
    """(originates per second, CPU used as a fraction of one core) of the dialer process at
    saturation: a ratio task with lines to spare whose customers are all busy within a second."""
    workdir = workdir or tempfile.mkdtemp(prefix="cc-bench-tput-")
    url = f"sqlite:///{workdir}/tput.db"
    upgrade(url)
    engine = make_engine(url)
    seed_world(
        engine,
        agents=agents,
        leads=int(seconds * 3000) + 20_000,
        now=time.time(),
        campaign={"pacing_mode": "ratio", "agent_ratio": 20.0, "max_concurrency": 2000, "retry_delays": "{}"},
    )

    async def main() -> tuple[float, float]:
        profile = SimProfile(
            p_human=0.0, p_machine=0.0, p_busy=1.0, p_no_answer=0.0, busy_after=Dist.uniform(0.2, 0.8), seed=5
        )
        gw = SimulatedGateway(LoopScheduler(), profile)
        # No session-rate limit: this measures what the engine itself can originate.
        runner = DialerRunner(engine, {"default": gw}, dialer_id="bench", originates_per_s=1e6)
        stop = asyncio.Event()
        task = asyncio.create_task(runner.run(stop))
        await asyncio.sleep(1.5)  # warm up: first claims, first ends
        n0, c0, t0 = runner.core.originated, time.process_time(), time.perf_counter()
        await asyncio.sleep(seconds)
        n1, c1, t1 = runner.core.originated, time.process_time(), time.perf_counter()
        stop.set()
        await asyncio.wait_for(task, 10)
        await runner.close()
        return (n1 - n0) / (t1 - t0), (c1 - c0) / (t1 - t0)

    try:
        return asyncio.run(main())
    finally:
        engine.dispose()


T = TypeVar("T")


def _status_mb(field: str) -> float:
    match = re.search(rf"^{field}:\s+(\d+) kB", Path("/proc/self/status").read_text(), re.MULTILINE)
    return int(match.group(1)) / 1024 if match else 0.0


def peak_rss_added(fn: Callable[[], T]) -> tuple[T, float]:
    """`fn()` and the most resident memory (MB) this process held during it above what it held just
    before: the kernel's high-water mark, reset first (Linux), else sampled every 10 ms."""
    base = _status_mb("VmRSS")
    try:
        Path("/proc/self/clear_refs").write_text("5")  # resets VmHWM to the current RSS
    except OSError:
        peak = [base]
        stop = threading.Event()

        def sample() -> None:
            while not stop.wait(0.01):
                peak[0] = max(peak[0], _status_mb("VmRSS"))

        sampler = threading.Thread(target=sample, daemon=True)
        sampler.start()
        try:
            result = fn()
        finally:
            stop.set()
            sampler.join()
        return result, peak[0] - base
    result = fn()
    return result, _status_mb("VmHWM") - base


def import_rate(rows: int, workdir: str) -> tuple[float, float]:
    """Rows per second of the list import (CSV, Chinese mobile numbers, three extra columns), and the
    peak resident memory (MB) the import added to this process (the parallel normalisers' own
    processes not counted)."""
    from sqlalchemy import insert

    from callcenter.leads import import_list
    from callcenter.models import Campaign, SkillGroup

    rng = random.Random(3)
    path = Path(workdir) / f"import-{rows}.csv"
    with path.open("w", encoding="utf-8") as f:
        f.write("姓名,手机,城市,保单\n")
        for i in range(rows):
            number = f"1{rng.choice('3589')}{rng.randint(0, 9)}{rng.randint(0, 99_999_999):08d}"
            f.write(f"客户{i},{number},上海,P{i:08d}\n")
    url = f"sqlite:///{workdir}/import-{rows}.db"
    upgrade(url)
    engine = make_engine(url)
    with engine.begin() as c:
        c.execute(insert(SkillGroup.__table__).values(id=1, name="g", description=""))  # type: ignore[attr-defined]
        c.execute(insert(Campaign.__table__).values(id=1, name="t", state="initializing", skill_group_id=1))  # type: ignore[attr-defined]
    started = time.perf_counter()
    result, peak_mb = peak_rss_added(
        lambda: import_list(engine, campaign_id=1, path=path, phone_column=None, region="CN")
    )
    elapsed = time.perf_counter() - started
    engine.dispose()
    assert result.total == rows
    return rows / elapsed, peak_mb


if __name__ == "__main__":
    rate, cpu = originate_rate(5)
    print(f"{rate:.0f} originates/s, CPU {100 * cpu:.0f} % of one core")
