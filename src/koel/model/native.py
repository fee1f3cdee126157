"""koel's one compiled kernel: the block-DFT transforms of :class:`koel.model.fast.BlockDFTConv1d`,
with the AdaIN+Snake activation fused in, and the row statistics, Snake pass and bf16 residual add
around them and around the direct convolutions.

``blockdft.c`` (next to this file) is built on first use with the system C compiler (``$CC``, else
``cc``; ``-O3 -march=native``, OpenMP when the compiler has it), cached under
``<cache dir>/native/`` by a hash of the source, the compiler and this CPU's flags, and loaded with
ctypes. OpenMP shares the runtime PyTorch already loaded, so ``torch.set_num_threads`` applies.
Without a compiler, or with ``KOEL_NATIVE=0``, :func:`library` returns None and the fast path does
the same transforms as matrix products in PyTorch (a little slower; same results to rounding).

Shapes: B batch, C channels, L samples; n block length (a power of two, 16-128), ``blocks`` blocks
per polyphase phase, columns = B * dilation * blocks. Spectra are [n, C, columns], bfloat16 or
float32, in the row order of :func:`spectrum_rows`.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar, cast

import torch

from koel.paths import cache_dir

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("blockdft.c")
BLOCK_SIZES = (16, 32, 64, 128)


def spectrum_rows(n: int) -> list[tuple[int, int]]:
    """(bin, part) of each spectrum row, part 0 = real, 1 = imaginary: Re X_0, Re X_n/2, then
    Re X_f, Im X_f for f = 1 .. n/2 - 1 (the imaginary parts of X_0 and X_n/2 are zero for real input)."""
    half = n // 2
    return [(0, 0), (half, 0)] + [(f, part) for f in range(1, half) for part in (0, 1)]


def _cpu_signature() -> str:
    try:
        with open("/proc/cpuinfo", encoding="ascii", errors="ignore") as f:
            return next((line for line in f if line.startswith(("flags", "Features"))), "")
    except OSError:
        return platform.processor()


def _build(compiler: str, target: Path) -> bool:
    """Compile SOURCE into ``target``; False (with the compiler's complaint logged) if it cannot."""
    attempts = [["-march=native", "-fopenmp"], ["-march=native"], ["-fopenmp"], []]
    last = ""
    for extra in attempts:
        with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
            out = Path(tmp) / target.name
            cmd = [
                compiler,
                "-O3",
                "-std=gnu11",
                *extra,
                "-shared",
                "-fPIC",
                str(SOURCE),
                "-o",
                str(out),
                "-lm",
            ]
            try:
                run = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
            except (OSError, subprocess.TimeoutExpired) as e:
                last = str(e)
                continue
            if run.returncode == 0:
                os.replace(out, target)  # atomic: another process may be building the same file
                if extra != attempts[0]:  # a generic build runs, but several times slower
                    log.warning(
                        "built koel's block-DFT kernel without %s (%s); it runs, but slower",
                        " ".join(sorted(set(attempts[0]) - set(extra))),
                        last,
                    )
                return True
            last = run.stderr.strip()[-500:]
    log.warning(
        "could not build koel's block-DFT kernel with %s (%s); using the PyTorch version", compiler, last
    )
    return False


@functools.lru_cache(maxsize=1)
def library() -> ctypes.CDLL | None:
    """The compiled kernel, built if needed; None where it cannot be (then PyTorch does the work)."""
    if os.environ.get("KOEL_NATIVE", "1") == "0":
        return None
    compiler = shutil.which(os.environ.get("CC") or "cc")
    if compiler is None:
        log.info("no C compiler found: the block-DFT transforms run as PyTorch matrix products")
        return None
    version = subprocess.run([compiler, "--version"], capture_output=True, text=True, check=False).stdout
    key = hashlib.sha256(
        b"\0".join(s.encode() for s in (SOURCE.read_text(), version, _cpu_signature(), platform.machine()))
    ).hexdigest()[:16]
    folder = cache_dir() / "native"
    target = folder / f"blockdft-{key}.so"
    try:
        folder.mkdir(parents=True, exist_ok=True)
        if not target.exists() and not _build(compiler, target):
            return None
        lib = ctypes.CDLL(str(target))
    except OSError as e:
        log.warning("could not load koel's block-DFT kernel (%s); using the PyTorch version", e)
        return None
    c_int, ptr = ctypes.c_int, ctypes.c_void_p
    lib.koel_dft_analysis.argtypes = [ptr, *[c_int] * 9, ptr, ptr, ptr, ptr, ptr, c_int, c_int]
    lib.koel_dft_synthesis.argtypes = [ptr, *[c_int] * 8, ptr, ptr, c_int, c_int]
    lib.koel_row_stats.argtypes = [ptr, c_int, c_int, c_int, ptr, ptr, c_int]
    lib.koel_running_affine.argtypes = [
        ptr,
        c_int,
        c_int,
        c_int,
        ptr,
        ptr,
        ctypes.c_double,
        ptr,
        ptr,
        ctypes.c_float,
        *[ptr] * 5,
        c_int,
    ]
    lib.koel_snake.argtypes = [ptr, *[c_int] * 4, ptr, ptr, ptr, ptr, ptr, c_int, c_int]
    lib.koel_add_bf16.argtypes = [ptr, ptr, ptr, ctypes.c_int64, c_int]
    lib.koel_mix.argtypes = [ptr, ptr, ptr, *[c_int] * 6]
    lib.koel_conv.argtypes = [ptr, ptr, ptr, c_int, ptr, *[c_int] * 10]
    lib.koel_linear.argtypes = [ptr, ptr, ptr, ptr, *[c_int] * 4]
    lib.koel_cmix.argtypes = [ptr, ptr, ptr, *[c_int] * 6]
    lib.koel_lstm.argtypes = [ptr, ptr, c_int, c_int, ptr, ptr, c_int]
    lib.koel_wino_in.argtypes = [ptr, *[c_int] * 5, ptr, c_int]
    lib.koel_wino_out.argtypes = [ptr, *[c_int] * 5, ptr, ptr, c_int, c_int]
    lib.koel_mix_available.argtypes = []
    lib.koel_mix_rows.argtypes = []
    for function in (
        lib.koel_dft_analysis,
        lib.koel_dft_synthesis,
        lib.koel_row_stats,
        lib.koel_running_affine,
        lib.koel_snake,
        lib.koel_add_bf16,
        lib.koel_mix,
        lib.koel_conv,
        lib.koel_linear,
        lib.koel_cmix,
        lib.koel_lstm,
        lib.koel_wino_in,
        lib.koel_wino_out,
        lib.koel_mix_available,
        lib.koel_mix_rows,
    ):
        function.restype = c_int
    return lib


def available() -> bool:
    return library() is not None


def _require() -> ctypes.CDLL:
    lib = library()
    if lib is None:
        raise RuntimeError("koel's block-DFT kernel is not available")
    return lib


_FLOATS = (torch.float32, torch.bfloat16)
_STRIP = 16  # columns per micro-tile of the compiled products (MIX_NR)


_F = TypeVar("_F", bound=Callable[..., Any])


def _profiled(fn: _F) -> _F:
    """Run ``fn`` as a named operator (``koel::<name>``) while torch's profiler records, so the
    kernel's time shows up in profiles next to PyTorch's operators (else it is nobody's)."""
    name = f"koel::{fn.__name__}"

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        if not torch.autograd._profiler_enabled():
            return fn(*args, **kwargs)
        with torch.profiler.record_function(name):
            return fn(*args, **kwargs)

    return cast(_F, wrapper)


def _threads() -> int:
    """The caller's intra-op thread count: OpenMP's own default differs outside the main thread."""
    return max(1, torch.get_num_threads())


def _check_float(dtype: torch.dtype, what: str) -> None:
    if dtype not in _FLOATS:
        raise ValueError(f"{what} must be float32 or bfloat16, got {dtype}")


def _check(n: int, step: int, dilation: int, blocks: int) -> None:
    if n not in BLOCK_SIZES or not 1 <= step <= n or dilation < 1 or blocks < 1:
        raise ValueError(f"unsupported block DFT: n={n}, step={step}, dilation={dilation}, blocks={blocks}")


def _bias(bias: torch.Tensor | None, size: int, padded: int | None = None) -> torch.Tensor | None:
    """A per-output bias as the kernels read it: contiguous float32 [size], zero-padded to ``padded``."""
    if bias is None:
        return None
    if bias.shape != (size,):
        raise ValueError(f"bias must be [{size}], got {tuple(bias.shape)}")
    bias = _array(bias, (size,))
    if padded is not None and padded > size:
        bias = torch.nn.functional.pad(bias, (0, padded - size))
    return bias


def _out(out: torch.Tensor | None, shape: tuple[int, ...]) -> torch.Tensor:
    """``out`` if it is a contiguous float32 CPU tensor of ``shape`` (else an error); a new one if None."""
    if out is None:
        return torch.empty(shape)
    if (
        out.shape != shape
        or out.dtype != torch.float32
        or not out.is_contiguous()
        or out.device.type != "cpu"
    ):
        dims = ", ".join(map(str, shape))
        raise ValueError(
            f"out must be a contiguous float32 CPU tensor [{dims}], got {out.dtype} {tuple(out.shape)}"
        )
    return out


def _activation_arrays(
    activation: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor], batch: int, channels: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """(center, scale, shift, alpha) as contiguous float32 [B, C, 1] x 3 and [1, C, 1]."""
    sizes = ((batch, channels, 1),) * 3 + ((1, channels, 1),)
    center, scale, shift, alpha = (_array(t, size) for t, size in zip(activation, sizes, strict=True))
    return center, scale, shift, alpha


def _array(t: torch.Tensor, shape: tuple[int, ...], dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """``t`` as a contiguous ``dtype`` CPU tensor of ``shape`` (broadcast), without gradient: ``t`` itself
    when it is one already (four tensor operations fewer, which on a stream's first tile add up)."""
    t = t.detach() if t.requires_grad else t
    if t.dtype == dtype and tuple(t.shape) == shape and t.device.type == "cpu" and t.is_contiguous():
        return t
    return t.to("cpu", dtype).expand(shape).contiguous()


@_profiled
def analysis(
    x: torch.Tensor,
    n: int,
    step: int,
    dilation: int,
    blocks: int,
    left: int,
    activation: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor] | None = None,
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """x [B, C, L] (CPU, float32 or bfloat16) -> spectra [n, C, B * dilation * blocks] in ``dtype``
    (bfloat16 or float32).

    Column (b, r, j) holds the n-point DFT of a[b, c, r + dilation * (j * step + i) - left], i < n,
    zero outside the signal, where a = x, or with ``activation = (center, scale, shift, alpha)``
    (the first three [B, C, 1], alpha [1, C, 1]) a = Snake(y) = y + (1 - cos(2 alpha y)) / (2 alpha)
    for y = (x - center) * scale + shift, computed once per sample as the row is read.
    """
    lib = _require()
    _check(n, step, dilation, blocks)
    _check_float(dtype, "the spectra's dtype")
    if x.device.type != "cpu" or x.dtype not in _FLOATS or x.dim() != 3:
        raise ValueError(
            f"analysis takes a [B, C, L] float32/bfloat16 CPU tensor, got {x.dtype} {tuple(x.shape)}"
        )
    x = x.contiguous()
    batch, channels, length = x.shape
    pointers: list[int | None] = [None] * 4
    if activation is not None:
        activation = _activation_arrays(activation, batch, channels)  # kept alive until the call returns
        pointers = [t.data_ptr() for t in activation]
    out = torch.empty(n, channels, batch * dilation * blocks, dtype=dtype)
    rc = lib.koel_dft_analysis(
        x.data_ptr(), int(x.dtype == torch.bfloat16), batch, channels, length, dilation, step, n, blocks, left,
        *pointers, out.data_ptr(), int(dtype == torch.float32), _threads(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"block-DFT analysis failed (n={n}, step={step})")
    return out


@_profiled
def synthesis(
    spectra: torch.Tensor,
    batch: int,
    length: int,
    step: int,
    dilation: int,
    blocks: int,
    bias: torch.Tensor | None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """Spectra [n, C, B * dilation * blocks] (bfloat16 or float32) -> [B, C, L] float32: the first ``step`` samples
    of each block's inverse DFT at r + dilation * (j * step + i), plus ``bias`` [C] if given; added
    into ``out`` (float32, contiguous, [B, C, L]) when it is given, which is returned."""
    lib = _require()
    n, channels, columns = spectra.shape
    _check(n, step, dilation, blocks)
    if spectra.dtype not in _FLOATS or spectra.device.type != "cpu" or columns != batch * dilation * blocks:
        raise ValueError(
            f"synthesis takes [n, C, {batch * dilation * blocks}] bfloat16 or float32 spectra on the CPU"
        )
    if -(-length // dilation) > blocks * step:
        raise ValueError(f"{blocks} blocks of {step} cannot cover {length} samples at dilation {dilation}")
    spectra = spectra.contiguous()
    bias = _bias(bias, channels)
    accumulate = out is not None
    out = _out(out, (batch, channels, length))
    rc = lib.koel_dft_synthesis(
        spectra.data_ptr(), int(spectra.dtype == torch.float32), batch, channels, length, dilation, step, n, blocks,
        None if bias is None else bias.data_ptr(), out.data_ptr(), int(accumulate), _threads(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"block-DFT synthesis failed (n={n}, step={step})")
    return out


@_profiled
def snake(
    x: torch.Tensor,
    activation: tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor],
    dtype: torch.dtype = torch.bfloat16,
) -> torch.Tensor:
    """Snake((x - center) * scale + shift) of a float32 or bfloat16 CPU tensor [B, C, L] in ``dtype``
    (bfloat16 or float32), in one pass; ``activation = (center, scale, shift, alpha)`` as for
    :func:`analysis`."""
    lib = _require()
    _check_float(dtype, "snake's output dtype")
    if x.dtype not in _FLOATS or x.device.type != "cpu" or x.dim() != 3:
        raise ValueError(
            f"snake takes a [B, C, L] float32/bfloat16 CPU tensor, got {x.dtype} {tuple(x.shape)}"
        )
    x = x.contiguous()
    batch, channels, length = x.shape
    arrays = _activation_arrays(activation, batch, channels)
    out = torch.empty(batch, channels, length, dtype=dtype)
    pointers = (t.data_ptr() for t in arrays)
    bf16, out_f32 = int(x.dtype == torch.bfloat16), int(dtype == torch.float32)
    if (
        lib.koel_snake(
            x.data_ptr(), bf16, batch, channels, length, *pointers, out.data_ptr(), out_f32, _threads()
        )
        != 0
    ):
        raise RuntimeError("snake failed")
    return out


@_profiled
def row_stats(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Mean and biased variance (float32) over the last axis of a float32 or bfloat16 CPU tensor
    [..., L], keepdim, each from a centred pass over the row (exact however large the mean is against
    the spread)."""
    lib = _require()
    if x.dtype not in _FLOATS or x.device.type != "cpu" or x.dim() < 1 or x.shape[-1] < 1:
        raise ValueError(
            f"row_stats takes a float32/bfloat16 CPU tensor with a non-empty last axis, got {x.dtype}"
        )
    x = x.contiguous()
    rows, length = x.numel() // x.shape[-1], x.shape[-1]
    mean = torch.empty(*x.shape[:-1], 1)
    var = torch.empty(*x.shape[:-1], 1)
    bf16 = int(x.dtype == torch.bfloat16)
    if lib.koel_row_stats(x.data_ptr(), bf16, rows, length, mean.data_ptr(), var.data_ptr(), _threads()) != 0:
        raise RuntimeError("row statistics failed")
    return mean, var


@_profiled
def running_affine(
    x: torch.Tensor,
    gamma: torch.Tensor,
    beta: torch.Tensor,
    eps: float,
    previous: tuple[torch.Tensor, torch.Tensor, float] | None = None,
) -> tuple[tuple[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, float]]:
    """AdaIN over a stream's tiles so far, for a tile ``x`` [B, C, L] (float32 or bfloat16 CPU):
    ``((center, scale, shift), (mean, m2, count))`` such that AdaIN(x) = (x - center) * scale + shift.

    ``center`` is the tile's own mean per row (:func:`row_stats`); ``mean``, ``m2`` (float64, the
    centred sum of squares) and ``count`` are the statistics of ``previous`` (the same triple from the
    earlier tiles, or None) merged with the tile's (Chan et al.); ``scale = (1 + gamma) /
    sqrt(m2 / count + eps)`` and ``shift = beta - (mean - center) * scale`` from ``gamma`` and ``beta``
    [B, C, 1]. One call instead of two dozen small tensor operations; the arithmetic (and its
    rounding) is that of the same formulas in PyTorch. All outputs [B, C, 1]."""
    lib = _require()
    if x.dtype not in _FLOATS or x.device.type != "cpu" or x.dim() != 3 or x.shape[-1] < 1:
        raise ValueError(
            f"running_affine takes a float32/bfloat16 CPU tensor [B, C, L>0], got {x.dtype} {tuple(x.shape)}"
        )
    x = x.contiguous()
    batch, channels, length = x.shape
    shape = (batch, channels, 1)
    gamma, beta = _array(gamma, shape), _array(beta, shape)
    prev_mean = prev_m2 = None
    count: float = 0
    if previous is not None:
        prev_mean, prev_m2 = (
            _array(previous[0], shape, torch.float64),
            _array(previous[1], shape, torch.float64),
        )
        count = previous[2]
    mean, m2 = torch.empty(shape, dtype=torch.float64), torch.empty(shape, dtype=torch.float64)
    center, scale, shift = torch.empty(shape), torch.empty(shape), torch.empty(shape)
    if (
        lib.koel_running_affine(
            x.data_ptr(),
            int(x.dtype == torch.bfloat16),
            batch * channels,
            length,
            None if prev_mean is None else prev_mean.data_ptr(),
            None if prev_m2 is None else prev_m2.data_ptr(),
            float(count),
            gamma.data_ptr(),
            beta.data_ptr(),
            eps,
            mean.data_ptr(),
            m2.data_ptr(),
            center.data_ptr(),
            scale.data_ptr(),
            shift.data_ptr(),
            _threads(),
        )
        != 0
    ):
        raise RuntimeError("running AdaIN statistics failed")
    return (center, scale, shift), (mean, m2, count + length)


@_profiled
def add_bf16(x: torch.Tensor, t: torch.Tensor, out: torch.Tensor | None = None) -> torch.Tensor:
    """x + t for a float32 ``x`` and a bfloat16 ``t`` of the same shape (CPU), float32, in one pass;
    into ``out`` (which may be ``x``) when given."""
    lib = _require()
    if x.dtype != torch.float32 or t.dtype != torch.bfloat16 or x.shape != t.shape:
        raise ValueError(
            f"add_bf16 takes float32 x and bfloat16 t of one shape, got {x.dtype} {tuple(x.shape)} "
            f"and {t.dtype} {tuple(t.shape)}"
        )
    if x.device.type != "cpu" or t.device.type != "cpu":
        raise ValueError("add_bf16 takes CPU tensors")
    x, t = x.contiguous(), t.contiguous()
    out = _out(out, tuple(x.shape))
    if lib.koel_add_bf16(x.data_ptr(), t.data_ptr(), out.data_ptr(), x.numel(), _threads()) != 0:
        raise RuntimeError("add_bf16 failed")
    return out


def mix_available() -> bool:
    """Whether the compiled float32 channel mixing (:func:`mix`) runs here (AVX2 + FMA builds)."""
    lib = library()
    return lib is not None and bool(lib.koel_mix_available())


def _weights_dtype(packed: torch.Tensor) -> int:
    """1 for float16 packed weights, 0 for float32; anything else is refused."""
    if packed.dtype == torch.float16:
        return 1
    if packed.dtype != torch.float32:
        raise ValueError(f"packed weights must be float32 or float16, got {packed.dtype}")
    return 0


def pack_mix_weights(w: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Mixing weights [G, M, K] -> float32 (float16 with ``half``) in the order :func:`mix` reads
    them: [G, ceil(M / r), K, r] for the kernel's r rows per tile (rows past M zero). Done once, when
    a model is loaded. The products stay float32 either way; float16 halves the bytes each product
    reads (weights rounded to 11 significant bits, about 5e-4 relative)."""
    lib = _require()
    if w.dim() != 3:
        raise ValueError(f"mixing weights must be [groups, M, K], got {tuple(w.shape)}")
    rows = int(lib.koel_mix_rows())
    groups, m, k = w.shape
    tiles = -(-m // rows)
    padded = torch.zeros(groups, tiles * rows, k, dtype=torch.float32)
    padded[:, :m] = w.detach().float().cpu()
    packed = padded.view(groups, tiles, rows, k).transpose(2, 3).contiguous()
    return packed.half() if half else packed


def unpack_mix_weights(packed: torch.Tensor, m: int) -> torch.Tensor:
    """The inverse of :func:`pack_mix_weights`: [G, M, K] float32."""
    groups, tiles, k, rows = packed.shape
    return packed.float().transpose(2, 3).reshape(groups, tiles * rows, k)[:, :m]


@_profiled
def mix(x: torch.Tensor, packed: torch.Tensor, m: int, out: torch.Tensor | None = None) -> torch.Tensor:
    """y[g] = W[g] @ x[g] for x [G, K, N] float32 and W [G, m, K] packed by :func:`pack_mix_weights`;
    [G, m, N] float32, written into ``out`` (a contiguous tensor or view of that shape) when given."""
    lib = _require()
    if not lib.koel_mix_available():
        raise RuntimeError("koel's compiled channel mixing needs a CPU with AVX2 and FMA")
    groups, tiles, k, rows = packed.shape
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 3 or x.shape[:2] != (groups, k):
        raise ValueError(f"mix takes float32 CPU x [{groups}, {k}, N], got {x.dtype} {tuple(x.shape)}")
    half = _weights_dtype(packed)
    if not packed.is_contiguous() or not 0 < m <= tiles * rows:
        raise ValueError(f"packed weights do not hold {m} rows: {packed.dtype} {tuple(packed.shape)}")
    x = x.contiguous()
    n = x.shape[2]
    out = _out(out, (groups, m, n))
    if lib.koel_mix(x.data_ptr(), out.data_ptr(), packed.data_ptr(), half, groups, m, k, n, _threads()) != 0:
        raise RuntimeError(f"channel mixing failed ({groups} x [{m}, {k}] @ [{k}, {n}])")
    return out


def pack_complex_mix_weights(a: torch.Tensor, b: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Complex mixing weights A + iB ([G, M, K] each) -> float32 (float16 with ``half``)
    [G, 3, ceil(M / r), K, r]: A, -(A + B) and B - A packed as :func:`pack_mix_weights` packs, for
    :func:`complex_mix` (sums formed in float64)."""
    if a.dim() != 3 or a.shape != b.shape:
        raise ValueError(
            f"complex mixing weights must be two [groups, M, K], got {tuple(a.shape)}, {tuple(b.shape)}"
        )
    a, b = a.detach().double().cpu(), b.detach().double().cpu()
    packed = pack_mix_weights(torch.stack([a, -(a + b), b - a], dim=1).flatten(0, 1), half)
    return packed.view(a.shape[0], 3, *packed.shape[1:])


def unpack_complex_mix_weights(packed: torch.Tensor, m: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The inverse of :func:`pack_complex_mix_weights`: (A, B), [G, M, K] float32 each."""
    groups = packed.shape[0]
    parts = unpack_mix_weights(packed.flatten(0, 1), m).view(groups, 3, m, -1).double()
    a = parts[:, 0]
    return a.float(), (parts[:, 2] + a).float()


@_profiled
def complex_mix(
    x: torch.Tensor, packed: torch.Tensor, m: int, out: torch.Tensor | None = None
) -> torch.Tensor:
    """Y[g] = W[g] X[g] for complex X = x[g, 0] + i x[g, 1] (x [G, 2, K, N] float32) and W = A + iB
    packed by :func:`pack_complex_mix_weights`, in 3 real products per bin instead of 4: [G, 2, m, N]
    float32 (real, imaginary), written into ``out`` (contiguous, that shape) when given."""
    lib = _require()
    if not lib.koel_mix_available():
        raise RuntimeError("koel's compiled channel mixing needs a CPU with AVX2 and FMA")
    if packed.dim() != 5 or packed.shape[1] != 3:
        raise ValueError(f"packed complex weights must be [G, 3, tiles, K, r], got {tuple(packed.shape)}")
    groups, _, tiles, k, rows = packed.shape
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 4 or x.shape[:3] != (groups, 2, k):
        raise ValueError(
            f"complex_mix takes float32 CPU x [{groups}, 2, {k}, N], got {x.dtype} {tuple(x.shape)}"
        )
    half = _weights_dtype(packed)
    if not packed.is_contiguous() or not 0 < m <= tiles * rows:
        raise ValueError(f"packed weights do not hold {m} rows: {packed.dtype} {tuple(packed.shape)}")
    x = x.contiguous()
    n = x.shape[3]
    out = _out(out, (groups, 2, m, n))
    if lib.koel_cmix(x.data_ptr(), out.data_ptr(), packed.data_ptr(), half, groups, m, k, n, _threads()) != 0:
        raise RuntimeError(f"complex channel mixing failed ({groups} x [{m}, {k}] @ [{k}, {n}])")
    return out


def pack_conv_weights(w: torch.Tensor, half: bool = False) -> torch.Tensor:
    """Conv1d weights [C_out, C_in, taps] -> the packed [1, ceil(C_out / r), taps * C_in, r] order of
    :func:`conv` (row t * C_in + c of the product is tap t of input channel c), float16 with ``half``."""
    if w.dim() != 3:
        raise ValueError(f"convolution weights must be [C_out, C_in, taps], got {tuple(w.shape)}")
    return pack_mix_weights(w.detach().permute(0, 2, 1).reshape(1, w.shape[0], -1), half)


@_profiled
def conv(
    x: torch.Tensor,
    packed: torch.Tensor,
    c_out: int,
    taps: int,
    dilation: int = 1,
    padding: int = 0,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """A stride-1 Conv1d of x [B, C_in, L] (float32, CPU) with weights packed by
    :func:`pack_conv_weights`: [B, c_out, L + 2 padding - dilation (taps - 1)] float32, added into
    ``out`` when given (the residual stream) instead of written to a new tensor."""
    lib = _require()
    if not lib.koel_mix_available():
        raise RuntimeError("koel's compiled convolution needs a CPU with AVX2 and FMA")
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 3:
        raise ValueError(f"conv takes a float32 CPU tensor [B, C, L], got {x.dtype} {tuple(x.shape)}")
    groups, tiles, k, rows = packed.shape
    batch, c_in, length = x.shape
    half = _weights_dtype(packed)
    if groups != 1 or k != taps * c_in or not 0 < c_out <= tiles * rows:
        raise ValueError(f"packed weights [{tuple(packed.shape)}] do not fit {c_in} x {taps} taps -> {c_out}")
    if taps < 1 or dilation < 1 or padding < 0:
        raise ValueError(f"unsupported convolution: taps={taps}, dilation={dilation}, padding={padding}")
    out_length = length + 2 * padding - dilation * (taps - 1)
    if out_length < 1:
        raise ValueError(f"{length} samples are too short for {taps} taps at dilation {dilation}")
    x = x.contiguous()
    bias = _bias(bias, c_out)
    accumulate = out is not None
    out = _out(out, (batch, c_out, out_length))
    rc = lib.koel_conv(
        x.data_ptr(), out.data_ptr(), packed.data_ptr(), half, None if bias is None else bias.data_ptr(),
        batch, c_in, length, c_out, taps, dilation, padding, out_length, int(accumulate), _threads(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"convolution failed ({c_in} -> {c_out}, {taps} taps)")
    return out


def pack_linear_weights(w: torch.Tensor) -> torch.Tensor:
    """nn.Linear weights [out, in] -> float32 strips of W^T as :func:`linear` reads them:
    [ceil(out / 16), in, 16] (features past ``out`` zero)."""
    if w.dim() != 2:
        raise ValueError(f"linear weights must be [out, in], got {tuple(w.shape)}")
    out_features, in_features = w.shape
    strips = -(-out_features // _STRIP)
    padded = torch.zeros(strips * _STRIP, in_features, dtype=torch.float32)
    padded[:out_features] = w.detach().float().cpu()
    return padded.view(strips, _STRIP, in_features).transpose(1, 2).contiguous()


@_profiled
def linear(
    x: torch.Tensor, packed: torch.Tensor, out_features: int, bias: torch.Tensor | None = None
) -> torch.Tensor:
    """nn.Linear's x @ W.T + bias for a float32 CPU x [..., in], W packed by
    :func:`pack_linear_weights`: [..., out_features] float32."""
    lib = _require()
    if not lib.koel_mix_available():
        raise RuntimeError("koel's compiled linear layer needs a CPU with AVX2 and FMA")
    strips, k, width = packed.shape
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() < 1 or x.shape[-1] != k:
        raise ValueError(f"linear takes a float32 CPU tensor [..., {k}], got {x.dtype} {tuple(x.shape)}")
    if width != _STRIP or not 0 < out_features <= strips * width or packed.dtype != torch.float32:
        raise ValueError(f"packed weights {tuple(packed.shape)} do not hold {out_features} outputs")
    bias = _bias(bias, out_features, padded=strips * width)
    x = x.contiguous()
    n = x.numel() // k
    out = torch.empty(*x.shape[:-1], out_features)
    if n == 0:
        return out
    rc = lib.koel_linear(
        x.data_ptr(), out.data_ptr(), packed.data_ptr(), None if bias is None else bias.data_ptr(),
        n, out_features, k, _threads(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"linear layer failed ({k} -> {out_features})")
    return out


_LSTM_UNITS = 16  # blockdft.c's LSTM_UNITS


def lstm_gate_order(hidden: int) -> torch.Tensor:
    """The order in which :func:`lstm` takes one direction's 4 x ``hidden`` gate rows (PyTorch's
    i, f, g, o blocks): the four gates of 16 hidden units side by side, unit block after unit block.
    ``rows[lstm_gate_order(h)]`` reorders W_ih, W_hh or a bias."""
    if hidden < _LSTM_UNITS or hidden % _LSTM_UNITS:
        raise ValueError(f"the LSTM kernel takes a multiple of {_LSTM_UNITS} hidden units, got {hidden}")
    return torch.arange(4 * hidden).view(4, hidden // _LSTM_UNITS, _LSTM_UNITS).transpose(0, 1).reshape(-1)


def pack_lstm_weights(w_hh: tuple[torch.Tensor, torch.Tensor]) -> torch.Tensor:
    """The recurrent weights [4H, H] of the forward and backward directions -> float32
    [2, H / 16, H, 64] as :func:`lstm` reads them (W_hh^T, 16 units' four gates per block)."""
    packed = []
    for w in w_hh:
        if w.dim() != 2 or w.shape[0] != 4 * w.shape[1]:
            raise ValueError(f"recurrent weights must be [4H, H], got {tuple(w.shape)}")
        hidden = w.shape[1]
        rows = w.detach().float().cpu()[lstm_gate_order(hidden)]  # [4H, H], kernel order
        packed.append(rows.view(hidden // _LSTM_UNITS, 4 * _LSTM_UNITS, hidden).transpose(1, 2))
    return torch.stack(packed).contiguous()


@_profiled
def lstm(
    projections: torch.Tensor, packed: torch.Tensor, state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The recurrence of a one-layer bidirectional LSTM over one sequence, a direction per thread.

    ``projections`` [T, 2, 4H]: x W_ih^T + b_ih + b_hh of each step and direction, gate rows in
    :func:`lstm_gate_order`; ``packed``: W_hh by :func:`pack_lstm_weights`; ``state`` [2, 2, H]:
    each direction's initial (h, c), zeros if None. Returns the outputs [T, 2H] (forward, backward
    halves, as nn.LSTM) and the final state [2, 2, H].
    """
    lib = _require()
    if not lib.koel_mix_available():
        raise RuntimeError("koel's compiled LSTM needs a CPU with AVX2 and FMA")
    if (
        packed.dim() != 4
        or packed.shape[0] != 2
        or packed.dtype != torch.float32
        or not packed.is_contiguous()
    ):
        raise ValueError(f"packed LSTM weights must be [2, H / 16, H, 64] float32, got {tuple(packed.shape)}")
    hidden = packed.shape[2]
    if packed.shape[1:] != (hidden // _LSTM_UNITS, hidden, 4 * _LSTM_UNITS) or hidden % _LSTM_UNITS:
        raise ValueError(f"packed LSTM weights must be [2, H / 16, H, 64], got {tuple(packed.shape)}")
    if (
        projections.dim() != 3
        or projections.shape[1:] != (2, 4 * hidden)
        or projections.shape[0] < 1
        or projections.dtype != torch.float32
        or projections.device.type != "cpu"
    ):
        raise ValueError(
            f"LSTM projections must be float32 CPU [T, 2, {4 * hidden}], got {projections.dtype} "
            f"{tuple(projections.shape)}"
        )
    projections = projections.contiguous()
    if state is None:
        state = torch.zeros(2, 2, hidden)
    elif state.shape != (2, 2, hidden):
        raise ValueError(f"LSTM state must be [2, 2, {hidden}], got {tuple(state.shape)}")
    else:
        state = state.detach().float().cpu().contiguous().clone()
    steps = projections.shape[0]
    out = torch.empty(steps, 2 * hidden)
    rc = lib.koel_lstm(projections.data_ptr(), packed.data_ptr(), steps, hidden, out.data_ptr(), state.data_ptr(),
                       _threads())  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"LSTM recurrence failed ({steps} steps, {hidden} units)")
    return out, state


# Winograd F(4, 3): U = G g for each 3-tap kernel g (blockdft.c has B^T and A^T)
_WINOGRAD_G = torch.tensor(
    [[1 / 4, 0, 0], [-1 / 6, -1 / 6, -1 / 6], [-1 / 6, 1 / 6, -1 / 6], [1 / 24, 1 / 12, 1 / 6],
     [1 / 24, -1 / 12, 1 / 6], [0, 0, 1]],
    dtype=torch.float64,
)  # fmt: skip


def pack_winograd_weights(w: torch.Tensor, half: bool = False) -> torch.Tensor:
    """3-tap Conv1d weights [C_out, C_in, 3] -> their 6 Winograd F(4, 3) transforms G g, packed as
    :func:`pack_mix_weights` packs [6, C_out, C_in] (computed in float64; float16 with ``half``)."""
    if w.dim() != 3 or w.shape[2] != 3:
        raise ValueError(f"Winograd weights must be [C_out, C_in, 3], got {tuple(w.shape)}")
    return pack_mix_weights(torch.einsum("pk,oik->poi", _WINOGRAD_G, w.detach().double().cpu()), half)


def unpack_winograd_weights(packed: torch.Tensor, c_out: int) -> torch.Tensor:
    """The 3-tap weights [C_out, C_in, 3] behind :func:`pack_winograd_weights`' packing (float32).

    G's rows 0 and 5 are g[0] / 4 and g[2]; row 1 is -(g[0] + g[1] + g[2]) / 6."""
    u = unpack_mix_weights(packed, c_out).double()  # [6, C_out, C_in]
    first, last = 4 * u[0], u[5]
    middle = -6 * u[1] - first - last
    return torch.stack([first, middle, last], dim=2).float()


@_profiled
def winograd_conv(
    x: torch.Tensor,
    packed: torch.Tensor,
    c_out: int,
    dilation: int = 1,
    bias: torch.Tensor | None = None,
    out: torch.Tensor | None = None,
) -> torch.Tensor:
    """The 3-tap 'same' Conv1d (padding = dilation, stride 1) of x [B, C_in, L] (float32, CPU) with
    weights packed by :func:`pack_winograd_weights`, as Winograd F(4, 3): transform tiles of 6
    samples, one channel product per transform point (:func:`mix`, half the direct convolution's
    multiply-adds), transform back. [B, c_out, L] float32, added into ``out`` when given."""
    lib = _require()
    if not lib.koel_mix_available():
        raise RuntimeError("koel's Winograd convolution needs a CPU with AVX2 and FMA")
    if x.dtype != torch.float32 or x.device.type != "cpu" or x.dim() != 3:
        raise ValueError(
            f"winograd_conv takes a float32 CPU tensor [B, C, L], got {x.dtype} {tuple(x.shape)}"
        )
    batch, c_in, length = x.shape
    if packed.dim() != 4 or packed.shape[0] != 6 or packed.shape[2] != c_in:
        raise ValueError(f"packed Winograd weights {tuple(packed.shape)} do not fit {c_in} input channels")
    if dilation < 1 or length < 1 or batch < 1:
        raise ValueError(f"unsupported Winograd convolution: dilation={dilation}, input {tuple(x.shape)}")
    x = x.contiguous()
    bias = _bias(bias, c_out)
    accumulate = out is not None
    out = _out(out, (batch, c_out, length))
    tiles = -(-((length + dilation - 1) // dilation) // 4)
    transformed = torch.empty(6, c_in, batch * dilation * tiles)
    if lib.koel_wino_in(
        x.data_ptr(), batch, c_in, length, dilation, tiles, transformed.data_ptr(), _threads()
    ):
        raise RuntimeError("Winograd input transform failed")
    mixed = mix(transformed, packed, c_out)
    rc = lib.koel_wino_out(
        mixed.data_ptr(), batch, c_out, length, dilation, tiles, None if bias is None else bias.data_ptr(),
        out.data_ptr(), int(accumulate), _threads(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError("Winograd output transform failed")
    return out


__all__ = [
    "BLOCK_SIZES",
    "SOURCE",
    "add_bf16",
    "analysis",
    "available",
    "complex_mix",
    "conv",
    "library",
    "linear",
    "lstm",
    "lstm_gate_order",
    "mix",
    "mix_available",
    "pack_complex_mix_weights",
    "pack_conv_weights",
    "pack_linear_weights",
    "pack_lstm_weights",
    "pack_mix_weights",
    "pack_winograd_weights",
    "row_stats",
    "running_affine",
    "snake",
    "spectrum_rows",
    "synthesis",
    "unpack_complex_mix_weights",
    "unpack_mix_weights",
    "unpack_winograd_weights",
    "winograd_conv",
]
