"""Shared fixtures.

Tests run with one intra-op torch thread: the problems are small, one thread is several
times faster than two on a small shared CPU, and the same thread count everywhere keeps
float results comparable bit for bit (the resume tests compare against CLI subprocesses,
which the tests also start with one thread).
"""

import pytest
import torch


@pytest.fixture(scope="session", autouse=True)
def one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture(scope="module")
def lm():
    """The embedded default model: (model, tokenizer, info)."""
    from abstopk.lm import load_model

    return load_model("smollm2-135m")
