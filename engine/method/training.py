"""Training a mask-aware LoRA adapter on one source video (docs/method.md, "Training").

A sample is one clip with its conditioning and flow-matching target; the trainer draws
``t ~ U(0, 1)``, noises the target latents, and fits the transformer's velocity to
``noise - x0`` under a weighted MSE (the fused kernel in ``framecast.kernels``).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from framecast.common.requests import TrainSettings
from framecast.engine.errors import Cancelled, TrainingDiverged
from framecast.engine.method.sampling import Conditioning


@dataclass
class Sample:
    """One training clip."""

    cond: Conditioning  # negative_prompt_embeds unused
    target_latents: torch.Tensor  # [1, 16, F_lat, h, w] x0
    loss_weight: torch.Tensor  # [1, 1, F_lat, h, w]


@dataclass
class Progress:
    phase: str  # "motion" | "appearance"
    step: int  # 1-based, within the whole run
    total: int
    loss: float
    elapsed_s: float

    @property
    def eta_s(self) -> float:
        return self.elapsed_s / self.step * (self.total - self.step) if self.step else math.nan


@dataclass
class TrainOutcome:
    losses: list[float] = field(default_factory=list)

    @property
    def final_loss(self) -> float:
        tail = self.losses[-10:]
        return sum(tail) / len(tail) if tail else math.nan


def weighted_flow_loss(pred: torch.Tensor, noise: torch.Tensor, x0: torch.Tensor, weight: torch.Tensor,
                       backend: str = "auto") -> torch.Tensor:  # fmt: skip
    """Weighted MSE between the predicted velocity and ``noise - x0``: the fused kernel forms
    the target on the fly and writes d(loss)/d(pred) in the same pass."""
    from framecast.kernels import masked_flow_loss_from_noise

    return masked_flow_loss_from_noise(pred, noise, x0, weight, backend=backend)


def make_optimizer(params: list[torch.Tensor], optimizer: str, settings: TrainSettings, foreach: bool | None = None):
    """AdamW, or bitsandbytes' 8-bit AdamW (``optimizer="adamw8bit"``: moments stored in 8 bits),
    over ``params`` with the settings' learning rate, betas and weight decay. ``foreach``: AdamW's
    multi-tensor update (None: torch's choice, which is multi-tensor on CUDA)."""
    if optimizer == "adamw8bit":
        import bitsandbytes as bnb

        return bnb.optim.AdamW8bit(params, lr=settings.learning_rate, betas=settings.betas,
                                   weight_decay=settings.weight_decay)  # fmt: skip
    return torch.optim.AdamW(params, lr=settings.learning_rate, betas=settings.betas,
                             weight_decay=settings.weight_decay, foreach=foreach)  # fmt: skip


class LoraTrainer:
    """Fits the transformer's active LoRA adapter, phase after phase, resumable: ``run`` a phase's
    steps (each the next sample in turn), as often as needed, and ``snapshot`` / ``restore`` the
    adapter, the optimizer and the random draws between runs. Automatic steps train the motion
    phase in chunks and try the appearance phase after each from a snapshot, so an adapter stopped
    after N motion steps is the one a fixed run of N steps makes, bit for bit.

    Only parameters with ``requires_grad`` (the adapter's) are optimised, with AdamW or
    bitsandbytes' 8-bit AdamW (``optimizer="adamw8bit"``: moments stored in 8 bits). ``total``:
    the steps progress counts to."""

    def __init__(self, transformer, settings: TrainSettings, total: int, on_progress=None, should_cancel=None,
                 optimizer: str = "adamw"):  # fmt: skip
        self.transformer, self.settings, self.total = transformer, settings, total
        self.on_progress, self.should_cancel = on_progress, should_cancel
        self.params = [p for p in transformer.parameters() if p.requires_grad]
        self.optimizer = make_optimizer(self.params, optimizer, settings)
        self.generator = torch.Generator(device="cpu").manual_seed(settings.seed)
        self.outcome = TrainOutcome()
        self.step, self.started = 0, time.perf_counter()

    def __enter__(self) -> LoraTrainer:
        if self.settings.gradient_checkpointing:
            self.transformer.enable_gradient_checkpointing()
        self.transformer.train()
        return self

    def __exit__(self, *exc) -> None:
        self.transformer.eval()
        if self.settings.gradient_checkpointing:
            self.transformer.disable_gradient_checkpointing()
        self.optimizer.zero_grad(set_to_none=True)

    def run(self, phase: str, samples: list[Sample], steps: int, first: int = 0) -> None:
        """``steps`` steps of ``phase``, the i-th on ``samples[(first + i) % len(samples)]``."""
        settings, device = self.settings, samples[0].target_latents.device
        for phase_step in range(first, first + steps):
            if self.should_cancel is not None and self.should_cancel():
                raise Cancelled("job cancelled")
            sample = samples[phase_step % len(samples)]
            loss = _train_step(self.transformer, self.optimizer, self.params, sample, settings, self.generator, device)
            self.step += 1
            if not math.isfinite(loss):
                raise TrainingDiverged(
                    f"training diverged: the loss was {loss} at step {self.step} of {self.total} ({phase} phase), so "
                    f"nothing was stored; try a lower learning_rate than {settings.learning_rate:g}"
                )
            self.outcome.losses.append(loss)
            if self.on_progress is not None:
                self.on_progress(Progress(phase, self.step, self.total, loss, time.perf_counter() - self.started))

    def snapshot(self) -> dict:
        """The adapter's weights, the optimizer's state and the draws' state, copied."""
        import copy

        return {"params": [p.detach().clone() for p in self.params], "step": self.step,
                "optimizer": copy.deepcopy(self.optimizer.state_dict()), "generator": self.generator.get_state(),
                "losses": len(self.outcome.losses)}  # fmt: skip

    def restore(self, snapshot: dict) -> None:
        with torch.no_grad():
            for param, saved in zip(self.params, snapshot["params"]):
                param.copy_(saved)
        self.optimizer.load_state_dict(snapshot["optimizer"])
        self.generator.set_state(snapshot["generator"])
        self.step = snapshot["step"]
        del self.outcome.losses[snapshot["losses"] :]


def train_lora(
    transformer,
    phases: list[tuple[str, list[Sample], int]],
    settings: TrainSettings,
    on_progress: Callable[[Progress], None] | None = None,
    should_cancel: Callable[[], bool] | None = None,
    optimizer: str = "adamw",
) -> TrainOutcome:
    """Fit the transformer's active LoRA adapter: ``phases`` of (name, samples, steps) in order
    (``LoraTrainer``)."""
    total = sum(steps for _, _, steps in phases)
    with LoraTrainer(transformer, settings, total, on_progress, should_cancel, optimizer) as trainer:
        for phase, samples, steps in phases:
            trainer.run(phase, samples, steps)
    return trainer.outcome


def _train_step(transformer, optimizer, params, sample: Sample, settings, generator, device) -> float:
    x0 = sample.target_latents
    t = torch.rand((), generator=generator).item()
    noise = torch.randn(x0.shape, generator=generator, dtype=torch.float32).to(device)
    loss = training_loss(transformer, sample, t, noise)
    value = float(loss.detach())
    if not math.isfinite(value):
        return value  # no update from a non-finite loss: the caller stops the training
    backpropagate(optimizer, loss)
    apply_gradients(optimizer, params, settings.grad_clip)
    return value


# A step's three parts, which the memory model traces one by one (``memory.phases``).


def training_loss(transformer, sample: Sample, t: float, noise: torch.Tensor, backend: str = "auto") -> torch.Tensor:
    """The forward pass of a step at time ``t`` in [0, 1]: the target latents noised with ``noise``
    [1, 16, F_lat, h, w], the transformer's velocity there, and its weighted loss (a 0-dim tensor)."""
    x0 = sample.target_latents
    noisy = (1.0 - t) * x0 + t * noise  # x_t on the straight path from data (t=0) to noise (t=1)
    model_input = torch.cat([noisy, sample.cond.transformer_condition], dim=1).to(transformer.dtype)
    timestep = torch.full((1,), t * 1000.0, device=x0.device)
    velocity = transformer(
        hidden_states=model_input,
        timestep=timestep,
        encoder_hidden_states=sample.cond.prompt_embeds,
        encoder_hidden_states_image=sample.cond.image_embeds,
        return_dict=False,
    )[0]
    return weighted_flow_loss(velocity, noise, x0, sample.loss_weight, backend)


def backpropagate(optimizer, loss: torch.Tensor) -> None:
    """The backward pass: the adapter's gradients of ``loss``, the last step's dropped first."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()


def apply_gradients(optimizer, params, grad_clip: float) -> None:
    """The update: gradients clipped to a total norm of ``grad_clip`` (0: not clipped), then the
    optimiser's step."""
    if grad_clip > 0:
        torch.nn.utils.clip_grad_norm_(params, grad_clip)
    optimizer.step()
