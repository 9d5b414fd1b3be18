"""The memory model: the 14B architecture traced on fake tensors against the H200 rows, its fits
against direct traces, the fake trace against a real CPU run, and sanity across configurations."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch
from torch.utils._python_dispatch import TorchDispatchMode

from framecast.engine.config import GiB
from framecast.engine.memory import model as M
from framecast.engine.memory import phases as P
from framecast.engine.memory import trace as T
from framecast.engine.memory.lowvram import quantize_linears
from framecast.engine.memory.model import MemoryModel, Workload
from framecast.engine.memory.sizes import module_bytes, quantized_linear_bytes, weight_bytes
from framecast.engine.toy.architectures import build_pipeline, preset

logging.getLogger("bitsandbytes").setLevel(logging.ERROR)
RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results" / "clip.jsonl"
QUANTIZE, OFFLOAD = ("none", "int8", "nf4"), ("none", "model", "group")


def h200_row() -> dict:
    """The latest H200 row of the 14B at 49 frames of 832x480, bf16, all on the device."""
    rows = [json.loads(line) for line in RESULTS.read_text().splitlines()]
    return [r for r in rows if r["device"] == "NVIDIA H200" and r["config"].startswith("none/none/w49")][-1]


@pytest.fixture(scope="module")
def pipe_14b():
    """Wan2.1-I2V-14B-480P's architecture on the meta device, as bench_clip.py builds it (bf16)."""
    return build_pipeline(preset("wan2.1-i2v-14b"), device="meta", dtype=torch.bfloat16)


@pytest.fixture(scope="module")
def model_14b(pipe_14b):
    return MemoryModel(pipe_14b)


@pytest.fixture(scope="module")
def table(model_14b):
    """Every configuration of the docs' table: quantize x offload x sample/train, 49 and 13 frames
    of 832x480, with the server's rank-64 slot."""
    return {(q, o, training, frames): model_14b.predict(Workload(frames, 480, 832, training=training, quantize=q,
                                                                 offload=o, slot_rank=64))
            for q in QUANTIZE for o in OFFLOAD for training in (False, True) for frames in (49, 13)}  # fmt: skip


def test_the_model_reproduces_the_h200_rows(pipe_14b, model_14b):
    """What ran (bench_clip.py's baseline): everything on the device, no adapter activated (so no
    slot: the row's transformer weights are the bare model's), guidance 5, then a rank-16 training
    with checkpointing and AdamW. Allocated and reserved peaks within 10%, no fitted constant."""
    row = h200_row()
    assert module_bytes(pipe_14b.transformer) / GiB == pytest.approx(row["weights_gib"], rel=1e-9)
    for training, allocated, reserved in ((False, "peak_alloc_gib", "peak_reserved_gib"),
                                          (True, "train_peak_alloc_gib", "train_peak_reserved_gib")):  # fmt: skip
        plan = model_14b.predict(Workload(49, 480, 832, training=training, rank=16))
        assert plan.allocated_bytes / GiB == pytest.approx(row[allocated], rel=0.10), (training, plan)
        assert plan.reserved_bytes / GiB == pytest.approx(row[reserved], rel=0.10), (training, plan)
        # Where the peaks fall: the streamed VAE decode at full size; the backward pass of the last block.
        assert plan.phase == ("train_step" if training else "vae_decode")
        # The planner's figure (reserved) with the server's slot: a budget it accepts holds what ran.
        served = model_14b.predict(Workload(49, 480, 832, training=training, rank=16, slot_rank=64))
        assert row[allocated] <= served.peak_bytes / GiB <= 1.1 * row[allocated]


def test_depth_and_token_fits_equal_direct_traces(model_14b):
    """The transformer is traced at 2 and 3 blocks and two token counts; a direct trace at another
    depth and at the measured clip's 20280 tokens gives the same peaks."""
    transformer = model_14b.components["transformer"]
    grid = (13, 60, 104)  # 49 frames of 832x480
    tokens = model_14b.tokens(49, 480, 832)
    assert tokens == 13 * 30 * 52
    for settings, depth in ((P.TransformerTrace(False, slot_rank=64), 5), (P.TransformerTrace(True), 5)):
        direct = P.trace_transformer(transformer, settings, depth, grid, model_14b.image_tokens, model_14b.image_dim)
        layers, model_14b.layers = model_14b.layers, depth
        try:
            fitted = model_14b.transformer_peaks(settings, tokens)
        finally:
            model_14b.layers = layers
        for segment, value in fitted.items():
            assert value == pytest.approx(direct[segment], rel=0.005), (settings, segment)


def test_vae_fits_equal_direct_traces(model_14b):
    """The VAE is traced at 256x256 and 128x256; the 49-frame 832x480 encode and decode traced
    directly agree with the fit."""
    for kind in ("encode", "decode"):
        direct = max(P.trace_vae(model_14b.components["vae"], kind, 49, 480, 832).values())
        assert model_14b._vae(kind, 49, 480, 832, tiling=False) == pytest.approx(direct, rel=0.01), kind


def test_plans_after_the_first_trace_trace_nothing(model_14b, table):
    """Traced figures are cached per architecture: other sizes and clip lengths of a traced setting
    are arithmetic (the VAE traces once more for clips under 13 frames, its causal cache filling)."""
    before = len(M._traces)
    for frames, height, width in ((81, 480, 832), (17, 720, 1280), (33, 480, 480), (13, 64, 64)):
        for training in (False, True):
            model_14b.predict(Workload(frames, height, width, training, quantize="nf4", offload="group", slot_rank=64))
    assert len(M._traces) == before


def test_every_configuration_is_sane(model_14b, table):
    weights = {q: model_14b.weights(q) for q in QUANTIZE}
    for name in ("transformer", "text_encoder"):
        assert weights["nf4"][name] < weights["int8"][name] < weights["none"][name]
    for o in OFFLOAD:
        for frames in (49, 13):
            sample = {q: table[q, o, False, frames].allocated_bytes for q in QUANTIZE}
            assert sample["nf4"] <= sample["int8"] <= sample["none"], (o, frames, sample)
            train = {q: table[q, o, True, frames].allocated_bytes for q in QUANTIZE}
            assert train["nf4"] < train["none"], (o, frames, train)
            # bitsandbytes' int8 matmul keeps its input on the autograd context, which gradient
            # checkpointing does not reach: every block's int8 inputs stay until the backward pass
            # (test_int8_linears_keep_their_inputs_through_checkpointing). Above bf16 at 49 frames.
            if frames == 49:
                assert train["int8"] > train["none"], (o, train)
    for q in QUANTIZE:
        for training in (False, True):
            for frames in (49, 13):
                peaks = {o: table[q, o, training, frames].allocated_bytes for o in OFFLOAD}
                assert peaks["group"] <= peaks["model"] < peaks["none"], (q, training, frames, peaks)
            for o in OFFLOAD:
                assert table[q, o, training, 13].allocated_bytes <= table[q, o, training, 49].allocated_bytes
        for o in OFFLOAD:
            for frames in (49, 13):
                sampled, trained = table[q, o, False, frames], table[q, o, True, frames]
                assert trained.phases["train_step"] > sampled.phases["denoise"], (q, o, frames)
                assert trained.host_bytes > sampled.host_bytes
    for plan in table.values():
        assert 0 < plan.activation_bytes < plan.allocated_bytes <= plan.reserved_bytes
        assert plan.allocated_bytes == max(plan.phases.values())
    # Offloading moves weights to the host: group offload's pinned copies round up per tensor.
    assert table["none", "none", False, 49].host_bytes < table["none", "model", False, 49].host_bytes
    assert table["none", "model", False, 49].host_bytes < table["none", "group", False, 49].host_bytes


def test_fake_traces_equal_real_cpu_runs():
    """The same steps on real CPU tensors of the tiny model, counted the same way, peak where the
    fake traces say, to within 1% (they agree exactly here)."""
    pipe = build_pipeline(preset("tiny"))
    model = MemoryModel(pipe)
    c = model.components
    settings = [P.TransformerTrace(False, slot_rank=8), P.TransformerTrace(True), P.TransformerTrace(True, quantize="int8"),
                P.TransformerTrace(True, quantize="nf4", optimizer="adamw8bit"),
                P.TransformerTrace(False, quantize="nf4", slot_rank=8)]  # fmt: skip
    runs = [lambda fake, s=s: P.trace_transformer(c["transformer"], s, 2, (3, 8, 8), model.image_tokens,
                                                  model.image_dim, fake=fake) for s in settings]  # fmt: skip
    runs += [lambda fake, k=k: P.trace_vae(c["vae"], k, 9, 64, 64, fake=fake) for k in ("encode", "decode")]
    runs += [lambda fake: P.trace_text_encoder(c["text_encoder"], "int8", 2, fake=fake),
             lambda fake: P.trace_image_encoder(c["image_encoder"], 2, model.image_size, fake=fake)]  # fmt: skip
    for run in runs:
        fake, real = run(True), run(False)
        assert fake.keys() == real.keys()
        for segment in fake:
            assert fake[segment] == pytest.approx(real[segment], rel=0.01), segment


def test_live_bytes_counts_what_is_alive():
    x = torch.empty(1000, 1000)  # 4 MB, not counted: it exists before the count
    with T.LiveBytes() as counter:
        a = x * 2
        b = a + 1
        del a
        c = b.t().contiguous()
        view = c[:10]
        assert counter.live == 2 * T.granules(4_000_000)
        del b, c
        assert counter.live == T.granules(4_000_000)  # the view keeps its base's storage
        del view
    assert counter.live == 0 and counter.peaks["run"] == 2 * T.granules(4_000_000)


def test_attention_is_traced_without_a_score_matrix():
    """The CPU may pick the math kernel, which holds [B, H, T, T] scores; traces take flash's memory."""
    from torch._subclasses.fake_tensor import FakeTensorMode

    with FakeTensorMode():
        q = torch.empty(1, 8, 8192, 64, dtype=torch.bfloat16, requires_grad=True)
        counter = T.LiveBytes()
        counter.hold(q)
        with T.FlashAttention(), counter:
            out = torch.nn.functional.scaled_dot_product_attention(q, q, q, attn_mask=None)
            out.sum().backward()
    scores = 8 * 8192 * 8192 * 2
    assert max(counter.peaks.values()) < scores / 4  # q, out, grads, lse, flash's dq accumulator


@pytest.mark.parametrize("quantize", ["int8", "nf4"])
def test_quantized_bytes_are_what_bitsandbytes_stores(quantize):
    layer = torch.nn.Sequential(torch.nn.Linear(320, 136), torch.nn.Linear(136, 40, bias=False))
    quantize_linears(layer, quantize, torch.float32, "cpu")
    for linear in layer:
        stored = linear.weight.numel() * linear.weight.element_size()
        if quantize == "int8":
            stored += linear.weight.SCB.numel() * 4
        else:
            state = linear.weight.quant_state
            stored += sum(t.numel() * t.element_size() for t in (state.absmax, state.code, state.offset.reshape(1),
                                                                 state.state2.absmax, state.state2.code))  # fmt: skip
        assert quantized_linear_bytes(linear.out_features, linear.in_features, quantize) == stored
    # Counted from the quantised modules themselves, as from the original ones.
    assert weight_bytes(layer, quantize, torch.float32, quantized="") == sum(
        quantized_linear_bytes(m.out_features, m.in_features, quantize) + (m.out_features * 4 if m.bias is not None else 0)
        for m in layer
    )  # fmt: skip


def test_weights_count_tied_embeddings_once(pipe_14b, model_14b):
    weights = model_14b.weights("none")
    for name in ("transformer", "text_encoder", "image_encoder", "vae"):
        assert weights[name] == module_bytes(getattr(pipe_14b, name)), name


def test_int8_linears_keep_their_inputs_through_checkpointing():
    """The engine's own path (quantize_linears, a float32 LoRA, gradient checkpointing) on real CPU
    tensors: when the forward pass ends, int8 layers still hold their inputs (bitsandbytes keeps
    them on the autograd context, out of checkpointing's reach); bf16 and NF4 layers do not. The
    memory model's int8 training figures follow from this."""
    from peft import LoraConfig

    from framecast.engine.adapters.formats import TRAINING_PATTERN
    from framecast.engine.toy.architectures import build_transformer

    held = {}
    for quantize in ("none", "int8", "nf4"):
        transformer = build_transformer(preset("tiny").with_layers(4))
        quantize_linears(transformer.blocks, quantize, torch.float32, "cpu")
        transformer.add_adapter(LoraConfig(r=4, lora_alpha=4, target_modules=TRAINING_PATTERN), adapter_name="x")
        for name, param in transformer.named_parameters():
            param.requires_grad_(".x." in name)
        transformer.enable_gradient_checkpointing()
        transformer.train()
        generator = torch.Generator().manual_seed(0)
        inputs = dict(hidden_states=torch.randn(1, 36, 3, 16, 16, generator=generator), timestep=torch.tensor([500.0]),
                      encoder_hidden_states=torch.randn(1, 64, 32, generator=generator),
                      encoder_hidden_states_image=torch.randn(1, 17, 32, generator=generator))  # fmt: skip
        with T.LiveBytes() as counter:
            out = transformer(**inputs, return_dict=False)[0]
            held[quantize] = counter.live
            out.sum().backward()
    assert held["nf4"] <= 1.1 * held["none"]
    assert held["int8"] > 1.5 * held["none"]


def test_tracing_leaves_global_state_as_it_was():
    """A Plan request may trace beside a running job: no draw from the global RNG, no change of
    the default dtype or of grad mode (a tiny architecture of its own, so that it traces here)."""
    pipe = build_pipeline(preset("tiny", ffn_dim=40))
    model = MemoryModel(pipe)
    rng, dtype = torch.get_rng_state(), torch.get_default_dtype()
    model.predict(Workload(9, 64, 64, training=True, quantize="nf4", slot_rank=8, optimizer="adamw8bit"))
    model.predict(Workload(9, 64, 64, quantize="int8", slot_rank=8, vae_tiling=True))
    assert torch.equal(rng, torch.get_rng_state())
    assert torch.get_default_dtype() == dtype and torch.is_grad_enabled()


class _Ops(TorchDispatchMode):
    """The ATen ops run while ``recording``, by name."""

    def __init__(self):
        super().__init__()
        self.names: list[str] = []
        self.recording = True

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.recording:
            self.names.append(str(func))
        return func(*args, **(kwargs or {}))


def test_the_trace_runs_the_steps_the_engine_runs(monkeypatch):
    """On the tiny model's real CPU tensors, a traced training step runs the ops of the engine's
    own training._train_step, in order (less its draw of t and its reading of the loss on the host),
    and a traced denoising step those of an iteration of sampling.denoise's loop; each peaks as
    the engine's does. A step of the engine's changed without the trace fails here."""
    from framecast.common.requests import TrainSettings
    from framecast.engine.method import training
    from framecast.engine.method.sampling import denoise

    monkeypatch.delenv("TRITON_INTERPRET", raising=False)  # the loss's PyTorch reference, as traced
    pipe = build_pipeline(preset("tiny"))
    model = MemoryModel(pipe)
    component = model.components["transformer"]

    def run(fn, weights, inputs):
        """fn(counter, ops)'s ops and peak, counted as run_traced counts a trace."""
        ops, counter = _Ops(), T.LiveBytes()
        counter.ignore([t for module in weights for t in (*module.parameters(), *module.buffers())])
        with T.FlashAttention(), ops, counter:
            counter.hold(*inputs)
            fn(counter, ops)
        return ops.names, max(counter.peaks.values())

    # Training: the trace's step and the engine's, each from the second step on.
    trace = P.TransformerTrace(True)
    transformer, names = P.traced_transformer(component, trace, 2)
    with T.materialised(fake=False) as make:
        transformer = make(transformer)
    params = dict(transformer.named_parameters())
    trainable = [params[name] for name in names]
    sample = P.step_inputs(transformer.config, trace, (3, 8, 8), model.image_tokens, model.image_dim, model.dtype)
    inputs = [sample.target_latents, sample.loss_weight, *vars(sample.cond).values()]
    step, state = P.training_trace(transformer, trainable, sample)
    traced, traced_peak = run(lambda counter, ops: step(counter), [transformer], inputs + state)
    settings, generator = TrainSettings(), torch.Generator().manual_seed(0)
    optimizer = training.make_optimizer(trainable, "adamw", settings, foreach=True)
    training._train_step(transformer, optimizer, trainable, sample, settings, generator, "cpu")
    state = [t for s in optimizer.state.values() for t in s.values() if t.dim()]
    engine, engine_peak = run(lambda counter, ops: training._train_step(transformer, optimizer, trainable, sample,
                                                                        settings, generator, "cpu"),
                              [transformer], inputs + state)  # fmt: skip
    host_only = ("aten.rand.", "aten._local_scalar_dense.", "aten.detach.")  # t's draw; the loss read on the host
    engine = [name for name in engine if not name.startswith(host_only)]
    assert [name for name in traced if not name.startswith(host_only)] == engine
    assert len(engine) > 500 and "aten.mm.default" in engine and "aten._foreach_add_.Scalar" in engine
    assert traced_peak == pytest.approx(engine_peak, abs=2 * T.GRANULE)

    # Denoising: the trace's first step and the engine's second (the first finds its index by value).
    trace = P.TransformerTrace(False, slot_rank=8)
    transformer, _ = P.traced_transformer(component, trace, 2)
    scheduler = P.first_step_scheduler(pipe.scheduler)
    with T.materialised(fake=False) as make:
        transformer = make(transformer)
    sample = P.step_inputs(transformer.config, trace, (3, 8, 8), model.image_tokens, model.image_dim, model.dtype)
    step, held = P.denoising_trace(transformer, sample, scheduler)
    traced, traced_peak = run(lambda counter, ops: step(counter), [transformer],
                              [sample.target_latents, *vars(sample.cond).values(), *held])  # fmt: skip

    class Stop(Exception):
        pass

    def second_step(counter, ops):
        ops.recording = False

        def on_step(done, total):
            if done == 2:
                raise Stop
            ops.recording, counter.peaks = True, {}

        engine_pipe = SimpleNamespace(transformer=transformer, scheduler=P.first_step_scheduler(pipe.scheduler))
        with pytest.raises(Stop):
            denoise(engine_pipe, sample.cond, 0, P.TRACED_SAMPLER, on_step)

    engine, engine_peak = run(second_step, [transformer], [*vars(sample.cond).values()])
    assert traced == engine
    assert len(engine) > 100 and traced.count("aten.mm.default") == engine.count("aten.mm.default")
    assert traced_peak == pytest.approx(engine_peak, abs=2 * T.GRANULE)
