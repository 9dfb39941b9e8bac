import threading

import numpy as np
import pytest

from agent_async_train.buffers import ReplayBuffer, ThreadSafeBuffer


def row(k: int, dim: int):
    """A transition whose every field encodes k, so a torn row is detectable."""
    return (
        np.full(dim, k, np.float32),
        k % 5,
        float(k),
        np.full(dim, k + 1, np.float32),
        k % 2 == 0,
        k % 3 == 0,
    )


@pytest.mark.parametrize("cls", [ReplayBuffer, ThreadSafeBuffer])
def test_ring_wraps_and_keeps_the_newest_rows(cls):
    buf = cls(5, 3)
    for k in range(12):
        buf.add(*row(k, 3))
    assert len(buf) == 5
    batch = buf.sample(200, np.random.default_rng(0))
    assert set(batch.rewards.tolist()) == {7.0, 8.0, 9.0, 10.0, 11.0}
    np.testing.assert_array_equal(batch.next_obs[:, 0], batch.rewards + 1)
    np.testing.assert_array_equal(batch.terminated, batch.rewards % 2 == 0)
    np.testing.assert_array_equal(batch.truncated, batch.rewards % 3 == 0)
    np.testing.assert_array_equal(batch.actions, batch.rewards.astype(int) % 5)


def test_sample_is_a_copy_and_state_roundtrips():
    buf = ThreadSafeBuffer(4, 2)
    for k in range(6):
        buf.add(*row(k, 2))
    batch = buf.sample(8, np.random.default_rng(1))
    batch.obs[:] = -1
    assert (buf.sample(50, np.random.default_rng(1)).obs >= 0).all()
    other = ThreadSafeBuffer(4, 2)
    other.load_state_dict(buf.state_dict())
    a, b = buf.sample(20, np.random.default_rng(3)), other.sample(20, np.random.default_rng(3))
    np.testing.assert_array_equal(a.obs, b.obs)
    with pytest.raises(ValueError, match="capacity"):
        ThreadSafeBuffer(8, 2).load_state_dict(buf.state_dict())


def test_thread_safe_and_plain_sample_the_same_rows():
    plain, safe = ReplayBuffer(7, 2), ThreadSafeBuffer(7, 2)
    for k in range(10):
        plain.add(*row(k, 2))
        safe.add(*row(k, 2))
    np.testing.assert_array_equal(
        plain.sample(30, np.random.default_rng(5)).rewards,
        safe.sample(30, np.random.default_rng(5)).rewards,
    )


def test_empty_buffer_refuses_to_sample():
    with pytest.raises(ValueError, match="empty"):
        ThreadSafeBuffer(4, 2).sample(1, np.random.default_rng(0))


def test_stress_concurrent_writer_and_samplers_never_see_torn_rows():
    """One writer wraps a small ring thousands of times while two samplers check every row."""
    dim, n_rows = 512, 20000  # wide rows make a torn (half-written) row likely if unguarded
    buf = ThreadSafeBuffer(16, dim)
    buf.add(*row(0, dim))
    stop = threading.Event()
    errors: list[str] = []
    sampled = [0, 0]

    def writer():
        for k in range(1, n_rows):
            buf.add(*row(k, dim))
        stop.set()

    def sampler(slot: int):
        rng = np.random.default_rng(slot)
        while not stop.is_set():
            b = buf.sample(8, rng)
            k = b.rewards
            ok = (
                (b.obs == k[:, None]).all()
                and (b.next_obs == k[:, None] + 1).all()
                and (b.actions == k.astype(int) % 5).all()
                and (b.terminated == (k % 2 == 0)).all()
                and (b.truncated == (k % 3 == 0)).all()
            )
            if not ok:
                errors.append(f"torn row among {k.tolist()}")
                return
            sampled[slot] += len(k)

    threads = [threading.Thread(target=writer)] + [
        threading.Thread(target=sampler, args=(i,)) for i in range(2)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert min(sampled) > 0 and len(buf) == 16
    final = buf.sample(64, np.random.default_rng(9)).rewards
    assert final.min() >= n_rows - 16  # only the newest rows remain


@pytest.mark.parametrize("writers", [2, 4, 8])
def test_stress_many_writers_and_readers_find_zero_torn_or_unwritten_rows(writers):
    """Several writers on ONE buffer (parallel collection into one agent's memory) and three
    readers: every sampled row must be complete and must have been written (k >= 1; a
    never-written slot reads as k = 0). The old reserve-outside-the-lock buffer tore rows here."""
    dim, per_writer = 256, 3000
    buf = ThreadSafeBuffer(32, dim)
    stop = threading.Event()
    errors: list[str] = []
    checked = [0, 0, 0]
    start = threading.Barrier(writers + 3)

    def writer(w: int):
        start.wait()
        for j in range(per_writer):
            buf.add(*row(1 + w + writers * j, dim))  # distinct k >= 1 per writer

    def reader(slot: int):
        rng = np.random.default_rng(slot)
        start.wait()
        while not stop.is_set():
            if len(buf) == 0:
                continue
            b = buf.sample(16, rng)
            k = b.rewards
            ok = (
                (k >= 1).all()
                and (b.obs == k[:, None]).all()
                and (b.next_obs == k[:, None] + 1).all()
                and (b.actions == k.astype(int) % 5).all()
                and (b.terminated == (k % 2 == 0)).all()
                and (b.truncated == (k % 3 == 0)).all()
            )
            if not ok:
                errors.append(f"torn or unwritten row among {k.tolist()}")
                return
            checked[slot] += len(k)

    ws = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    rs = [threading.Thread(target=reader, args=(i,)) for i in range(3)]
    for t in ws + rs:
        t.start()
    for t in ws:
        t.join(timeout=120)
    stop.set()
    for t in rs:
        t.join(timeout=120)
    assert not errors, errors[0]
    assert min(checked) > 0 and len(buf) == 32
    # after all writers finished, the ring holds 32 distinct complete rows
    final = buf.sample(2000, np.random.default_rng(9)).rewards
    assert len(set(final.tolist())) == 32
