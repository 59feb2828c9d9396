"""Report registers, spills, shared memory and access widths of every CUDA kernel variant, compiled without a GPU."""

from __future__ import annotations

import argparse
import ast
import contextlib
import csv
import inspect
import re
import shutil
import subprocess
import sys
import tempfile
import textwrap
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import triton

# The repository root, so that a bare checkout runs it too (a GPU machine without the project).
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import kernels  # noqa: E402
from cases import CASES, DTYPES, LAYOUTS, PoolCase, new_input, parse_list  # noqa: E402
from kernels import interpreter  # noqa: E402
from kernels import max_pool as mp  # noqa: E402
from kernels.compile import compile_launch  # noqa: E402
from stand_in_driver import cuda_launch_specs  # noqa: E402

# Forward variants by what they write besides values (code: the saved tap, for a backward;
# idx: PyTorch's int64 indices, for return_indices), then the backward.
VARIANTS = ("fwd", "fwd+code", "fwd+idx", "fwd+code+idx", "bwd")
CAPABILITIES = (80, 90)
DEFAULT_CASES = ("seq1d", "resnet_stem", "video3d")  # one real layer per dimensionality
OURS = {1: kernels.max_pool1d, 2: kernels.max_pool2d, 3: kernels.max_pool3d}
VECTOR_BITS = 128  # the widest global access (LDG.E.128 / STG.E.128)
# Per-SM limits of sm_80 and sm_90 for the occupancy estimate: registers are allocated per warp in
# blocks of 256; at most 64 resident warps and 32 blocks; shared memory usable by blocks.
SM_REGISTERS, SM_MAX_WARPS, SM_MAX_BLOCKS = 65536, 64, 32
SM_SHARED = {80: 163 * 1024, 90: 227 * 1024}


# --------------------------------------------------------------------------------------------
# The launches a CUDA call would make, built from CPU tensors
# --------------------------------------------------------------------------------------------


@contextlib.contextmanager
def capturing_cuda_launches():
    """Within: calls to the public API on CPU tensors record the LaunchSpec CUDA tensors would get.

    The launchers run unchanged (stand_in_driver.cuda_launch_specs); the launch itself is
    skipped. So the specs are those of real calls, and memory is never touched (inputs may be
    torch.empty of any size).
    """
    specs = []
    launch = mp._launch
    mp._launch = lambda spec, device: specs.append(spec)
    try:
        with cuda_launch_specs():
            yield specs
    finally:
        mp._launch = launch


def cuda_launch_spec(case: PoolCase, dtype: torch.dtype, layout: str, variant: str) -> mp.LaunchSpec:
    """The LaunchSpec of ``variant`` for ``case`` on a CUDA tensor of ``dtype`` in ``layout``."""
    x = new_input(case.shape, dtype, layout, empty=True)
    pool = OURS[case.dims]
    with capturing_cuda_launches() as specs:
        if variant == "bwd":
            x.requires_grad_()
            y = pool(x, **case.pool_kwargs)
            torch.autograd.grad(y, x, torch.empty_like(y))
        else:
            x.requires_grad_("code" in variant)
            with torch.set_grad_enabled("code" in variant):
                pool(x, **case.pool_kwargs, return_indices="idx" in variant)
    return specs[-1]


# --------------------------------------------------------------------------------------------
# Which tensor each global load/store reads or writes: PTX line info against the kernel source
# --------------------------------------------------------------------------------------------
# Triton emits every tl.load/tl.store as one inline-asm block (a "mov" of each default value, then
# the ld.global), and LLVM numbers the lines of such a block from the call's line on: a v4 load
# with a default sits up to 3 lines below its call in the line info, on the call's column. So an
# access belongs to the call on its column at most 3 lines above it. The SASS line info has no
# columns, hence the PTX for attribution; the SASS is read too, for the widths that actually run.
ASM_LINE_DRIFT = 3


def access_sites(jit_fn) -> list[tuple[str, int, int, str]]:
    """(ld/st, file line, column, tensor) of every tl.load/tl.store call in the kernel source.

    The tensor is the pointer argument (without ``_ptr``) that the call's pointer expression
    derives from, followed back through the kernel's assignments (``ptrs = ptr_dh + ...``,
    ``ptr_dh = x_ptr + ...``).
    """
    lines, start = getattr(jit_fn, "raw_src", None), getattr(jit_fn, "starting_line_number", None)
    if lines is None or start is None:  # what Triton itself reads when it wraps the function
        lines, start = inspect.getsourcelines(jit_fn.fn)
    source = "".join(lines)
    indent = len(source) - len(source.lstrip(" "))
    function = ast.parse(textwrap.dedent(source)).body[0]
    pointers = {a.arg for a in function.args.args if a.arg.endswith("_ptr")}
    sources: dict[str, set[str]] = {}  # variable -> the names its assignments read
    for node in ast.walk(function):
        if isinstance(node, (ast.Assign, ast.AugAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            used = {n.id for n in ast.walk(node.value) if isinstance(n, ast.Name)}
            for target in targets:
                if isinstance(target, ast.Name):
                    sources.setdefault(target.id, set()).update(used)

    def roots(name: str, seen: set[str]) -> set[str]:
        if name in pointers:
            return {name}
        seen.add(name)
        return set().union(*(roots(n, seen) for n in sources.get(name, ()) if n not in seen))

    sites = []
    for node in ast.walk(function):
        if (
            isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
            and node.func.attr in ("load", "store") and node.args
        ):  # fmt: skip
            names = {n.id for n in ast.walk(node.args[0]) if isinstance(n, ast.Name)}
            found = set().union(*(roots(n, set()) for n in names))
            line = start + node.lineno - 1
            tensor = "+".join(sorted(p.removesuffix("_ptr") for p in found)) or f"line {line}"
            kind = "ld" if node.func.attr == "load" else "st"
            sites.append((kind, line, node.col_offset + indent + 1, tensor))
    return sites


PTX_FILE = re.compile(r'^\s*\.file\s+(\d+)\s+"([^"]+)"')
PTX_LOC = re.compile(r"^\s*\.loc\s+(\d+)\s+(\d+)\s+(\d+)")
PTX_ACCESS = re.compile(r"^\s*(?:@!?%p\d+\s+)?(ld|st)\.global((?:\.[A-Za-z0-9_:]+)+)")


def ptx_global_accesses(ptx: str) -> list[tuple[str, int, tuple[str, int, int] | None]]:
    """(ld/st, width in bits, (file, line, column) or None) of every global load/store in the PTX."""
    files = dict(m.groups() for m in map(PTX_FILE.match, ptx.splitlines()) if m)
    accesses, where = [], None
    for line in ptx.splitlines():
        loc = PTX_LOC.match(line)
        if loc:
            where = (files.get(loc.group(1), "?"), int(loc.group(2)), int(loc.group(3)))
            continue
        access = PTX_ACCESS.match(line)
        if access:
            suffixes = access.group(2).split(".")[1:]
            lanes = next((int(s[1:]) for s in suffixes if re.fullmatch(r"v\d", s)), 1)
            bits = next(int(s[1:]) for s in suffixes if re.fullmatch(r"[bsuf]\d+", s))
            accesses.append((access.group(1), lanes * bits, where))
    return accesses


def site_of(kind: str, where: tuple[str, int, int] | None, sites, kernel_file: str) -> tuple[int, str] | None:
    """(source line, tensor) of the tl.load/tl.store an access comes from; None when none matches."""
    if where is None or Path(where[0]).name != kernel_file:
        return None
    _, line, column = where
    matches = [(line - l, l, t) for k, l, c, t in sites if k == kind and c == column and 0 <= line - l <= ASM_LINE_DRIFT]
    return min(matches)[1:] if matches else None


def attribute(kind: str, where: tuple[str, int, int] | None, sites, kernel_file: str) -> str:
    """The tensor of the tl.load/tl.store an access comes from; "?" when none matches."""
    site = site_of(kind, where, sites, kernel_file)
    return site[1] if site else "?"


# --------------------------------------------------------------------------------------------
# Coalescing: the 32-byte sectors each warp-wide access touches, from the kernel's own addresses
# --------------------------------------------------------------------------------------------
# An access width says what one thread moves; the memory system sees the warp. A warp's load or
# store costs the L1 a pass per 128-byte line it touches and the L2/DRAM a transfer per 32-byte
# sector, whatever share of those bytes the warp uses. So the same 16-bit gather costs 8x more
# when the layout gives each thread 8 neighbouring columns (the 32 lanes of one access then sit 8
# windows apart) than when it gives each thread one column (the lanes read neighbouring windows).
# Emulated here without a GPU: Triton's interpreter runs one program of the launch on CPU tensors
# of the real shapes and strides, recording every tl.load/tl.store's byte offsets and mask; the
# compiled kernel's TTGIR gives each access's blocked layout (which warp, lane and register holds
# each tile element) and its PTX the vector width; a request is one warp, one vector of registers.

SECTOR_BYTES = 32
TTGIR_BLOCKED = re.compile(
    r"^#(blocked\d*) = #ttg\.blocked<\{sizePerThread = \[([\d, ]+)\], threadsPerWarp = \[([\d, ]+)\], "
    r"warpsPerCTA = \[([\d, ]+)\], order = \[([\d, ]+)\]"
)
TTGIR_LOC = re.compile(r'^#(loc\d*) = loc\((?:"([^"]+)":(\d+):\d+|"[^"]*"\(#(loc\d*)\))\)')
TTGIR_ACCESS = re.compile(r"\btt\.(load|store) .*, #(blocked\d*)> loc\(#(loc\d*)\)")


class Blocked(NamedTuple):
    """A TTGIR blocked layout: per dimension, elements per thread, threads per warp, warps."""

    size_per_thread: tuple[int, ...]
    threads_per_warp: tuple[int, ...]
    warps_per_cta: tuple[int, ...]
    order: tuple[int, ...]  # dimensions, fastest first

    def place(self, shape: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(warp, lane, register) arrays of ``shape`` for the element at each index of a tile.

        Along each dimension, a coordinate splits into its register within a thread's run of
        ``size_per_thread`` elements, its lane and its warp, and repeats past the warps' extent
        (more registers). Lanes and warps are numbered fastest dimension first.
        """
        warp = lane = register = 0
        for d in reversed(self.order):  # slowest first, so that the fastest ends up least significant
            s, t, w = self.size_per_thread[d], self.threads_per_warp[d], self.warps_per_cta[d]
            x = np.arange(shape[d]).reshape([-1 if i == d else 1 for i in range(len(shape))])
            lane = lane * t + (x // s) % t
            warp = warp * w + (x // (s * t)) % w
            repeats = -(-shape[d] // (s * t * w))
            register = register * (s * repeats) + x % s + s * (x // (s * t * w))
        return tuple(np.broadcast_to(a, shape) for a in (warp, lane, register))


def memory_layouts(ttgir: str) -> dict[tuple[str, int], set[Blocked]]:
    """(ld/st, source line) -> the layouts of the tt.load/tt.store ops from that line."""
    blocked, locs = {}, {}
    for line in ttgir.splitlines():
        if match := TTGIR_BLOCKED.match(line):
            name, *fields = match.groups()
            blocked[name] = Blocked(*(tuple(int(v) for v in f.split(",")) for f in fields))
        elif match := TTGIR_LOC.match(line):
            name, _, source_line, inner = match.groups()
            locs[name] = int(source_line) if source_line else inner

    def source_line(loc):
        while isinstance(loc, str):
            loc = locs.get(loc)
        return loc
    layouts: dict[tuple[str, int], set[Blocked]] = {}
    for match in TTGIR_ACCESS.finditer(ttgir):
        kind, layout, loc = match.groups()
        key = ("ld" if kind == "load" else "st", source_line(loc))
        layouts.setdefault(key, set()).add(blocked[layout])
    return layouts


class TracedAccess(NamedTuple):
    kind: str  # ld/st
    line: int  # of the tl.load/tl.store call in the kernel source
    itemsize: int
    offsets: np.ndarray  # bytes from the start of the tensor's storage, one per tile element
    mask: np.ndarray  # which lanes access memory


def middle_program(spec: mp.LaunchSpec) -> int:
    """A program in the middle of the tile space (rows and columns), away from its edges: every
    kernel splits its program id into a row and a column tile, columns fastest."""
    c = spec.constexprs
    rows, cols = spec.args[-2:]
    tiles_m, tiles_n = -(-rows // c["BLOCK_M"]), -(-cols // c["BLOCK_N"])
    return (tiles_m // 2) * tiles_n + tiles_n // 2


def traced_accesses(spec: mp.LaunchSpec, program: int) -> list[TracedAccess]:
    """Every global access of program ``program`` of ``spec`` (a CUDA launch, run here by Triton's
    interpreter on the spec's CPU tensors), in program order."""
    fn = mp._KERNELS[spec.kernel][1]
    name = fn.fn.__name__
    storages = sorted(
        (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        for t in spec.args if isinstance(t, torch.Tensor)
    )  # fmt: skip
    accesses = []

    def record(kind: str, ptrs, mask) -> None:
        frame = sys._getframe(2)
        while frame is not None and frame.f_code.co_name != name:
            frame = frame.f_back
        addresses = ptrs.data.astype(np.int64)
        live = np.broadcast_to(mask.data, addresses.shape)
        first = int(addresses[live].min()) if live.any() else 0
        base = max((b for b, _ in storages if b <= first), default=0)
        itemsize = ptrs.get_element_ty().primitive_bitwidth // 8
        accesses.append(TracedAccess(kind, frame.f_lineno if frame else -1, itemsize, addresses - base, live.copy()))

    builder = interpreter.interpreter_builder
    load, store = interpreter._FastMemory.load, interpreter._FastMemory.store

    def traced_load(self, ptrs, mask, *rest):
        record("ld", ptrs, mask)
        return load(self, ptrs, mask, *rest)

    def traced_store(self, ptrs, value, mask, *rest):
        record("st", ptrs, mask)
        return store(self, ptrs, value, mask, *rest)

    def program_id(axis):
        return interpreter.TensorHandle(np.array([program if axis == 0 else 0], dtype=np.int32), triton.language.int32)

    interpreter._FastMemory.load, interpreter._FastMemory.store = traced_load, traced_store
    builder.create_get_program_id = program_id
    try:
        interpreter.launch(fn, (1,), spec.args, spec.constexprs, replay=False)
    finally:
        interpreter._FastMemory.load, interpreter._FastMemory.store = load, store
        del builder.create_get_program_id
    return accesses


def sector_counts(access: TracedAccess, layout: Blocked, vector: int) -> tuple[int, int, int]:
    """(requests, sectors, bytes) of one access: a request is one warp's vector of ``vector``
    registers along the layout's fastest dimension; sectors are counted per request."""
    shape = access.offsets.shape
    if len(shape) != len(layout.order):
        raise ValueError(f"a {len(shape)}D access with a {len(layout.order)}D layout")
    warp, lane, register = layout.place(shape)
    vector = min(vector, layout.size_per_thread[layout.order[0]])  # a vector is one thread's run
    live = access.mask
    if not live.any():
        return 0, 0, 0
    request = (warp[live].astype(np.int64) << 32) | (register[live] // vector)
    offsets = access.offsets[live]
    # Lanes reading the same bytes (neighbouring inputs of one window, in a backward) share them.
    used = np.unique(np.stack([request, offsets]), axis=1)
    touched = np.unique(np.stack([used[0], used[1] // SECTOR_BYTES]), axis=1)
    return np.unique(request).size, touched.shape[1], used.shape[1] * access.itemsize


def coalescing(
    spec: mp.LaunchSpec, ttgir: str, widths, sites, site_widths=None,
) -> dict[tuple[str, str], tuple[int, int, int, int, int]]:  # fmt: skip
    """(ld/st, tensor) -> (requests, sectors, bytes, program_sectors, program_bytes) of one
    program in the middle of ``spec``'s tile space.

    The first three are summed per warp request. The last two count the distinct sectors the
    program touches and, of their bytes, those accessed: by the program itself for loads; for
    stores, by the program or by its neighbours in the tile space (which run at the same time), so
    that a sector shared at the edge of two tiles counts as written whole, as it reaches DRAM.
    ``site_widths``: (ld/st, source line) -> access widths in bits from the PTX, each call's own
    (a call compiled to several widths counts at the narrowest); for a call missing there,
    ``widths``: (ld/st, tensor) -> the narrowest width the tensor is accessed at."""
    layouts = memory_layouts(ttgir)
    tensors = {(kind, line): tensor for kind, line, _, tensor in sites}
    totals: dict[tuple[str, str], tuple[int, int, int]] = {}
    elements: dict[tuple[str, str], list[np.ndarray]] = {}  # byte offsets of the elements accessed
    itemsizes: dict[tuple[str, str], int] = {}
    middle = middle_program(spec)
    for access in traced_accesses(spec, middle):
        key = (access.kind, access.line)
        found = layouts.get(key, set())
        if len(found) != 1:
            raise RuntimeError(f"{len(found)} layouts in the TTGIR for the {access.kind} at line {access.line}")
        tensor = tensors.get(key, "?")
        bits = min((site_widths or {}).get(key) or widths.get((access.kind, tensor), {access.itemsize * 8}))
        counts = sector_counts(access, next(iter(found)), max(1, bits // 8 // access.itemsize))
        totals[access.kind, tensor] = tuple(a + b for a, b in zip(totals.get((access.kind, tensor), (0, 0, 0)), counts))
        elements.setdefault((access.kind, tensor), []).append(access.offsets[access.mask])
        itemsizes[access.kind, tensor] = access.itemsize
    neighbours: dict[tuple[str, str], list[np.ndarray]] = {}
    for program in (middle - 1, middle + 1):
        if 0 <= program < spec.grid[0]:
            for access in traced_accesses(spec, program):
                if access.kind == "st":
                    tensor = tensors.get((access.kind, access.line), "?")
                    neighbours.setdefault((access.kind, tensor), []).append(access.offsets[access.mask])
    result = {}
    for key, counts in totals.items():
        own = np.unique(np.concatenate(elements[key]))
        sectors = np.unique(own // SECTOR_BYTES)  # an element never straddles two sectors
        written = np.unique(np.concatenate([own, *neighbours.get(key, [])]))
        written = written[np.isin(written // SECTOR_BYTES, sectors)]
        result[key] = (*counts, sectors.size, written.size * itemsizes[key])
    return result


# --------------------------------------------------------------------------------------------
# CUDA binary tools: resources and SASS
# --------------------------------------------------------------------------------------------


def find_tool(name: str) -> str:
    """``name`` from Triton's bundled CUDA tools, else PATH, else /usr/local/cuda/bin."""
    bundled = Path(triton.__file__).parent / "backends" / "nvidia" / "bin" / name
    for candidate in (bundled, shutil.which(name), Path("/usr/local/cuda/bin") / name):
        if candidate and Path(candidate).is_file():
            return str(candidate)
    raise SystemExit(
        f"inspect_kernels: cannot find {name}: looked in {bundled.parent}, on PATH and in "
        "/usr/local/cuda/bin; install the CUDA toolkit or a Triton wheel that bundles it"
    )


RESOURCES = re.compile(r"REG:(\d+)\s+STACK:(\d+)\s+SHARED:(\d+)\s+LOCAL:(\d+)")
SASS_INSTRUCTION = re.compile(r"^\s*/\*[0-9a-f]+\*/\s+(?:@!?U?P[T0-9]+\s+)?([A-Z][A-Z0-9_]*(?:\.[A-Z0-9_]+)*)")
SASS_WIDTH = {"128": 128, "64": 64, "U8": 8, "S8": 8, "U16": 16, "S16": 16}


def resource_usage(cubin: Path, cuobjdump: str) -> dict[str, int]:
    """Registers, stack, static shared and local bytes per thread, from the cubin.

    ptxas puts register spills in the stack frame (``ptxas -v``: "N bytes stack frame, N bytes
    spill stores"); these kernels call nothing, so their stack is all spills.
    """
    text = _run([cuobjdump, "--dump-resource-usage", str(cubin)])
    match = RESOURCES.search(text)
    if match is None:
        raise RuntimeError(f"no resource usage in cuobjdump's output:\n{text}")
    return dict(zip(("regs", "stack", "static_shared", "local_bytes"), map(int, match.groups())))


def sass_memory_accesses(sass: str) -> list[tuple[str, int]]:
    """(opcode, width in bits) of every global (LDG/STG) and local (LDL/STL: spill) access.

    The width is the size suffix (.128, .64, .U16, ...), 32 bits without one; the other suffixes
    (.E, .LTC128B cache hints, .CONSTANT, ...) say nothing about width.
    """
    accesses = []
    for line in sass.splitlines():
        match = SASS_INSTRUCTION.match(line)
        if match:
            opcode, *suffixes = match.group(1).split(".")
            if opcode in ("LDG", "STG", "LDL", "STL"):
                accesses.append((opcode, next((SASS_WIDTH[s] for s in suffixes if s in SASS_WIDTH), 32)))
    return accesses


def _run(command: list[str]) -> str:
    result = subprocess.run(command, capture_output=True, text=True)
    if result.returncode:
        raise RuntimeError(f"{' '.join(command)} failed:\n{result.stderr}")
    return result.stdout


# --------------------------------------------------------------------------------------------
# Targets: no spills; 128-bit accesses along C where alignment allows; value stores written whole
# --------------------------------------------------------------------------------------------


def vector_expectations(spec: mp.LaunchSpec, names: list[str]) -> dict[str, str]:
    """Tensor -> why a 128-bit access is expected, or why not ("-" prefix), for the value tensors.

    Expected where the tile columns walk C, the unit-stride dimension of channels_last tensors,
    and where every other stride, in bytes, is a multiple of 16, so that groups of 16 bytes start
    aligned. Tiles along W give each thread one column instead (see the kernels): their reads of
    the input (the output gradient, in the backward) step by the stride and shift by each tap, so
    they are gathers, and 8 neighbouring columns a thread, what a 128-bit store of the output
    needs, would spread each warp's gather over 8x the cache sectors; their stores are held to
    writing whole the sectors they touch instead (see ``coalescing``). The index and code tensors
    are reported but not held to the target: they are not the values.
    """
    constexprs = spec.constexprs
    direct = {"forward": "out", "backward": "grad_in", "backward_phase": "grad_in"}.get(spec.kernel)
    expectations = {}
    for name, arg in zip(names, spec.args):
        if not (name.endswith("_ptr") and isinstance(arg, torch.Tensor) and arg.dtype.is_floating_point):
            continue
        tensor = name.removesuffix("_ptr")
        t = arg
        while t.dim() < 5:
            t = t.unsqueeze(2)
        unit_dim = 1 if constexprs["C_INNER"] else 4
        if not constexprs["C_INNER"]:
            expectations[tensor] = "-gather along W" if tensor != direct else "-one column a thread along W"
            continue
        if t.stride(unit_dim) != 1:
            expectations[tensor] = "-not unit stride"
            continue
        item = t.element_size()
        misaligned = [s for d, s in enumerate(t.stride()) if d != unit_dim and t.shape[d] > 1 and s * item % 16]
        if misaligned or t.data_ptr() % 16:
            expectations[tensor] = f"-stride {misaligned[0] if misaligned else '?'} x {item} B not a multiple of 16 B"
        elif constexprs["BLOCK_N"] * item < 16:
            expectations[tensor] = f"-tile of {constexprs['BLOCK_N']} columns narrower than 16 B"
        else:
            # Triton proves alignment only from integer arguments divisible by 16 (elements).
            hidden = [s for d, s in enumerate(t.stride()) if d != unit_dim and t.shape[d] > 1 and s % 16]
            expectations[tensor] = f"stride {hidden[0]} not divisible by 16 elements" if hidden else "aligned"
    return expectations


def occupancy(regs: int, shared: int, warps: int, capability: int) -> int:
    """Resident warps per SM allowed by registers and shared memory (of 64)."""
    per_warp = -(-regs * 32 // 256) * 256
    blocks = min(SM_MAX_BLOCKS, SM_REGISTERS // (per_warp * warps), SM_MAX_WARPS // warps)
    if shared:
        blocks = min(blocks, SM_SHARED[capability] // shared)
    return blocks * warps


# --------------------------------------------------------------------------------------------
# One variant
# --------------------------------------------------------------------------------------------


def inspect_variant(
    case_name: str, dtype_name: str, layout: str, variant: str, capability: int, int64: bool, cuobjdump: str,
) -> dict:  # fmt: skip
    """Compile one variant for ``sm_<capability>`` and measure it; returns a row of the report."""
    case = CASES[case_name]
    limit = mp.INT32_SPAN_LIMIT
    if int64:  # the launch a tensor beyond 2**30 elements gets (64-bit offsets, the heuristic's
        mp.INT32_SPAN_LIMIT = 0  # smaller tile for them), without allocating one
    try:
        spec = cuda_launch_spec(case, DTYPES[dtype_name], layout, variant)
    finally:
        mp.INT32_SPAN_LIMIT = limit
    assert spec.constexprs["INT64"] == int64
    jit_fn = mp._KERNELS[spec.kernel][0]
    compiled = compile_launch(spec, capability)
    with tempfile.TemporaryDirectory() as tmp:
        cubin = Path(tmp) / "kernel.cubin"
        cubin.write_bytes(compiled.asm["cubin"])
        resources = resource_usage(cubin, cuobjdump)
        sass = sass_memory_accesses(_run([cuobjdump, "-sass", str(cubin)]))
    sites = access_sites(jit_fn)
    kernel_file = Path(jit_fn.fn.__code__.co_filename).name
    widths: dict[tuple[str, str], set[int]] = {}  # (ld/st, tensor) -> widths in bits
    site_widths: dict[tuple[str, int], set[int]] = {}  # (ld/st, source line) -> widths in bits
    ptx = ptx_global_accesses(compiled.asm["ptx"])
    for kind, bits, where in ptx:
        site = site_of(kind, where, sites, kernel_file)
        widths.setdefault((kind, site[1] if site else "?"), set()).add(bits)
        if site:
            site_widths.setdefault((kind, site[0]), set()).add(bits)
    sectors = coalescing(spec, compiled.asm["ttgir"], widths, sites, site_widths)
    spill_instructions = sum(opcode in ("LDL", "STL") for opcode, _ in sass)
    shared = max(resources["static_shared"], compiled.metadata.shared)
    c = spec.constexprs
    row = dict(
        sm=capability, case=case_name, dims=case.dims, dtype=dtype_name, layout=layout, variant=variant,
        kernel=spec.kernel, along="C" if c["C_INNER"] else "W", tile=f"{c['BLOCK_M']}x{c['BLOCK_N']}",
        warps=spec.num_warps, int64=c["INT64"], regs=resources["regs"],
        spill_bytes=resources["stack"] + resources["local_bytes"],
        spill_instructions=spill_instructions, shared_bytes=shared,
        warps_per_sm=occupancy(resources["regs"], shared, spec.num_warps, capability),
        loads=_widths_text(widths, "ld"), stores=_widths_text(widths, "st"),
        sass_loads=_histogram(w for opcode, w in sass if opcode == "LDG"),
        sass_stores=_histogram(w for opcode, w in sass if opcode == "STG"),
        load_sectors=_sectors_text(sectors, "ld"), store_sectors=_sectors_text(sectors, "st"),
        stores_written=" ".join(
            f"{tensor}:{_use(written, touched):.0f}%" for (k, tensor), (*_, touched, written) in sorted(sectors.items()) if k == "st"
        ) or "-",
    )  # fmt: skip
    misses = []
    if row["spill_bytes"] or spill_instructions:
        misses.append(f"spills {row['spill_bytes']} B/thread ({spill_instructions} STL/LDL)")
    # ptxas may merge duplicate loads, so the counts can differ, but never the widths.
    for opcode, kind in (("LDG", "ld"), ("STG", "st")):
        if {w for o, w in sass if o == opcode} != {b for k, b, _ in ptx if k == kind}:
            misses.append(f"{opcode} widths in the SASS differ from the PTX's")
    names = list(inspect.signature(jit_fn.fn).parameters)
    accessed = {tensor for _, tensor in widths}
    for tensor, why in vector_expectations(spec, names).items():
        if tensor not in accessed or why.startswith("-"):
            continue  # placeholders for outputs not written; accesses that are not contiguous
        got = set().union(*(ws for (_, t), ws in widths.items() if t == tensor))
        if got != {VECTOR_BITS}:
            misses.append(f"{tensor} {'/'.join(map(str, sorted(got)))}-bit ({why})")
    for (kind, tensor), (_, _, _, touched, written) in sectors.items():
        if kind == "st" and tensor in ("out", "grad_in") and written < touched * SECTOR_BYTES:
            misses.append(f"{tensor} stores leave {100 - _use(written, touched):.0f}% of the sectors they touch unwritten")
    if "?" in accessed:
        misses.append("accesses not traced to a tl.load/tl.store")
    row["meets_targets"] = not misses
    row["misses"] = "; ".join(misses)
    return row


def _widths_text(widths: dict[tuple[str, str], set[int]], kind: str) -> str:
    """'x:128 code:32' style: every tensor's access widths in bits for loads or stores."""
    parts = [f"{tensor}:{'/'.join(map(str, sorted(ws)))}" for (k, tensor), ws in sorted(widths.items()) if k == kind]
    return " ".join(parts) or "-"


def _use(used: int, touched: int) -> float:
    return 100 * used / (touched * SECTOR_BYTES)


def _sectors_text(sectors, kind: str) -> str:
    """'x:4.0/50%': per tensor, sectors per warp request and the share of their bytes used."""
    parts = [
        f"{tensor}:{touched / requests:.1f}/{_use(used, touched):.0f}%"
        for (k, tensor), (requests, touched, used, *_) in sorted(sectors.items()) if k == kind and requests
    ]  # fmt: skip
    return " ".join(parts) or "-"


def _histogram(widths) -> str:
    """'128x18 32x2': how many accesses of each width, widest first."""
    counts: dict[int, int] = {}
    for width in widths:
        counts[width] = counts.get(width, 0) + 1
    return " ".join(f"{w}x{n}" for w, n in sorted(counts.items(), reverse=True)) or "-"


# --------------------------------------------------------------------------------------------
# Report
# --------------------------------------------------------------------------------------------

TABLE = [  # (header, width, key)
    ("sm", 3, "sm"), ("case", 12, "case"), ("dtype", 8, "dtype"), ("layout", 13, "layout"),
    ("variant", 12, "variant"), ("along", 5, "along"), ("tile", 8, "tile"), ("regs", 4, "regs"),
    ("warps/SM", 8, "warps_per_sm"), ("spill B", 7, "spill_bytes"), ("smem B", 6, "shared_bytes"),
    ("global loads", 22, "loads"), ("global stores", 26, "stores"),
    ("load sectors/request, use", 26, "load_sectors"), ("store sectors/request, use", 26, "store_sectors"),
    ("written", 12, "stores_written"), ("target", 6, "meets_targets"),
]  # fmt: skip
CSV_COLUMNS = [
    "sm", "case", "dims", "dtype", "layout", "variant", "kernel", "along", "tile", "warps", "int64",
    "regs", "warps_per_sm", "spill_bytes", "spill_instructions", "shared_bytes", "loads", "stores",
    "sass_loads", "sass_stores", "load_sectors", "store_sectors", "stores_written", "meets_targets", "misses",
]  # fmt: skip


def format_row(row: dict) -> str:
    cells = []
    for _, width, key in TABLE:
        value = row[key]
        text = ("ok" if value else "MISSED") if key == "meets_targets" else str(value)
        cells.append(f"{text:<{width}}")
    line = "  ".join(cells)
    return f"{line}  {row['misses']}" if row["misses"] else line


def inspect_all(cases, dtypes, layouts, variants, capabilities, int64: bool = False, echo: bool = True) -> list[dict]:
    """Inspect every combination; print each row as it is done when ``echo``."""
    cuobjdump = find_tool("cuobjdump")
    if echo:
        header = "  ".join(f"{head:<{width}}" for head, width, _ in TABLE)
        print(f"triton {triton.__version__}, {cuobjdump}; widths in bits from the PTX, traced to each tl.load/tl.store")
        print(f"{header}\n{'-' * len(header)}", flush=True)
    rows = []
    for capability in capabilities:
        for case in cases:
            for dtype in dtypes:
                for layout in layouts:
                    for variant in variants:
                        for wide in (False, True) if int64 else (False,):
                            rows.append(inspect_variant(case, dtype, layout, variant, capability, wide, cuobjdump))
                            if echo:
                                print(format_row(rows[-1]), flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, epilog="Targets: benchmarks/README.md")
    choices = lambda valid: lambda text: parse_list(text, valid)  # noqa: E731
    parser.add_argument("--cases", type=choices(CASES), default=list(DEFAULT_CASES), help=", ".join(DEFAULT_CASES))
    parser.add_argument("--dtypes", type=choices(DTYPES), default=list(DTYPES), help="default all")
    parser.add_argument("--layouts", type=choices(LAYOUTS), default=list(LAYOUTS), help="default both")
    parser.add_argument("--variants", type=choices(VARIANTS), default=list(VARIANTS), help=", ".join(VARIANTS))
    capabilities = [str(c) for c in CAPABILITIES]
    parser.add_argument("--capabilities", type=choices(capabilities), default=capabilities, help="default 80,90")
    parser.add_argument("--int64", action="store_true", help="also with 64-bit offsets (tensors beyond 2**30 elements)")
    parser.add_argument("--csv", type=Path, help="also write the rows to this CSV")
    parser.add_argument("--check", action="store_true", help="exit 1 when a variant misses a target")
    args = parser.parse_args(argv)
    capabilities = [int(c) for c in args.capabilities]
    rows = inspect_all(args.cases, args.dtypes, args.layouts, args.variants, capabilities, args.int64)
    missed = [row for row in rows if not row["meets_targets"]]
    print(
        f"{len(rows) - len(missed)} of {len(rows)} variants meet the targets (no spills; 128-bit value "
        "accesses along C where alignment allows; value stores write whole every sector they touch)"
    )
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        with open(args.csv, "w", newline="") as f:
            writer = csv.DictWriter(f, fieldnames=CSV_COLUMNS, extrasaction="ignore")
            writer.writeheader()
            writer.writerows(rows)
    return 1 if args.check and missed else 0


if __name__ == "__main__":
    sys.exit(main())
