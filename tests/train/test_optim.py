"""train.optimizer: AdamW, or Muon for the hidden matrices with AdamW for the rest, as one optimizer."""

from __future__ import annotations

import shutil
from dataclasses import replace
from pathlib import Path

import pytest
import torch
from rich.console import Console
from safetensors.torch import load_file

from cognimamba.errors import CogniError
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs.checkpoints import latest_checkpoint
from cognimamba.runs.lora import LoraSettings, apply_lora
from cognimamba.runs.metrics import read_metrics
from cognimamba.train import optim
from cognimamba.train.distributed import DistributedContext
from cognimamba.train.entry import TrainOptions, train
from cognimamba.train.muon import Muon, newton_schulz
from cognimamba.train.optim import CombinedOptimizer, build_optimizer, newton_schulz_dtype, set_learning_rate
from cognimamba.train.step import SINGLE_PROCESS, accumulate_gradients
from tests.conftest import tiny_config
from tests.train.test_step import PLAIN, chat_like_batch, fresh_model
from tests.train.two_ranks import run_on_two_ranks

CPU = torch.device("cpu")
MUON = ("train.optimizer=muon", "train.muon_lr=0.01", "train.lr=3e-3")


def tiny_model(*settings: str) -> LanguageModel:
    torch.manual_seed(0)
    return LanguageModel(replace(tiny_config(*settings).model, vocab_size=128))


def group_of(optimizer: CombinedOptimizer) -> dict[int, str]:
    """Which part (muon, adamw) holds each parameter, checking none is held twice."""
    owner: dict[int, str] = {}
    for name, part in optimizer.parts.items():
        for group in part.param_groups:
            for param in group["params"]:
                assert id(param) not in owner, "a parameter is in two groups"
                owner[id(param)] = name
    return owner


def test_adamw_is_the_default() -> None:
    optimizer = build_optimizer(tiny_model(), tiny_config().train, CPU)
    assert isinstance(optimizer, torch.optim.AdamW)
    assert [group["weight_decay"] for group in optimizer.param_groups] == [0.1, 0.0]


@pytest.mark.parametrize("shape", [(), ("model.tie_embeddings=false", "model.qk_norm=true"),
                                   ("model.layer_pattern=MA", "model.mamba_head_dim=16", "model.mamba_state_size=8")],
                         ids=["tied", "untied-head-qk-norm", "mamba-hybrid"])
def test_every_parameter_is_in_exactly_one_group_and_hidden_matrices_in_muon(shape: tuple[str, ...]) -> None:
    model = tiny_model(*shape)
    optimizer = build_optimizer(model, tiny_config(*shape, *MUON).train, CPU)
    owner = group_of(optimizer)
    named = dict(model.named_parameters())
    assert set(owner) == {id(param) for param in named.values()}
    for name, param in named.items():
        hidden = name.startswith("layers.") and param.ndim == 2
        assert owner[id(param)] == ("muon" if hidden else "adamw"), name
    adamw = {(group["weight_decay"], group["lr"]) for group in optimizer.parts["adamw"].param_groups}
    assert (0.0, 3e-3) in adamw  # embeddings, norms and gains: no decay
    assert all(group["lr"] == 0.01 and group["weight_decay"] == 0.1 for group in optimizer.parts["muon"].param_groups)


def test_fused_weights_name_their_blocks() -> None:
    """q/k/v and gate/up are stacked maps: each block is orthogonalised on its own (train/muon.py says why)."""
    optimizer = build_optimizer(tiny_model(), tiny_config(*MUON).train, CPU)
    blocks = {tuple(group["row_blocks"]): len(group["params"]) for group in optimizer.parts["muon"].param_groups}
    assert blocks == {(64, 32, 32): 2, (128, 128): 2, (): 4}  # qkv x2 layers, gate_up x2, proj and down x2


def test_muon_in_bf16_without_blocks_is_torch_muon_bit_for_bit() -> None:
    torch.manual_seed(0)
    ours, theirs = torch.nn.Parameter(torch.randn(48, 32)), torch.nn.Parameter(torch.randn(48, 32))
    theirs.data.copy_(ours.data)
    mine = Muon([{"params": [ours]}], ns_dtype=torch.bfloat16, lr=0.02, adjust_lr_fn="match_rms_adamw")
    reference = torch.optim.Muon([theirs], lr=0.02, adjust_lr_fn="match_rms_adamw")
    for _ in range(3):
        gradient = torch.randn(48, 32)
        ours.grad, theirs.grad = gradient.clone(), gradient.clone()
        mine.step()
        reference.step()
    assert torch.equal(ours, theirs)
    assert mine.state_dict()["state"][0]["momentum_buffer"].equal(reference.state_dict()["state"][0]["momentum_buffer"])


def test_each_block_steps_as_its_own_matrix() -> None:
    torch.manual_seed(0)
    fused = torch.nn.Parameter(torch.randn(10, 6))
    top, bottom = torch.nn.Parameter(fused.data[:4].clone()), torch.nn.Parameter(fused.data[4:].clone())
    gradient = torch.randn(10, 6)
    fused.grad, top.grad, bottom.grad = gradient.clone(), gradient[:4].clone(), gradient[4:].clone()
    for params in ([fused], [top, bottom]):
        Muon([{"params": params, "row_blocks": (4, 6) if params[0] is fused else ()}],
             ns_dtype=torch.float32, lr=0.1).step()
    assert torch.allclose(fused.data, torch.cat([top.data, bottom.data]), atol=1e-6)


def test_newton_schulz_nearly_orthogonalises_in_fp32() -> None:
    torch.manual_seed(0)
    ortho = newton_schulz(torch.randn(16, 40), torch.float32)
    singular = torch.linalg.svdvals(ortho)
    assert ortho.dtype == torch.float32 and singular.min() > 0.5 and singular.max() < 1.3


def test_newton_schulz_runs_in_fp32_on_a_cpu_without_native_bf16(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: False)
    assert newton_schulz_dtype("auto", CPU) == torch.float32
    monkeypatch.setattr(optim, "cpu_has_native_bf16", lambda: True)
    assert newton_schulz_dtype("auto", CPU) == torch.bfloat16
    assert newton_schulz_dtype("fp32", CPU) == torch.float32


def test_the_schedule_scales_each_group_from_its_own_peak() -> None:
    optimizer = build_optimizer(tiny_model(), tiny_config(*MUON).train, CPU)
    set_learning_rate(optimizer, 1.5e-3)  # half of train.lr: Muon's groups run at half of train.muon_lr
    rates = {name: sorted({group["lr"] for group in part.param_groups}) for name, part in optimizer.parts.items()}
    assert rates == {"muon": [pytest.approx(0.005)], "adamw": [1.5e-3]}


def test_adamw_state_is_refused_by_a_muon_run() -> None:
    model = tiny_model()
    adamw_state = build_optimizer(model, tiny_config().train, CPU).state_dict()
    with pytest.raises(CogniError, match=r"resume with the train\.optimizer it was saved with"):
        build_optimizer(model, tiny_config(*MUON).train, CPU).load_state_dict(adamw_state)


def test_lora_adapters_train_with_muon() -> None:
    model = apply_lora(tiny_model(), LoraSettings(rank=4, dropout=0.0))
    optimizer = build_optimizer(model, tiny_config(*MUON).train, CPU)
    assert list(optimizer.parts) == ["muon"]  # adapter matrices only: nothing for AdamW
    adapters = {name: param.detach().clone() for name, param in model.named_parameters() if param.requires_grad}
    tokens = torch.randint(0, 128, (2, 17))
    for _ in range(2):  # lora_B starts at zero, so lora_A first moves on the second step
        logits = model(tokens[:, :-1])
        torch.nn.functional.cross_entropy(logits.reshape(-1, 128), tokens[:, 1:].reshape(-1)).backward()
        optimizer.step()
        optimizer.zero_grad()
    assert all(not torch.equal(param, adapters[name]) for name, param in model.named_parameters()
               if param.requires_grad)


@pytest.mark.slow
def test_a_muon_checkpoint_resumes_bit_for_bit(tiny_data: Path, tmp_path: Path) -> None:
    """Resumed from its step-4 checkpoint, a Muon run ends with the weights and losses of the run never stopped."""
    settings = (*MUON, "train.max_steps=8", "train.save_every=4", "train.log_every=1", "train.eval_every=0")
    config = tiny_config(*settings)
    reference = tmp_path / "reference"
    train(TrainOptions(config=config, data=tiny_data, out=reference, show_progress=False), Console(quiet=True))
    resumed = tmp_path / "resumed"
    shutil.copytree(reference, resumed)
    shutil.rmtree(resumed / "checkpoints" / "step-00000008")  # as if stopped after the step-4 checkpoint
    assert latest_checkpoint(resumed).name == "step-00000004"
    train(TrainOptions(config=tiny_config(*settings), data=tiny_data, out=resumed, resume=True, show_progress=False),
          Console(quiet=True))
    losses = [{row["step"]: row["train_loss"] for row in read_metrics(run) if "train_loss" in row}
              for run in (reference, resumed)]
    assert losses[0] == losses[1] and len(losses[0]) == 8
    ours, theirs = load_file(str(resumed / "model.safetensors")), load_file(str(reference / "model.safetensors"))
    assert all(torch.equal(ours[name], theirs[name]) for name in theirs)


MUON_FP32 = (*MUON, "train.muon_precision=fp32")  # bf16 rounding would hide a real difference in the tolerance


def two_muon_steps(model: torch.nn.Module, batch: tuple[torch.Tensor, torch.Tensor],
                   context: DistributedContext = SINGLE_PROCESS) -> torch.nn.Module:
    """Two Muon steps on one batch (this rank's share under DDP); the trained module."""
    module = model.module if isinstance(model, torch.nn.parallel.DistributedDataParallel) else model
    optimizer = build_optimizer(module, tiny_config(*MUON_FP32).train, CPU)
    for _ in range(2):
        accumulate_gradients(model, [batch], PLAIN, context=context)
        optimizer.step()
        optimizer.zero_grad()
    return module


def _muon_ddp_step(context: DistributedContext, tmp_path: Path) -> None:
    """Rank 0 steps on windows 0-5, rank 1 on 6-15, as DDP with Muon; each rank saves its weights."""
    inputs, targets = chat_like_batch(seq_len=32)
    rows = slice(0, 6) if context.rank == 0 else slice(6, 16)
    module = two_muon_steps(torch.nn.parallel.DistributedDataParallel(fresh_model()), (inputs[rows], targets[rows]),
                            context)
    torch.save(module.state_dict(), tmp_path / f"rank{context.rank}.pt")


@pytest.mark.slow
def test_muon_under_ddp_steps_like_one_process_on_the_whole_batch(tmp_path: Path) -> None:
    """Every rank orthogonalises the same all-reduced gradient, so two ranks end where one process does."""
    model = two_muon_steps(fresh_model(), chat_like_batch(seq_len=32))
    run_on_two_ranks(_muon_ddp_step, tmp_path)
    for rank in (0, 1):
        weights = torch.load(tmp_path / f"rank{rank}.pt")
        for name, param in model.state_dict().items():
            torch.testing.assert_close(weights[name], param, rtol=1e-4, atol=1e-5, msg=name)
