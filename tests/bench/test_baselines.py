"""The benchmarks' baselines (bench/baselines.py) keep the cap every pacer keeps."""

from __future__ import annotations

from hypothesis import given, settings

from bench.baselines import AdaptAveragePacer
from callcenter.engine.pacing import PacingView
from tests.dialer.test_pacing import views


@settings(max_examples=200, deadline=None)
@given(view=views)
def test_adapt_average_baseline_never_passes_max_concurrency(view: PacingView) -> None:
    n = AdaptAveragePacer().place(view)
    assert n >= 0
    assert view.active + n <= max(view.active, view.max_concurrency)
