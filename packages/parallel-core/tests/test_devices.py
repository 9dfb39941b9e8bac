import pytest

from parallel_core import devices
from parallel_core.devices import (
    DeviceError,
    assignment_counts,
    device_for_local_rank,
    format_assignment,
    map_to_devices,
    parse_device,
    validate_devices,
)


@pytest.mark.parametrize(
    "spec, canonical",
    [("cpu", "cpu"), ("CPU", "cpu"), ("cuda", "cuda:0"), ("cuda:3", "cuda:3"), (" mps ", "mps"), ("cpu:0", "cpu")],
)
def test_parse_device(spec, canonical):
    assert parse_device(spec) == canonical


@pytest.mark.parametrize("spec", ["gpu", "cuda:", "cuda:x", "tpu:0", "", "cpu:1"])
def test_parse_device_rejects_bad_specs(spec):
    with pytest.raises(DeviceError, match="device"):
        parse_device(spec)


def fake_cuda(monkeypatch, count):
    """Pretend torch is installed and sees ``count`` CUDA devices."""
    monkeypatch.setattr(devices, "_torch", lambda: object())
    monkeypatch.setattr(devices, "cuda_device_count", lambda: count)


def test_validate_names_visible_devices(monkeypatch):
    fake_cuda(monkeypatch, 1)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)
    with pytest.raises(DeviceError) as info:
        validate_devices(["cuda:0", "cuda:1"])
    assert str(info.value) == "requested cuda:1 but only 1 CUDA device is visible: cuda:0"


def test_validate_mentions_cuda_visible_devices(monkeypatch):
    fake_cuda(monkeypatch, 2)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(DeviceError, match=r"only 2 CUDA devices are visible: cuda:0, cuda:1 \(CUDA_VISIBLE_DEVICES='0,1'"):
        validate_devices(["cuda:2"])


def test_validate_without_any_gpu(monkeypatch):
    fake_cuda(monkeypatch, 0)
    with pytest.raises(DeviceError, match="no CUDA device is visible.*--devices cpu"):
        validate_devices(["cuda"])


def test_validate_accepts_what_exists(monkeypatch):
    fake_cuda(monkeypatch, 2)
    assert validate_devices(["cuda", "cuda:1", "cpu", "cpu"]) == ["cuda:0", "cuda:1", "cpu", "cpu"]


def test_validate_empty_list():
    with pytest.raises(DeviceError, match="no device given"):
        validate_devices([])


def test_cpu_works_without_torch(monkeypatch):
    real_find_spec = devices.importlib.util.find_spec
    monkeypatch.setattr(
        devices.importlib.util, "find_spec", lambda name: None if name == "torch" else real_find_spec(name)
    )
    assert validate_devices(["cpu", "cpu"]) == ["cpu", "cpu"]
    assert devices.visible_devices() == ["cpu"]
    assert devices.default_device() == "cpu"
    with pytest.raises(DeviceError, match="torch is not installed"):
        validate_devices(["cuda:0"])


def test_round_robin_and_balanced_mapping():
    assert map_to_devices(5, ["cuda:0", "cuda:1"]) == ["cuda:0", "cuda:1", "cuda:0", "cuda:1", "cuda:0"]
    assert map_to_devices(5, ["cuda:0", "cuda:1"], "balanced") == ["cuda:0"] * 3 + ["cuda:1"] * 2
    assert map_to_devices(3, ["cpu", "cpu"], "balanced") == ["cpu"] * 3
    with pytest.raises(ValueError, match="strategy"):
        map_to_devices(2, ["cpu"], "random")
    with pytest.raises(DeviceError):
        map_to_devices(2, [])


def test_counts_and_format():
    mapping = map_to_devices(6, ["cuda:1", "cuda:0", "cpu"])
    assert assignment_counts(mapping) == {"cuda:1": 2, "cuda:0": 2, "cpu": 2}
    assert format_assignment(["cpu", "cuda:0", "cpu"]) == "cpu: 2, cuda:0: 1"


def test_local_rank_to_gpu(monkeypatch):
    assert [device_for_local_rank(r, ["cuda:0", "cuda:1"]) for r in range(4)] == [
        "cuda:0",
        "cuda:1",
        "cuda:0",
        "cuda:1",
    ]
    fake_cuda(monkeypatch, 0)
    assert device_for_local_rank(3) == "cpu"
    fake_cuda(monkeypatch, 4)
    assert device_for_local_rank(6) == "cuda:2"


@pytest.mark.cuda
def test_real_cuda_devices_validate():
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    count = torch.cuda.device_count()
    assert validate_devices([f"cuda:{i}" for i in range(count)]) == [f"cuda:{i}" for i in range(count)]
    with pytest.raises(DeviceError, match=f"only {count} CUDA"):
        validate_devices([f"cuda:{count}"])
