"""The web app's queue, cost model and output names (``fadm_lightning.inference.jobs``), without
a model or a server."""

from __future__ import annotations

import threading
import time

import pytest

from fadm_lightning.inference.jobs import Busy, CostModel, JobQueue, safe_stem
from fadm_lightning.sampler import denoiser_calls


def test_the_queue_runs_one_job_first_come_first_served_and_answers_busy_beyond_its_length():
    queue = JobQueue(max_waiting=2)
    order: list[int] = []
    release = threading.Event()
    running = threading.Event()

    def job(i: int) -> None:
        with queue.turn(10.0):
            order.append(i)
            if i == 0:
                running.set()
                release.wait(10)

    first = threading.Thread(target=job, args=(0,))
    first.start()
    assert running.wait(10)
    waiting = []
    for i in (1, 2):  # positions 2 and 3: they wait
        waiting.append(threading.Thread(target=job, args=(i,)))
        waiting[-1].start()
        deadline = time.monotonic() + 10
        while len(queue) != i + 1:
            assert time.monotonic() < deadline
            time.sleep(0.01)
    with pytest.raises(Busy, match=r"busy, position 4: 2 job\(s\) are waiting .*\(max_queue\)"):
        with queue.turn(10.0):
            pass
    # the estimated wait: what is left of the running job plus the two waiting ones
    assert 20.0 < queue.remaining() <= 30.0
    release.set()
    for thread in [first, *waiting]:
        thread.join(10)
    assert order == [0, 1, 2] and len(queue) == 0 and queue.remaining() == 0.0
    with queue.turn(1.0):  # free again
        assert len(queue) == 1


def test_a_failing_job_leaves_the_line():
    queue = JobQueue(max_waiting=0)
    with pytest.raises(RuntimeError):
        with queue.turn(1.0):
            raise RuntimeError("boom")
    with queue.turn(1.0):
        pass


def test_the_cost_model_learns_the_rest_of_a_frame():
    costs = CostModel(call_s=0.1)
    assert costs.seconds(10, 100) == pytest.approx(100.0)
    costs.observe(frames=10, calls=1, seconds=3.0)  # 0.3 s per frame, of which 0.1 the call
    assert costs.frame_s == pytest.approx(0.2) and costs.jobs_seen == 1
    costs.observe(frames=10, calls=1, seconds=5.0)  # 0.4 s of rest: the mean is 0.3
    assert costs.frame_s == pytest.approx(0.3)
    assert costs.seconds(2, 100) == pytest.approx(2 * (10 + 0.3))


def test_denoiser_calls_per_frame():
    assert denoiser_calls(100, 1.0) == 100 and denoiser_calls(1) == 1
    assert denoiser_calls(25, 0.5) == 12 and denoiser_calls(10, 0.01) == 1


@pytest.mark.parametrize(
    "name, stem",
    [
        ("clip.mp4", "clip"),
        ("../../etc/passwd", "passwd"),
        ("..hidden.mp4", "hidden"),
        ("my clip; rm -rf ~.mp4", "my_clip_rm_-rf"),
        ("visage été 🙂.png", "visage_été"),
        ("....mp4", "input"),
        ("x" * 300 + ".mp4", "x" * 60),
    ],
)
def test_output_names_stay_in_their_folder(name, stem):
    assert safe_stem(name) == stem
