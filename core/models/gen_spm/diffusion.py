"""DDPM training noise and DDIM sampling with classifier-free guidance, for the generation SPM.

- Forward process and epsilon-prediction loss: Ho et al., "Denoising Diffusion Probabilistic Models" (NeurIPS
  2020), with their linear betas from 1e-4 to 0.02 over T = 1000 steps.
- Sampling: Song et al., "Denoising Diffusion Implicit Models" (ICLR 2021), eq. 12, on a sub-sequence of steps.
- Guidance: Ho & Salimans, "Classifier-Free Diffusion Guidance" (2022): the condition is dropped in training
  with probability ``label_drop``; sampling uses ``eps = (1 + w) eps(x, c) - w eps(x, dropped)``, where what a
  dropped row loses is the model's business (the generation SPM: its label, and with ``guide_support`` its
  support too).

Settings follow the SPM authors' generation config (``config/generation/cifar_ddpm.yaml``: 50 DDIM steps,
guidance 0.3, predicted x0 clipped to [-1, 1]). Their DDIM schedule has alpha_bar_0 = 1 - beta_1; here
alpha_bar_0 = 1 (the last DDIM step lands on a clean image), as in Song et al.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from core.models.base import CancelToken, Progress, no_progress

# eps_fn(x_t, t, drop): the network's noise prediction for a batch; ``drop`` marks rows whose label is dropped
EpsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


@dataclass(frozen=True)
class DiffusionConfig:
    """Noise schedule, guidance and sampler settings."""

    timesteps: int = 1000  # T, as DDPM and the reference
    beta_start: float = 1e-4  # linear betas, as DDPM and the reference
    beta_end: float = 0.02
    label_drop: float = 0.1  # training probability of dropping the label (classifier-free guidance; reference 0.1)
    guidance: float = 0.3  # w in (1 + w) eps(y) - w eps(no label) (reference guide_w)
    sample_steps: int = 50  # DDIM steps (reference)
    eta: float = 0.0  # DDIM stochasticity; 0: the image is a function of the starting noise (reference)
    clip_x0: bool = True  # clip the predicted clean image to [-1, 1] at every step (reference)

    def __post_init__(self) -> None:
        if not 0 < self.beta_start < self.beta_end < 1:
            raise ValueError("betas must satisfy 0 < beta_start < beta_end < 1")
        if not 1 <= self.sample_steps <= self.timesteps:
            raise ValueError(f"sample_steps must lie in 1..{self.timesteps}")


class Diffusion:
    """The schedule's alpha_bar_t for t = 0..T (alpha_bar_0 = 1: the clean image) and its two uses."""

    def __init__(self, config: DiffusionConfig):
        self.config = config
        betas = torch.linspace(config.beta_start, config.beta_end, config.timesteps, dtype=torch.float64)
        self.alpha_bar = torch.cat([torch.ones(1, dtype=torch.float64), torch.cumprod(1 - betas, 0)]).float()

    def noised(self, x0: torch.Tensor, t: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
        """x_t = sqrt(alpha_bar_t) x0 + sqrt(1 - alpha_bar_t) eps (DDPM eq. 4)."""
        ab = self.alpha_bar.to(x0.device)[t].view(-1, *([1] * (x0.dim() - 1)))
        return ab.sqrt() * x0 + (1 - ab).sqrt() * eps

    def random_steps(self, n: int, device: torch.device, up_to: float = 1.0) -> torch.Tensor:
        """t ~ U{1, ..., up_to * T} for training."""
        top = max(1, int(round(up_to * self.config.timesteps)))
        return torch.randint(1, top + 1, (n,)).to(device)

    def ddim_times(self, steps: int) -> list[int]:
        """The reference's DDIM grid, e.g. 981, 961, ..., 1, then 0 for T = 1000 and 50 steps."""
        stride = max(self.config.timesteps // steps, 1)
        return list(reversed(range(1, self.config.timesteps + 1, stride)))[:steps] + [0]

    @torch.no_grad()
    def sample(self, eps_fn: EpsFn, x_t: torch.Tensor, generator: torch.Generator, steps: int | None = None,
               guidance: float | None = None, eta: float | None = None, progress: Progress = no_progress,
               cancel: CancelToken | None = None, label: str = "sampling") -> torch.Tensor:
        """DDIM from the starting noise ``x_t`` to images in [-1, 1]. With ``eta`` > 0 the per-step noise comes
        from ``generator`` (a CPU generator), so the same seed gives the same images on any device."""
        cfg = self.config
        steps = steps or cfg.sample_steps
        w = cfg.guidance if guidance is None else guidance
        eta = cfg.eta if eta is None else eta
        ab = self.alpha_bar.to(x_t.device)
        n = len(x_t)
        drop = torch.cat([torch.zeros(n, dtype=torch.bool), torch.ones(n, dtype=torch.bool)]).to(x_t.device)
        times = self.ddim_times(steps)
        for i, (t, t_next) in enumerate(zip(times[:-1], times[1:])):
            if cancel is not None:
                cancel.check()
            t_batch = torch.full((n,), t, dtype=torch.long, device=x_t.device)
            if w:
                eps_both = eps_fn(torch.cat([x_t, x_t]), torch.cat([t_batch, t_batch]), drop)
                eps = (1 + w) * eps_both[:n] - w * eps_both[n:]
            else:
                eps = eps_fn(x_t, t_batch, drop[:n])
            a, a_next = ab[t], ab[t_next]
            x0 = (x_t - (1 - a).sqrt() * eps) / a.sqrt()
            if cfg.clip_x0:
                x0 = x0.clamp(-1, 1)
                eps = (x_t - a.sqrt() * x0) / (1 - a).sqrt()
            sigma = eta * ((1 - a_next) / (1 - a) * (1 - a / a_next)).sqrt()
            x_t = a_next.sqrt() * x0 + (1 - a_next - sigma ** 2).clamp(min=0).sqrt() * eps
            if eta and t_next > 0:
                x_t = x_t + sigma * torch.randn(x_t.shape, generator=generator).to(x_t.device)
            progress((i + 1) / (len(times) - 1), f"{label}: DDIM step {i + 1}/{len(times) - 1}")
        return x_t
