"""Shared pytest setup: one PyTorch thread per pytest-xdist worker."""

import os

import pytest
import torch


def pytest_configure(config):
    # xdist starts one worker per core; PyTorch's default of one intra-op thread per core in each
    # worker oversubscribes the CPU, and spinning OpenMP threads then slow the suite down ~4x.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)


@pytest.fixture
def fresh_plans():
    """Launch plans cleared before and after the test. Plans are memoized by geometry, not by the
    module globals that shape them (CPU_TILE_ELEMENTS, PHASE_LIMIT): a test that changes one must
    neither take a plan made before nor leave its own for a later test of the same geometry."""
    from kernels import max_pool as mp

    def clear():
        mp._forward_plan.cache_clear()
        mp._backward_plan.cache_clear()
        mp._CALLS.clear()

    clear()
    yield
    clear()
