"""model.arch = fixed_point: its two training phases, inside the same loop, schedule and checkpoints as any run
(the loop reaches them through the `FixedPoint` objective, train/objectives.py).

Phase 1 (the first model.fixed_point_phase1_fraction of training, by steps or by the clock) trains the embedding
and the context updater so that passes agree: pass 1 observes, each later pass is pulled towards the one before
it, until every token's context moves less than the threshold (model/fixed_point.py). Each logged row holds the
share of tokens that settled and the mean passes they took; the design calls phase 1 a success at 95% settled.
Phase 2 freezes the embedding and the updater, solves the contexts of the training windows once (kept in the run
dir, keyed by data and weights, so a resume reads them back) and trains the token head alone on them, on the
assistant tokens only for chat data (the windows' targets carry the loss mask). Each phase runs its own warmup
and cosine decay of the learning rate.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cognimamba.config.schema import Config, TrainConfig
from cognimamba.data.data_dir import DataDir
from cognimamba.data.loader import TokenWindows
from cognimamba.errors import CogniError
from cognimamba.model.fixed_point import Convergence, FixedPointModel
from cognimamba.model.loss import IGNORE_INDEX
from cognimamba.train.context_cache import CachedContexts, cached_contexts
from cognimamba.train.display import TrainingDisplay
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.loggers import MetricsLog
from cognimamba.train.options import TrainOptions
from cognimamba.train.schedule import SchedulePosition
from cognimamba.train.step import StepLoss

SUCCESS_RATE = 0.95  # the design's bar for phase 1: this share of tokens settled under the threshold


class FixedPointPhases:
    """Which phase training is in, the phase-2 contexts, and the last step's convergence figures."""

    def __init__(self, model: FixedPointModel, config: Config, run: Path, data: DataDir, windows: TokenWindows,
                 device: torch.device, is_main: bool) -> None:
        self.model, self.config, self.run, self.data, self.windows = model, config, run, data, windows
        self.device, self.is_main = device, is_main
        self.fraction = config.model.fixed_point_phase1_fraction
        self.phase = 1
        self.contexts: CachedContexts | None = None
        self.convergence_rate: float | None = None  # of the last phase-1 step
        self.mean_iterations = 0.0
        self.fixed_point_loss = 0.0

    def begin_step(self, step: int, progress: float, optimizer: torch.optim.Optimizer, display: TrainingDisplay,
                   metrics: MetricsLog) -> bool:
        """Moves to phase 2 when training has come that far (also right after resuming past the switch); True
        when it did so now."""
        if self.phase == 1 and progress >= self.fraction:
            self.start_phase2(step, optimizer, display, metrics)
            return True
        return False

    def schedule_position(self, step: int, progress: float) -> SchedulePosition:
        """(step, progress) within the current phase, for its own warmup and decay."""
        if self.phase == 1:
            return SchedulePosition(step, progress / self.fraction if self.fraction > 0 else 1.0)
        assert self.contexts is not None
        span = 1.0 - self.fraction
        return SchedulePosition(step - self.contexts.first_step,
                                (progress - self.fraction) / span if span > 0 else 1.0)

    def start_phase2(self, step: int, optimizer: torch.optim.Optimizer, display: TrainingDisplay,
                     metrics: MetricsLog) -> None:
        for parameter in self.model.context_parameters():
            parameter.requires_grad_(False)
        optimizer.zero_grad(set_to_none=True)
        display.message(f"phase 2/2 from step {step}: contexts frozen; solving them for the training windows")
        seq_len = self.config.model.max_seq_len
        self.contexts, reused = cached_contexts(self.model, self.data, self.windows, self.run, seq_len, step,
                                                self.device, self.is_main)
        self.phase = 2
        cached = self.contexts
        success = cached.convergence_rate >= SUCCESS_RATE
        metrics.write({"step": step, "phase": 2, "phase1_convergence_rate": cached.convergence_rate,
                       "phase1_mean_iterations": cached.mean_iterations, "phase1_success": success,
                       "context_cache": "reused" if reused else "solved", "cached_tokens": cached.tokens})
        verdict = "success" if success else f"below the {SUCCESS_RATE:.0%} the design asks of phase 1"
        left_out = f"; {cached.left_out} windows left out (cache cap)" if cached.left_out else ""
        display.message(f"phase 1: {cached.convergence_rate:.1%} of {cached.tokens:,} training tokens settled "
                        f"within {self.config.model.fixed_point_max_iterations} passes (mean "
                        f"{cached.mean_iterations:.1f}): {verdict}; contexts {'read back' if reused else 'cached'}"
                        f"{left_out}")

    def step_loss(self, step: int, seq_len: int, settings: TrainConfig, autocast: contextlib.AbstractContextManager,
                  scaler: torch.amp.GradScaler | None) -> StepLoss:
        """Gradients of one optimizer step of the current phase."""
        if self.phase == 1:
            return self.phase1_step(step, seq_len, settings, autocast, scaler)
        return self.phase2_step(step, settings, autocast, scaler)

    def phase1_step(self, step: int, seq_len: int, settings: TrainConfig, autocast: contextlib.AbstractContextManager,
                    scaler: torch.amp.GradScaler | None) -> StepLoss:
        """Teacher passes on each micro-batch, each pass's backward before the next pass (they share no graph)."""
        objective, fixed_point_loss, passes = 0.0, 0.0, 0
        settled = iterations = tokens = 0
        threshold = self.config.model.fixed_point_threshold
        for micro in range(settings.grad_accum_steps):
            inputs, _ = self.windows.random_batch(step, micro, settings.micro_batch_size, seq_len, self.device)
            convergence = Convergence.start(inputs.shape, self.device)
            with autocast:
                for teacher in self.model.teacher_passes(inputs):
                    loss = teacher.loss / settings.grad_accum_steps
                    (scaler.scale(loss) if scaler else loss).backward()
                    objective += float(loss.detach())
                    fixed_point_loss += teacher.fixed_point_loss
                    passes += 1
                    convergence.observe(teacher.pass_index, teacher.change, threshold)
            settled += int(convergence.converged.sum())
            iterations += int(convergence.iterations.sum())
            tokens += inputs.numel()
        self.convergence_rate, self.mean_iterations = settled / tokens, iterations / tokens
        self.fixed_point_loss = fixed_point_loss / max(passes, 1)
        return StepLoss(torch.tensor(objective), torch.tensor(1))

    def phase2_step(self, step: int, settings: TrainConfig, autocast: contextlib.AbstractContextManager,
                    scaler: torch.amp.GradScaler | None) -> StepLoss:
        """Cross-entropy of the head on cached contexts; mean over the step's trained targets, as train.step."""
        assert self.contexts is not None
        batches = [self.contexts.batch(settings.seed, step, micro, settings.micro_batch_size, self.device)
                   for micro in range(settings.grad_accum_steps)]
        tokens = sum((targets != IGNORE_INDEX).sum() for _, _, targets in batches)
        assert isinstance(tokens, torch.Tensor)
        loss_sum = torch.zeros((), device=self.device)
        for contexts, inputs, targets in batches:
            with autocast:
                logits = self.model.head_logits(contexts, inputs)
                batch_sum = F.cross_entropy(logits.float().view(-1, logits.size(-1)), targets.view(-1),
                                            ignore_index=IGNORE_INDEX, reduction="sum")
            loss = batch_sum / tokens.clamp(min=1)
            (scaler.scale(loss) if scaler else loss).backward()
            loss_sum += batch_sum.detach()
        return StepLoss(loss_sum, tokens)

    def label(self) -> str:
        """The phase as the live view shows it."""
        if self.phase == 2:
            return "2/2 token head (contexts frozen)"
        if self.convergence_rate is None:
            return "1/2 contexts"
        return (f"1/2 contexts: {self.convergence_rate:.1%} settled, {self.mean_iterations:.1f} passes "
                f"(success at {SUCCESS_RATE:.0%})")

    def row(self) -> dict[str, Any]:
        """The phase's figures for a metrics row."""
        if self.phase == 2 or self.convergence_rate is None:
            return {"phase": self.phase}
        return {"phase": 1, "convergence_rate": self.convergence_rate, "mean_iterations": self.mean_iterations,
                "fixed_point_loss": self.fixed_point_loss}


def phases_for(options: TrainOptions, model: torch.nn.Module, data: DataDir, windows: TokenWindows,
               device: torch.device, context: DistributedContext) -> FixedPointPhases | None:
    """The phases of a fixed-point run (None for a transformer), or one line on what it cannot do."""
    config = options.config
    if not config.model.is_fixed_point:
        return None
    if options.lora is not None:
        raise CogniError("--lora: model.arch = fixed_point trains its own two phases; LoRA adapters are for "
                         "transformer runs")
    if context.enabled:
        raise CogniError("model.arch = fixed_point trains in one process; run `cogni train` without torchrun")
    assert isinstance(model, FixedPointModel)
    return FixedPointPhases(model, config, Path(options.out), data, windows, device, context.is_main)
