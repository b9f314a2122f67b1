import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

# tests import shared tiny-model helpers as plain modules (`from tiny import ...`).
sys.path.insert(0, str(Path(__file__).parent))

# Tiny models gain nothing from a second thread and lose a lot to contention; tests on the real pair ask for more.
torch.set_num_threads(int(os.environ.get("DYNATREE_TEST_THREADS", "1")))


@pytest.fixture
def all_threads():
    """Run a test on every core (the real model pair), then go back to the suite's setting."""
    before = torch.get_num_threads()
    torch.set_num_threads(os.cpu_count() or 1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def kernel():
    """The notebooks' Jupyter kernel (nbchecks.KERNEL), installed into this environment when missing."""
    from jupyter_client.kernelspec import find_kernel_specs

    from nbchecks import KERNEL

    if KERNEL not in find_kernel_specs():
        subprocess.run([sys.executable, "-m", "ipykernel", "install", "--sys-prefix", "--name", KERNEL,
                        "--display-name", "Python (dynatree)"], check=True, capture_output=True)
    return KERNEL
