"""The command line's side of distributed training: the torchrun command and the ranks' backend."""

import pytest

from amortized import launch
from amortized.errors import ConfigError


def test_the_torchrun_command_passes_the_device_to_the_ranks():
    command = launch.train_command("runs/a", 2, quiet=True, threads=None, device="cuda")
    assert command[-2:] == ["--device", "cuda"] and "--nproc-per-node=2" in command
    assert "--device" not in launch.train_command("runs/a", 2, quiet=True, threads=None)


def test_the_ranks_backend_follows_the_device_and_one_gpu_is_not_shared():
    assert launch.backend_for(None) is None  # torch's default: nccl if CUDA is available
    assert launch.backend_for("cpu") == "gloo" and launch.backend_for("cuda") == "nccl"
    for device in ("cuda:1", "mps"):
        with pytest.raises(ConfigError, match=f"--device {device} with several processes"):
            launch.backend_for(device)
