import threading
import time

import pytest

from agent_async_train.learner_thread import BackgroundLearner
from agent_async_train.schedule import UpdateSchedule, epsilon


class FakeTrainer:
    """Counts rounds; optionally fails at a given round or sleeps to emulate a slow learner."""

    def __init__(self, fail_at=None, delay=0.0):
        self.agents = []
        self.calls = 0
        self.fail_at = fail_at
        self.delay = delay
        self.closed = False
        self.threads = set()

    def round(self):
        self.threads.add(threading.current_thread().name)
        self.calls += 1
        if self.calls == self.fail_at:
            raise RuntimeError(f"boom in round {self.calls}")
        time.sleep(self.delay)
        return [0.5]

    def close(self):
        self.closed = True


@pytest.fixture(autouse=True)
def _no_snapshots(monkeypatch):
    monkeypatch.setattr(
        "agent_async_train.learner_thread.make_snapshot",
        lambda agents, v: type("S", (), {"version": v})(),
    )


def test_schedule_credits_and_epsilon():
    s = UpdateSchedule(replay_ratio=0.5, train_interval=4, learning_starts=10)
    assert [s.allowed(x) for x in (0, 10, 12, 13, 15, 16, 30)] == [0, 0, 1, 1, 1, 3, 9]
    assert s.slack == 2
    assert UpdateSchedule(0.1, 1, 0).allowed(30) == 3  # no 2.9999 rounding loss
    assert epsilon(0, 1.0, 0.1, 10) == 1.0 and epsilon(5, 1.0, 0.1, 10) == pytest.approx(0.55)
    assert epsilon(50, 1.0, 0.1, 10) == 0.1


def test_learner_trains_exactly_the_allowed_rounds_and_joins():
    sched = UpdateSchedule(0.5, 2, 0)
    trainer = FakeTrainer(delay=0.001)
    learner = BackgroundLearner(trainer, sched).start()
    for step in range(1, 201):
        learner.publish_steps(step)
        learner.wait_for_capacity()
        # bounded replay ratio: never ahead of the schedule, never more than `slack` behind
        assert sched.allowed(step) - sched.slack <= learner.rounds <= sched.allowed(step)
    learner.stop()
    assert trainer.calls == learner.rounds == sched.allowed(200) == 100
    assert not learner.alive and trainer.closed
    assert trainer.threads == {"background-learner"}
    assert learner.snapshot.version == 100


def test_learner_sleeps_without_work_and_wakes_on_notify():
    learner = BackgroundLearner(FakeTrainer(), UpdateSchedule(1.0, 1, 0)).start()
    time.sleep(0.2)
    assert learner.rounds == 0 and learner.alive
    learner.publish_steps(3)
    deadline = time.monotonic() + 5
    while learner.rounds < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert learner.rounds == 3
    learner.stop()
    assert not learner.alive


def test_stop_without_drain_abandons_due_rounds():
    trainer = FakeTrainer(delay=0.05)
    learner = BackgroundLearner(trainer, UpdateSchedule(1.0, 1, 0)).start()
    learner.publish_steps(1000)
    time.sleep(0.02)
    learner.stop(drain=False)
    assert not learner.alive and learner.rounds < 50  # of 1000 due


def test_learner_exception_is_reraised_in_main_thread():
    learner = BackgroundLearner(FakeTrainer(fail_at=3), UpdateSchedule(1.0, 1, 0)).start()
    with pytest.raises(RuntimeError, match="boom in round 3") as info:
        for step in range(1, 1000):
            learner.publish_steps(step)
            learner.wait_for_capacity()  # wakes up when the learner dies instead of hanging
    assert "background learner thread" in "".join(info.value.__notes__)
    assert not learner.alive
    learner.stop()  # idempotent after the failure


def test_exception_surfaces_on_stop_too():
    learner = BackgroundLearner(FakeTrainer(fail_at=1), UpdateSchedule(1.0, 1, 0)).start()
    learner.publish_steps(1)
    with pytest.raises(RuntimeError, match="boom"):
        learner.stop()
    assert not learner.alive


def test_collector_blocks_without_busy_wait_while_learner_is_slow():
    trainer = FakeTrainer(delay=0.1)
    learner = BackgroundLearner(trainer, UpdateSchedule(1.0, 1, 0)).start()
    learner.publish_steps(5)  # 5 rounds due, slack 1: collector must wait for ~4 rounds
    cpu0, t0 = time.process_time(), time.perf_counter()
    waited = learner.wait_for_capacity()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - t0
    assert waited > 0.25 and wall > 0.25
    assert cpu < 0.5 * wall  # sleeping on a condition, not spinning
    learner.stop()
    assert trainer.calls == 5


def test_paused_learner_never_shows_a_round_without_its_count():
    """A checkpoint (``paused()``) must see ``rounds`` equal to the rounds actually trained."""
    trainer = FakeTrainer(delay=0.05)
    learner = BackgroundLearner(trainer, UpdateSchedule(1.0, 1, 0)).start()
    learner.publish_steps(1)
    time.sleep(0.01)  # the learner is inside its round
    with learner._cond:  # keep the learner from taking the condition after its round
        time.sleep(0.2)  # the round has finished by now
        paused = learner.train_lock.acquire(timeout=0.2)
        seen = (learner.rounds, trainer.calls)
        if paused:
            learner.train_lock.release()
    if paused:  # the learner let go of train_lock before counting the round
        assert seen[0] == seen[1], f"checkpoint would save {seen[0]} rounds after {seen[1]}"
    with learner.paused():
        assert learner.rounds == trainer.calls == 1
    learner.stop()
