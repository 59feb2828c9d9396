"""Shared pytest setup: one PyTorch thread per pytest-xdist worker."""

import os

import torch


def pytest_configure(config):
    # xdist starts one worker per core; PyTorch's default of one intra-op thread per core in each
    # worker oversubscribes the CPU, and spinning OpenMP threads then slow the suite down ~4x.
    if os.environ.get("PYTEST_XDIST_WORKER"):
        torch.set_num_threads(1)
