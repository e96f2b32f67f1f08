import pytest
import torch


@pytest.fixture(autouse=True)
def one_thread():
    """Every test on one torch thread, restored afterwards (the CLI and benchmark runner set it too).

    Tiny models run faster on one thread, and the learned-margin tests were measured so.
    """
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
