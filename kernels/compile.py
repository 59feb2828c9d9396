"""Compile a kernel launch for a CUDA architecture ahead of time, on a machine without a GPU.

``triton.compile`` turns a kernel into PTX and cubin for any target without touching a driver.
What it needs is the signature the runtime would derive from the launch's arguments (types, the
ints specialized to constants, the alignment hints): this module derives it from a ``LaunchSpec``
the same way ``JITFunction.run`` does, so what compiles here is what a GPU would compile.
"""

from __future__ import annotations

import inspect

import triton
from triton._C.libtriton import native_specialize_impl
from triton.backends.compiler import GPUTarget
from triton.compiler import ASTSource, make_backend

from kernels.max_pool import _KERNELS, LaunchSpec

__all__ = ["compile_launch"]


def compile_launch(spec: LaunchSpec, capability: int):
    """Compile ``spec`` for ``sm_<capability>``; returns Triton's CompiledKernel (``.asm`` has ptx/cubin)."""
    jit_fn = _KERNELS[spec.kernel][0]
    target = GPUTarget("cuda", capability, 32)
    backend = make_backend(target)
    names = list(inspect.signature(jit_fn.fn).parameters)
    runtime_names = names[: len(spec.args)]
    signature, constexprs, attrs = {}, {}, {}
    for i, (name, arg) in enumerate(zip(runtime_names, spec.args)):
        ty, attr = native_specialize_impl(type(backend), arg, False, True, True)
        signature[name] = ty
        if ty == "constexpr":  # ints equal to 1 become constants, as at run time
            constexprs[name] = attr if attr is not None else arg
        elif isinstance(attr, str):
            attrs[(i,)] = backend.parse_attr(attr)
    for name, value in spec.constexprs.items():
        signature[name] = "constexpr"
        constexprs[name] = value
    missing = set(names) - set(signature)
    if missing:
        raise ValueError(f"launch spec for {spec.kernel} lacks arguments {sorted(missing)}")
    source = ASTSource(jit_fn, {n: signature[n] for n in names}, constexprs, attrs)
    options = backend.parse_options({"num_warps": spec.num_warps})
    return triton.compile(source, target=target, options=options.__dict__)
