"""inference/stages.py: the clock of the speed benchmark's breakdown per stage."""

from __future__ import annotations

import time

import pytest

from fadm_lightning.inference.stages import STAGES, StageClock


def test_the_clock_charges_each_stage_and_the_decoder():
    clock = StageClock()

    def slow_items():
        for i in range(3):
            time.sleep(0.01)  # "decoding"
            yield i

    seen = []
    for item in clock.iterate("decode", slow_items()):
        with clock.stage("denoiser"):
            time.sleep(0.02)
        seen.append(item)
    began = time.perf_counter()
    clock.since("setup", began - 0.5)
    assert seen == [0, 1, 2]
    per_frame = clock.per_frame(3)
    assert list(per_frame) == ["setup", "decode", "denoiser"]  # in STAGES order
    assert per_frame["decode"] == pytest.approx(0.01, abs=0.008)
    assert per_frame["denoiser"] == pytest.approx(0.02, abs=0.008)
    assert per_frame["setup"] >= 0.5 / 3
    assert set(per_frame) <= set(STAGES)


def test_a_disabled_clock_records_nothing_and_passes_items_through():
    clock = StageClock(enabled=False)
    assert list(clock.iterate("decode", iter(range(4)))) == [0, 1, 2, 3]
    with clock.stage("denoiser"):
        pass
    clock.since("setup", 0.0)
    assert clock.per_frame(4) == {}
