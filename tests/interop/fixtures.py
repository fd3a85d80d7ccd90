"""Helpers for the interoperability tests: small run dirs with random weights, built in a second."""

from __future__ import annotations

from pathlib import Path

import torch

STORY = ("Once upon a time a little fox found a red ball in the garden. She played with it all day, and when the sun "
         "went down she gave it to her friend the owl. \"Thank you!\" said the owl. Tools: get_weather(city) -> 18°C.")
PROMPTS = ["Once upon a time", "The owl said: \"Thank you!\"", "Météo à Paris? 18°C", "a b c 123 4567"]
# Texts whose split tells pre-tokenizers apart: digits after a space or a quote, contractions, runs of blanks.
SPLIT_TEXTS = [*PROMPTS, 'She\'LL say {"expression": "12 * 7"}\n\n  ok\t1999 ½ ²', "x=3.14159; y = -42"]


def make_run(out: Path, *overrides: str, seed: int = 0, init_std: float = 0.3) -> Path:
    """A run dir with random weights large enough (init_std) that greedy decoding is not a tie-break contest."""
    from cognimamba.config.overrides import resolve_config
    from cognimamba.model.tokenizer import train_tokenizer
    from cognimamba.model.transformer import LanguageModel
    from cognimamba.runs.layout import WEIGHTS
    from cognimamba.runs.loading import write_run_files
    from cognimamba.runs.tensors import model_state, save_weights

    tokenizer = train_tokenizer([STORY] * 20, vocab_size=300)
    config = resolve_config("cpu", None, [
        "model.dim=64", "model.n_layers=2", "model.n_heads=4", "model.n_kv_heads=2", "model.ffn_dim=96",
        "model.max_seq_len=64", f"model.vocab_size={tokenizer.get_vocab_size()}", f"model.init_std={init_std}",
        *overrides])
    torch.manual_seed(seed)
    model = LanguageModel(config.model)
    with torch.no_grad():  # norms away from 1 so a mix-up of norm weights would show
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.uniform_(0.5, 1.5)
    write_run_files(out, config, model, tokenizer)
    save_weights(out / WEIGHTS, model_state(model))
    return out
