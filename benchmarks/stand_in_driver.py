"""A stand-in for Triton's CUDA driver, so that a machine without a GPU runs Triton's launch path.

Everything of a CUDA launch but the driver calls runs for real: ``JITFunction.run`` binds and
specializes the arguments and looks its cache up, compiles for sm_90 on a miss (PTX and cubin,
as kernels/compile.py does), and builds the launcher. The launcher records its arguments instead
of launching, and tensors may live on the CPU (only their addresses and dtypes are read).

Used by bench_host.py (the host time of Triton's dispatch) and by the tests that hold
kernels.max_pool's compiled-kernel shortcut to what Triton's own dispatch does. Also here:
``cuda_launch_specs``, which has the launchers build CUDA's launches from CPU tensors
(bench_host.py, inspect_kernels.py).
"""

from __future__ import annotations

import contextlib
from collections import defaultdict

import torch
from triton.backends.compiler import GPUTarget
from triton.runtime.driver import driver

import kernels.max_pool as mp

CAPABILITY = 90


class _Utils:
    """The module loader: nothing is loaded (1 and 2 stand for the module and function handles)."""

    def load_binary(self, name, kernel, shared, device):
        return 1, 2, 0, 0, 1024  # module, function, registers, spills, max threads per block

    def get_device_properties(self, device):
        return {"max_shared_mem": 232448}  # sm_90's

    def unload_module(self, module):
        pass


class StandInDriver:
    """Device 0, stream 0, an sm_90 target. ``launched`` counts the launcher's calls; with
    ``record``, ``launches`` holds each call's arguments (tensors too: they stay alive)."""

    def __init__(self, record: bool = True):
        self.utils = _Utils()
        self.launches: list[tuple] = []
        self.launched = 0
        driver = self

        class Launcher:
            def __init__(self, src, metadata):
                pass

            def __call__(self, *args):
                driver.launched += 1
                if record:
                    driver.launches.append(args)

        self.launcher_cls = Launcher

    def get_current_device(self):
        return 0

    def get_current_stream(self, device):
        return 0

    def get_current_target(self):
        return GPUTarget("cuda", CAPABILITY, 32)

    def get_active_torch_device(self):
        return torch.device("cpu")

    def is_active(self):
        return True


@contextlib.contextmanager
def stand_in_cuda(record: bool = True):
    """Run Triton's CUDA launch path without a GPU; yields the driver (see StandInDriver). On exit the real driver,
    every jit kernel's per-device caches and kernels.max_pool's compiled-kernel shortcuts are as
    they were: nothing compiled against the stand-in outlives it (on a GPU machine it would
    otherwise shadow device 0's real kernels)."""
    stand_in = StandInDriver(record)
    # Triton 3.4+ keeps the active driver in ``_active`` (None until first used), 3.3 in ``active``.
    attribute = "_active" if "_active" in vars(driver) else "active"
    previous_driver = getattr(driver, attribute)
    jit_fns = [jit_fn for jit_fn, _ in mp._KERNELS.values()]
    previous_caches = [jit_fn.device_caches for jit_fn in jit_fns]
    previous_compiled = dict(mp._COMPILED)
    driver.set_active(stand_in)
    for jit_fn in jit_fns:
        jit_fn.device_caches = defaultdict(jit_fn.create_binder)
    mp._COMPILED.clear()
    try:
        yield stand_in
    finally:
        for jit_fn in jit_fns:  # the stand-in's kernels hold no module: none to unload when freed
            for kernel_cache, *_ in jit_fn.device_caches.values():
                for kernel in kernel_cache.values():
                    kernel.module = None
        setattr(driver, attribute, previous_driver)
        for jit_fn, caches in zip(jit_fns, previous_caches):
            jit_fn.device_caches = caches
        mp._COMPILED.clear()
        mp._COMPILED.update(previous_compiled)


@contextlib.contextmanager
def cuda_launch_specs():
    """Within: kernels.max_pool's launchers build the LaunchSpec a CUDA tensor would get whatever
    their tensors' device (layouts, output strides and tiles are theirs; only the device type the
    spec builders receive is "cuda"). The launchers pass it last and positionally. The eager
    calls' plans (which hold their launches) start empty within and are as they were after, so
    that neither side's plans serve the other's calls."""
    names = ("forward_launch_spec", "backward_launch_spec")
    builders = {name: getattr(mp, name) for name in names}
    plans = dict(mp._CALLS)

    def as_cuda(builder):
        return lambda *args: builder(*args[:-1], "cuda")

    for name, builder in builders.items():
        setattr(mp, name, as_cuda(builder))
    mp._CALLS.clear()
    try:
        yield
    finally:
        for name, builder in builders.items():
            setattr(mp, name, builder)
        mp._CALLS.clear()
        mp._CALLS.update(plans)
