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


def test_reserved_slot_is_never_sampled():
    buf = ThreadSafeBuffer(4, 2)
    for k in range(4):
        buf.add(*row(k, 2))
    buf._writing = 2  # pretend the writer is inside slot 2 (holding k=2)
    batch = buf.sample(500, np.random.default_rng(0))
    assert 2.0 not in batch.rewards.tolist()
    assert set(batch.rewards.tolist()) == {0.0, 1.0, 3.0}


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
