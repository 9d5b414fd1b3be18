"""Counting what a step holds on a CUDA device, with fake tensors on the CPU.

``run_traced`` runs a step (``phases`` has the engine's) under ``LiveBytes``, a dispatch
mode that counts live tensor bytes as the CUDA caching allocator would hold them, and reports
the peak per segment of the step. ``materialised`` makes the step's modules fake tensors (no
memory, no weights) or, to check the fake count, real CPU tensors counted the same way.

What the fake trace cannot see, and how it is handled:

- Attention. The CPU's own ``scaled_dot_product_attention`` picks a kernel by its own rules,
  and its "math" fallback materialises the [B, H, T, S] scores and probabilities. On CUDA,
  Wan's attention runs in the flash (or memory-efficient) kernel, which never does.
  ``FlashAttention`` routes every call to the CPU's flash kernel, whose tensors are the CUDA
  kernel's: the output and a float32 log-sum-exp per query, and in backward the three
  gradients.
- Buffers a CUDA kernel allocates inside itself (``kernel_workspace``): flash attention's
  backward float32 dq accumulator; bitsandbytes' int8 matmul's int32 product before its
  dequantisation; the NF4 matmul's dequantised weight (dequantise + linear, what
  bitsandbytes does on Hopper at these token counts). cuDNN's convolution workspaces (the
  VAE's) depend on the algorithm cuDNN picks at run time and are not modelled.
- Quantised linears are stand-ins (``Int8Linear``, ``NF4Linear``) holding bitsandbytes'
  storage and calling its CUDA-path autograd functions and ops (their fake kernels ship with
  bitsandbytes): the CPU build takes other paths (dequantised fp matmuls) that CUDA never runs.
"""

from __future__ import annotations

import contextlib
import math
import weakref

import torch
from torch.overrides import TorchFunctionMode
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves
from torch.utils.weak import WeakIdKeyDictionary

from framecast.engine.config import Quantize

GRANULE = 512  # the CUDA caching allocator rounds every block up to 512 bytes
_aten = torch.ops.aten


def granules(nbytes: int) -> int:
    return -(-int(nbytes) // GRANULE) * GRANULE


# --- counting live bytes ----------------------------------------------------------------------


def kernel_workspace(func, args) -> int:
    """Bytes a CUDA kernel allocates inside itself while it runs, which its fake (and CPU)
    kernel does not show."""
    if func is _aten._scaled_dot_product_flash_attention_for_cpu_backward.default:
        query = args[1]  # [B, H, T, D]
        b, h, t, d = query.shape
        t = -(-t // 128) * 128  # flash_api.cpp mha_bwd: dq_accum fp32 [B, T_rounded, H, D], softmax_d fp32 [B, H, T_rounded]
        return granules(b * t * h * d * 4) + granules(b * h * t * 4)
    bnb = getattr(torch.ops, "bitsandbytes", None)
    if bnb is None:
        return 0
    if func is bnb.int8_scaled_mm.default:  # int8_linear_matmul's int32 [M, N], then int8_mm_dequant
        a, b = args[0], args[1]
        return granules(math.prod(a.shape[:-1]) * b.shape[0] * 4)
    if func is bnb.gemm_4bit.default:  # dequantize_4bit to A's dtype, then F.linear
        a, shape = args[0], args[2]
        return granules(math.prod(shape) * a.element_size()) + granules(math.prod(shape) // 64 * 4)
    return 0


class LiveBytes(TorchDispatchMode):
    """Live tensor bytes over a run and their peak, per named segment of the run.

    Every storage an op creates counts, rounded up to the CUDA allocator's granule, from its
    creation until Python drops it (a weakref finalizer on the storage); views share their
    base's. The peak is taken after each op, while its inputs are still referenced, plus the
    op's own kernel workspace. ``ignore`` storages that exist before the run (weights), ``hold``
    the run's inputs (they count)."""

    def __init__(self):
        super().__init__()
        self.live = 0
        self.peaks: dict[str, int] = {}
        self.at_peak: dict[str, str] = {}  # the op each segment's peak came at, for reading a trace
        self.segment = "run"
        self._known = WeakIdKeyDictionary()

    def _free(self, nbytes: int) -> None:
        self.live -= nbytes

    def _see(self, storage, counted: bool = True) -> None:
        if storage in self._known:
            return
        nbytes = granules(storage.nbytes()) if counted else 0
        self._known[storage] = nbytes
        if nbytes:
            self.live += nbytes
            weakref.finalize(storage, self._free, nbytes)

    def ignore(self, tensors) -> None:
        for tensor in tensors:
            self._see(tensor.untyped_storage(), counted=False)

    def hold(self, *tensors) -> None:
        for tensor in tensors:
            if tensor is not None:
                self._see(tensor.untyped_storage())
        self._record(0)

    def mark(self, segment: str) -> None:
        """Peaks from now on go to ``segment``; it starts at what is live now."""
        self.segment = segment
        self._record(0)

    def _record(self, extra: int, func=None) -> None:
        if self.live + extra > self.peaks.get(self.segment, -1):
            self.peaks[self.segment] = self.live + extra
            self.at_peak[self.segment] = str(func)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        for tensor in tree_leaves(out):
            if isinstance(tensor, torch.Tensor):
                self._see(tensor.untyped_storage())
        self._record(kernel_workspace(func, args), func)
        return out


def _flash_sdpa(query, key, value, attn_mask=None, dropout_p=0.0, is_causal=False, scale=None, enable_gqa=False):
    if enable_gqa and key.shape[-3] != query.shape[-3]:
        repeat = query.shape[-3] // key.shape[-3]
        key, value = key.repeat_interleave(repeat, -3), value.repeat_interleave(repeat, -3)
    return _aten._scaled_dot_product_flash_attention_for_cpu(
        query, key, value, dropout_p, is_causal, attn_mask=attn_mask, scale=scale
    )[0]


class FlashAttention(TorchFunctionMode):
    """``F.scaled_dot_product_attention`` always in the CPU's flash kernel (see the module's
    docstring): no [T, S] matrix, as in CUDA's flash and memory-efficient kernels."""

    def __torch_function__(self, func, types, args=(), kwargs=None):
        if func is torch.nn.functional.scaled_dot_product_attention:
            return _flash_sdpa(*args, **(kwargs or {}))
        return func(*args, **(kwargs or {}))


# --- quantised stand-ins --------------------------------------------------------------------


class Int8Linear(torch.nn.Linear):
    """bitsandbytes' ``Linear8bitLt`` (has_fp16_weights=False, threshold 0) as the engine's
    ``quantize_linears`` leaves it: int8 weight and a float32 scale per output row, run through
    ``MatMul8bitLt`` as on CUDA."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.register_buffer("weight", torch.empty(self.out_features, self.in_features, dtype=torch.int8))
        self.register_buffer("SCB", torch.empty(self.out_features, dtype=torch.float32))
        bias = None if linear.bias is None else torch.nn.Parameter(torch.empty(self.out_features, dtype=compute_dtype),
                                                                   requires_grad=False)  # fmt: skip
        self.register_parameter("bias", bias)

    def forward(self, x):
        from bitsandbytes.autograd._functions import MatMul8bitLt, MatmulLtState

        state = MatmulLtState()
        state.has_fp16_weights, state.CB, state.SCB = False, self.weight, self.SCB
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return MatMul8bitLt.apply(x, self.weight, None, bias, state)


class NF4Linear(torch.nn.Linear):
    """bitsandbytes' ``Linear4bit`` (NF4, 64-weight blocks, double-quantised absmax, uint8
    storage) as ``quantize_linears`` leaves it, run through ``matmul_4bit`` as on CUDA."""

    def __init__(self, linear: torch.nn.Linear, compute_dtype: torch.dtype):
        torch.nn.Module.__init__(self)
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.compute_dtype = compute_dtype
        n = self.in_features * self.out_features
        blocks = -(-n // 64)
        self.register_buffer("weight", torch.empty(-(-n // 2), 1, dtype=torch.uint8))
        self.register_buffer("absmax", torch.empty(blocks, dtype=torch.uint8))
        self.register_buffer("absmax2", torch.empty(-(-blocks // 256), dtype=torch.float32))
        self.register_buffer("code", torch.empty(16, dtype=torch.float32))
        self.register_buffer("code2", torch.empty(256, dtype=torch.float32))
        self.register_buffer("offset", torch.empty((), dtype=torch.float32))
        bias = None if linear.bias is None else torch.nn.Parameter(torch.empty(self.out_features, dtype=compute_dtype),
                                                                   requires_grad=False)  # fmt: skip
        self.register_parameter("bias", bias)

    def forward(self, x):
        import bitsandbytes as bnb
        from bitsandbytes.functional import QuantState

        nested = QuantState(absmax=self.absmax2, code=self.code2, blocksize=256, dtype=torch.float32)
        state = QuantState(absmax=self.absmax, shape=torch.Size((self.out_features, self.in_features)), code=self.code,
                           blocksize=64, quant_type="nf4", dtype=self.compute_dtype, offset=self.offset, state2=nested)  # fmt: skip
        dtype = x.dtype
        bias = None if self.bias is None else self.bias.to(self.compute_dtype)
        return bnb.matmul_4bit(x.to(self.compute_dtype), self.weight.t(), bias=bias, quant_state=state).to(dtype)


def quantize_stand_ins(module: torch.nn.Module, quantize: Quantize, compute_dtype, keep=frozenset()) -> None:
    """``lowvram.quantize_linears`` for a trace: every ``nn.Linear`` under ``module`` (not named in
    ``keep``) becomes its stand-in."""
    quantize = Quantize(quantize)
    if quantize is Quantize.NONE:
        return
    kind = Int8Linear if quantize is Quantize.INT8 else NF4Linear
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is torch.nn.Linear and name not in keep:
                setattr(parent, name, kind(child, compute_dtype))


class AdamW8bit:
    """bitsandbytes' ``AdamW8bit`` for a trace: its state (two uint8 moments with a float32
    absmax per 256 values; float32 moments for tensors under 4096 values) and its fused update op
    (whose fake kernel ships with bitsandbytes; the optimiser itself reads real values to build
    its quantisation maps)."""

    def __init__(self, params):
        self.params = list(params)
        self.state: dict = {}
        for param in self.params:
            if param.numel() < 4096:
                moments = [torch.zeros_like(param, dtype=torch.float32) for _ in range(2)]
                self.state[param] = {"state1": moments[0], "state2": moments[1]}
                continue
            blocks = -(-param.numel() // 256)
            self.state[param] = {
                "state1": torch.zeros_like(param, dtype=torch.uint8), "state2": torch.zeros_like(param, dtype=torch.uint8),
                "absmax1": torch.zeros(blocks), "absmax2": torch.zeros(blocks),
            }  # fmt: skip
        self.qmap1, self.qmap2 = torch.zeros(256), torch.zeros(256)  # shared by every tensor

    def zero_grad(self, set_to_none: bool = True) -> None:
        for param in self.params:
            param.grad = None

    @torch.no_grad()
    def step(self) -> None:
        ops = torch.ops.bitsandbytes
        for param in self.params:
            s = self.state[param]
            if "absmax1" in s:
                ops.optimizer_update_8bit_blockwise("adam", param.grad, param, s["state1"], s["state2"], 0.9, 0.999, 0.0,
                                                    0.0, 1e-8, 1, 1e-4, self.qmap1, self.qmap2, s["absmax1"],
                                                    s["absmax2"], 0.01, 1.0, False)  # fmt: skip
            else:
                ops.optimizer_update_32bit("adam", param.grad, param, s["state1"], s["state2"], None, 0.0, 0.0, 0.9,
                                           0.999, 0.0, 0.0, 1e-8, 0.01, 1, 1e-4, 1.0, False)  # fmt: skip


# --- running a step under the count -----------------------------------------------------------


@contextlib.contextmanager
def materialised(fake: bool):
    """Where a trace runs: under a FakeTensorMode (``fake``) or on real CPU tensors. Yields a
    function that turns a meta module into one of that kind, in place."""
    if not fake:

        def real(module):
            module.to_empty(device="cpu")
            generator = torch.Generator().manual_seed(0)
            with torch.no_grad():
                for tensor in [*module.parameters(), *module.buffers()]:
                    if tensor.dtype.is_floating_point:
                        tensor.copy_(torch.randn(tensor.shape, generator=generator) * 0.02)
                    else:
                        tensor.zero_()
            return module

        yield real
        return
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode(allow_non_fake_inputs=True):

        def to_fake(module):
            return module.to_empty(device="cpu")

        yield to_fake


def random_tensor(*shape: int, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """A tensor of normal draws from a generator of its own (the global RNG stays as it was)."""
    return torch.randn(shape, generator=torch.Generator().manual_seed(0)).to(dtype)


def run_traced(step, weights: list[torch.nn.Module], inputs) -> dict[str, int]:
    """Peaks per segment of ``step(counter)``, the modules' tensors not counted, ``inputs`` held."""
    counter = LiveBytes()
    for module in weights:
        counter.ignore([*module.parameters(), *module.buffers()])
    with FlashAttention(), counter:
        counter.hold(*inputs)
        step(counter)
    return dict(counter.peaks)
