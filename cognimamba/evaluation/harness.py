"""A run dir as an lm-evaluation-harness model, so `cogni eval` scores it without an export.

lm-eval asks a model three things: the log likelihood of a continuation after a context, the log
likelihood of a whole text (scored in windows of the model's context, exactly as lm-eval's own `hf`
backend cuts them), and greedy text until a stop string. The first two are batched forwards of our
LanguageModel; the third goes through the batching engine (--batch-size generations at once, each in its own
KV cache slot), with its stop strings.
Tokens, the prefix token before a text and the context truncation all follow the `hf` backend on the
run's Hugging Face export, so the two give the same figures (tests/evaluation/test_harness.py).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import lm_eval
import torch
import torch.nn.functional as F
from lm_eval import simple_evaluate
from lm_eval.api.instance import Instance
from lm_eval.api.model import TemplateLM
from lm_eval.models.utils import handle_stop_sequences, normalize_gen_kwargs, postprocess_generated_text
from lm_eval.tasks import TaskManager
from lm_eval.utils import get_rolling_token_windows, make_disjoint_window
from rich.progress import Progress
from tokenizers import Tokenizer

from cognimamba.chat.format import render_conversation
from cognimamba.config.schema import MIN_SAMPLING_TEMPERATURE, GenerationConfig
from cognimamba.errors import CogniError
from cognimamba.evaluation.harness_results import summarize
from cognimamba.inference.batching import BatchEngine
from cognimamba.interop.chat_template import CHAT_TEMPLATE
from cognimamba.model.tokenizer import END_OF_TEXT, IM_END, PAD, encode, special_id
from cognimamba.model.transformer import LanguageModel
from cognimamba.runs.loading import LoadedRun

DEFAULT_MAX_GEN_TOKENS = 256  # lm-eval's default when a task does not say

# (context ids, continuation ids): what one log-likelihood request becomes once tokenized.
TokenPair = tuple[list[int], list[int]]
# Prompt ids, most new tokens, stop strings, temperature -> the generated text.
Continuation = tuple[list[int], int, list[str], float]  # prompt ids, max new tokens, stop strings, temperature
Continuer = Callable[[list[Continuation]], Iterator[str]]


def engine_continuer(model: LanguageModel, tokenizer: Tokenizer, device: torch.device, slots: int) -> Continuer:
    """Texts from prompt ids through the project's batching engine (`slots` sequences at once, KV cache, stop
    strings held back), in the order asked; each as soon as it and those before it are done.

    The one place this module names the engine and its sampling options, so renaming either touches only this.
    """
    engine = BatchEngine(model, tokenizer, slots, device=device, inline=True)  # stepped by lm-eval's own thread

    def continue_texts(jobs: list[Continuation]) -> Iterator[str]:
        replies = []
        for prompt_ids, max_new_tokens, stop, temperature in jobs:
            settings = GenerationConfig(temperature=temperature, top_k=0, top_p=1.0, max_new_tokens=max_new_tokens)
            replies.append(engine.stream(prompt_ids, settings, stop=stop))
        return (reply.text() for reply in replies)

    return continue_texts


@dataclass
class ScoredContinuation:
    log_likelihood: float
    is_greedy: bool  # every continuation token is the model's argmax


@torch.inference_mode()
def score_batch(model: LanguageModel, pairs: Sequence[TokenPair], pad_id: int,
                device: torch.device) -> list[ScoredContinuation]:
    """Log likelihoods of each continuation after its context, in one right-padded forward.

    Each pair is cut from the left to the model's context plus one (the last token is only predicted), as
    lm-eval's `hf` backend does. Right padding leaves the real positions untouched under causal attention.
    """
    max_len = model.config.max_seq_len
    inputs = [(context + continuation)[-(max_len + 1):][:-1] for context, continuation in pairs]
    width = max(len(ids) for ids in inputs)
    batch = torch.full((len(inputs), width), pad_id, dtype=torch.long)
    for row, ids in enumerate(inputs):
        batch[row, :len(ids)] = torch.tensor(ids, dtype=torch.long)
    logits = model(batch.to(device))
    scored = []
    for row, ((_, continuation), ids) in enumerate(zip(pairs, inputs, strict=True)):
        positions = slice(len(ids) - len(continuation), len(ids))
        log_probs = F.log_softmax(logits[row, positions].float(), dim=-1)
        targets = torch.tensor(continuation, dtype=torch.long, device=log_probs.device)
        picked = log_probs.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
        greedy = bool((log_probs.argmax(dim=-1) == targets).all())
        scored.append(ScoredContinuation(float(picked.sum()), greedy))
    return scored


class RunLM(TemplateLM):
    """A loaded run (LoRA runs come merged) as lm-eval's `LM`: pass it as `simple_evaluate(model=...)`."""

    def __init__(self, loaded: LoadedRun, device: torch.device, batch_size: int = 16,
                 progress: Progress | None = None) -> None:
        super().__init__()
        if batch_size < 1:
            raise CogniError(f"--batch-size {batch_size}: must be at least 1")
        self.loaded = loaded
        self.model = loaded.model.to(device).eval()
        self.tokenizer = loaded.tokenizer
        self._device = device
        self.batch_size = batch_size
        self.progress = progress
        self.pad_id = special_id(self.tokenizer, PAD)
        self.continue_text = engine_continuer(self.model, self.tokenizer, device, batch_size)

    # What lm-eval reads about the model.
    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def max_length(self) -> int:
        return self.model.config.max_seq_len

    @property
    def eot_token_id(self) -> int:
        return special_id(self.tokenizer, END_OF_TEXT)

    @property
    def prefix_token_id(self) -> int:
        """What a text is scored after: <|endoftext|>, the token training puts between documents."""
        return special_id(self.tokenizer, END_OF_TEXT)

    @property
    def tokenizer_name(self) -> str:
        return str(self.loaded.path)

    def tok_encode(self, string: str, add_special_tokens: bool | None = None, **kwargs: Any) -> list[int]:
        return encode(self.tokenizer, string)  # the tokenizer adds no special tokens of its own

    def chat_template(self, chat_template: bool | str = False) -> str | None:
        return CHAT_TEMPLATE if chat_template else None

    def apply_chat_template(self, chat_history: list[dict[str, str]], add_generation_prompt: bool = True) -> str:
        """ChatML as the run was fine-tuned on; without a generation prompt the last assistant turn stays open."""
        if add_generation_prompt or not chat_history or chat_history[-1]["role"] != "assistant":
            return render_conversation(chat_history, add_generation_prompt=add_generation_prompt)
        opened = render_conversation(chat_history[:-1], add_generation_prompt=True)
        return opened + chat_history[-1]["content"]

    # The three kinds of request.
    def loglikelihood(self, requests: list[Instance], disable_tqdm: bool = False) -> list[tuple[float, bool]]:
        return super().loglikelihood(requests, disable_tqdm=True)  # our own progress bar instead

    def _loglikelihood_tokens(self, requests: list[tuple[Any, list[int], list[int]]],
                              **kwargs: Any) -> list[tuple[float, bool]]:
        pairs = [(context, continuation) for _, context, continuation in requests]
        scored = self.score_pairs(pairs, "loglikelihood")
        return [(result.log_likelihood, result.is_greedy) for result in scored]

    def loglikelihood_rolling(self, requests: list[Instance], disable_tqdm: bool = False) -> list[float]:
        """Whole texts in disjoint windows of the context, each window seeing one token before it, as `hf` does."""
        windows: list[TokenPair] = []
        owners: list[int] = []
        for index, request in enumerate(requests):
            ids = self.tok_encode(request.args[0])
            for window in get_rolling_token_windows(ids, self.prefix_token_id, self.max_length, context_len=1):
                windows.append(make_disjoint_window(window))
                owners.append(index)
        totals = [0.0] * len(requests)
        for owner, result in zip(owners, self.score_pairs(windows, "loglikelihood_rolling"), strict=True):
            totals[owner] += result.log_likelihood
        return totals

    def generate_until(self, requests: list[Instance], disable_tqdm: bool = False) -> list[str]:
        """All requests through the batching engine, --batch-size at once; each prompt cut from the left to
        leave room for its reply."""
        temperatures = [sampling_temperature(request) for request in requests]  # all checked before any generates
        jobs, stops = [], []
        for request, temperature in zip(requests, temperatures, strict=True):
            context, gen_kwargs = request.args
            settings = normalize_gen_kwargs(gen_kwargs, DEFAULT_MAX_GEN_TOKENS)
            stop = handle_stop_sequences(settings.get("until"), eos=IM_END)
            max_new_tokens = int(settings["max_gen_toks"])
            # `hf` keeps max_length - max_gen_toks prompt tokens; a model whose context is shorter than the
            # generation budget keeps half its context for the prompt rather than none.
            room = max(self.max_length - max_new_tokens, self.max_length // 2)
            prompt_ids = self.tok_encode(context)[-room:] or [self.prefix_token_id]
            jobs.append((prompt_ids, max_new_tokens, list(stop), temperature))
            stops.append(stop)
        task = self.progress.add_task("generate_until", total=len(requests)) if self.progress else None
        texts = []
        for text, stop in zip(self.continue_text(jobs), stops, strict=True):
            texts.append(postprocess_generated_text(text, stop=stop, think_end_token=None))
            if self.progress is not None and task is not None:
                self.progress.advance(task)
        return texts

    def score_pairs(self, pairs: list[TokenPair], label: str) -> list[ScoredContinuation]:
        """Every pair, longest first so each batch pads little, returned in the order given."""
        for context, continuation in pairs:
            if not context or not continuation:
                raise ValueError("lm-eval sent an empty context or continuation")
            if len(continuation) > self.max_length:
                raise CogniError(f"a continuation of {len(continuation)} tokens does not fit the model's context of "
                                 f"{self.max_length}; this task needs a model with a longer max_seq_len")
        order = sorted(range(len(pairs)), key=lambda i: -len(pairs[i][0]) - len(pairs[i][1]))
        results: list[ScoredContinuation | None] = [None] * len(pairs)
        task = self.progress.add_task(label, total=len(pairs)) if self.progress else None
        for start in range(0, len(order), self.batch_size):
            chunk = order[start:start + self.batch_size]
            for index, result in zip(chunk, score_batch(self.model, [pairs[i] for i in chunk], self.pad_id,
                                                          self.device), strict=True):
                results[index] = result
            if self.progress is not None and task is not None:
                self.progress.advance(task, len(chunk))
        return [result for result in results if result is not None]

    def get_model_info(self) -> dict[str, Any]:
        """What lm-eval records about the model in its results."""
        parameters = sum(p.numel() for p in self.model.parameters())
        return {"model_name": str(self.loaded.path), "model_num_parameters": parameters,
                "model_dtype": str(next(self.model.parameters()).dtype)}


@dataclass
class HarnessOptions:
    """What `cogni eval` asks lm-eval for."""

    tasks: list[str]
    num_fewshot: int | None = None
    limit: int | float | None = None  # documents per task; below 1, a fraction of them
    batch_size: int = 16
    include_path: Path | None = None
    apply_chat_template: bool = False

    def settings(self) -> dict[str, Any]:
        return {"tasks": self.tasks, "num_fewshot": self.num_fewshot, "limit": self.limit,
                "batch_size": self.batch_size, "include_path": str(self.include_path) if self.include_path else None,
                "apply_chat_template": self.apply_chat_template}


def sampling_temperature(request: Instance) -> float:
    """The temperature a task's gen_kwargs sample at (0: greedy, as lm-eval reads do_sample), refused where chat
    refuses generation.temperature: below MIN_SAMPLING_TEMPERATURE the logits overflow when divided by it."""
    settings = normalize_gen_kwargs(request.args[1], DEFAULT_MAX_GEN_TOKENS)
    temperature = float(settings.get("temperature", 0.0)) if settings.get("do_sample") else 0.0
    if temperature < 0 or 0 < temperature < MIN_SAMPLING_TEMPERATURE:
        task = request.task_name or "a generation task"
        raise CogniError(f"{task}: gen_kwargs temperature = {temperature:g} is too small to sample with; use 0 for "
                         f"greedy decoding or at least {MIN_SAMPLING_TEMPERATURE}")
    return temperature


def task_manager(options: HarnessOptions) -> TaskManager:
    """lm-eval's task index with --include-path added; an unknown task name is one line naming it.

    When every task is found in --include-path, lm-eval's own thousands of YAML files are not indexed at all
    (reading them is most of the start-up time of a small local task).
    """
    if options.include_path is not None:
        if not options.include_path.is_dir():
            raise CogniError(f"--include-path {options.include_path}: not a directory of task YAML files")
        local = TaskManager(include_path=str(options.include_path), include_defaults=False)
        if all(local.match_tasks([name]) for name in options.tasks):
            return local
    manager = TaskManager(include_path=str(options.include_path) if options.include_path else None)
    unknown = [name for name in options.tasks if not manager.match_tasks([name])]
    if unknown:
        where = f" nor in {options.include_path}" if options.include_path else ""
        raise CogniError(f"--tasks: {', '.join(unknown)} not among lm-eval's {len(manager.all_tasks)} tasks{where}; "
                         "list them with `lm_eval ls tasks`, or add a task YAML with --include-path")
    return manager


def _is_data_error(error: BaseException) -> bool:
    """Failures reading a task's dataset: the hub out of reach, a missing local file."""
    module = type(error).__module__.split(".")[0]
    return isinstance(error, OSError | ConnectionError) or module in ("datasets", "huggingface_hub", "requests",
                                                                      "fsspec", "urllib3")


def evaluate_run(loaded: LoadedRun, device: torch.device, options: HarnessOptions,
                 progress: Progress | None = None) -> dict[str, Any]:
    """Run lm-eval's tasks on the run; the summary that harness_results saves and prints."""
    manager = task_manager(options)
    model = RunLM(loaded, device, options.batch_size, progress)
    try:
        results = simple_evaluate(model=model, tasks=options.tasks, num_fewshot=options.num_fewshot,
                                  limit=options.limit, task_manager=manager, log_samples=False,
                                  apply_chat_template=options.apply_chat_template, verbosity="ERROR")
    except Exception as error:
        if not _is_data_error(error):
            raise
        first_line = next(iter(str(error).strip().splitlines()), "")
        raise CogniError(f"--tasks {','.join(options.tasks)}: a dataset could not be loaded ({type(error).__name__}: "
                         f"{first_line}); offline, point a task YAML at local files (dataset_path: json) and pass "
                         "--include-path") from error
    if results is None:  # only other ranks of a distributed run get None
        raise CogniError("lm-eval returned no results")
    return summarize(results, options.settings(), lm_eval.__version__)
