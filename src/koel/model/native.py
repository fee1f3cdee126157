"""koel's one compiled kernel: the block-DFT transforms of :class:`koel.model.fast.BlockDFTConv1d`.

``blockdft.c`` (next to this file) is built on first use with the system C compiler (``$CC``, else
``cc``; ``-O3 -march=native``, OpenMP when the compiler has it), cached under
``<cache dir>/native/`` by a hash of the source, the compiler and this CPU's flags, and loaded with
ctypes. OpenMP shares the runtime PyTorch already loaded, so ``torch.set_num_threads`` applies.
Without a compiler, or with ``KOEL_NATIVE=0``, :func:`library` returns None and the fast path does
the same transforms as matrix products in PyTorch (a little slower; same results to rounding).

Shapes: B batch, C channels, L samples; n block length (a power of two, 16-128), ``blocks`` blocks
per polyphase phase, columns = B * dilation * blocks. Spectra are [n, C, columns] bfloat16 in the
row order of :func:`spectrum_rows`.
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
from pathlib import Path

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
    lib.koel_dft_analysis.argtypes = [ptr, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int, c_int, ptr]
    lib.koel_dft_synthesis.argtypes = [ptr, c_int, c_int, c_int, c_int, c_int, c_int, c_int, ptr, ptr, c_int]
    lib.koel_dft_analysis.restype = lib.koel_dft_synthesis.restype = c_int
    return lib


def available() -> bool:
    return library() is not None


def _check(n: int, step: int, dilation: int, blocks: int) -> None:
    if n not in BLOCK_SIZES or not 1 <= step <= n or dilation < 1 or blocks < 1:
        raise ValueError(f"unsupported block DFT: n={n}, step={step}, dilation={dilation}, blocks={blocks}")


def analysis(x: torch.Tensor, n: int, step: int, dilation: int, blocks: int, left: int) -> torch.Tensor:
    """x [B, C, L] (CPU, float32 or bfloat16) -> spectra [n, C, B * dilation * blocks] bfloat16.

    Column (b, r, j) holds the n-point DFT of x[b, c, r + dilation * (j * step + i) - left], i < n
    (zero outside the signal).
    """
    lib = library()
    if lib is None:
        raise RuntimeError("koel's block-DFT kernel is not available")
    _check(n, step, dilation, blocks)
    if x.device.type != "cpu" or x.dtype not in (torch.float32, torch.bfloat16) or x.dim() != 3:
        raise ValueError(
            f"analysis takes a [B, C, L] float32/bfloat16 CPU tensor, got {x.dtype} {tuple(x.shape)}"
        )
    x = x.contiguous()
    batch, channels, length = x.shape
    out = torch.empty(n, channels, batch * dilation * blocks, dtype=torch.bfloat16)
    rc = lib.koel_dft_analysis(
        x.data_ptr(), int(x.dtype == torch.bfloat16), batch, channels, length, dilation, step, n, blocks, left,
        out.data_ptr(),
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"block-DFT analysis failed (n={n}, step={step})")
    return out


def synthesis(
    spectra: torch.Tensor,
    batch: int,
    length: int,
    step: int,
    dilation: int,
    blocks: int,
    bias: torch.Tensor | None,
) -> torch.Tensor:
    """Spectra [n, C, B * dilation * blocks] bfloat16 -> [B, C, L] float32: the first ``step`` samples
    of each block's inverse DFT at r + dilation * (j * step + i), plus ``bias`` [C] if given."""
    lib = library()
    if lib is None:
        raise RuntimeError("koel's block-DFT kernel is not available")
    n, channels, columns = spectra.shape
    _check(n, step, dilation, blocks)
    if (
        spectra.dtype != torch.bfloat16
        or spectra.device.type != "cpu"
        or columns != batch * dilation * blocks
    ):
        raise ValueError(f"synthesis takes [n, C, {batch * dilation * blocks}] bfloat16 spectra on the CPU")
    if -(-length // dilation) > blocks * step:
        raise ValueError(f"{blocks} blocks of {step} cannot cover {length} samples at dilation {dilation}")
    spectra = spectra.contiguous()
    if bias is not None:
        bias = bias.detach().float().contiguous()
        if bias.shape != (channels,):
            raise ValueError(f"bias must be [{channels}], got {tuple(bias.shape)}")
    out = torch.empty(batch, channels, length)
    rc = lib.koel_dft_synthesis(
        spectra.data_ptr(), batch, channels, length, dilation, step, n, blocks,
        None if bias is None else bias.data_ptr(), out.data_ptr(), 0,
    )  # fmt: skip
    if rc != 0:
        raise RuntimeError(f"block-DFT synthesis failed (n={n}, step={step})")
    return out


__all__ = ["BLOCK_SIZES", "SOURCE", "analysis", "available", "library", "spectrum_rows", "synthesis"]
