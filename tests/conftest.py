from __future__ import annotations

import os

import pytest

# Tests never write to a developer's mlflow.db, and stay on one thread.
os.environ.setdefault("MEDSSL_TRACKING", "off")
os.environ.setdefault("OMP_NUM_THREADS", "1")


@pytest.fixture(autouse=True)
def _one_thread():
    import torch

    torch.set_num_threads(1)
    yield
