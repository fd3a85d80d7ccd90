"""BFCL, the Berkeley Function Calling Leaderboard, run by its own harness (`bfcl-eval`) against an
OpenAI-compatible server: `cogni eval RUN --bfcl CATEGORIES` points it at the run served in-process.

bfcl-eval knows models only through its registry (`MODEL_CONFIG_MAPPING`: a name -> the handler class that
calls the model). This module adds one entry, in function-calling mode, whose handler is BFCL's own handler
for OpenAI's Responses API (what its GPT entries use) with its client pointed at the given server instead of
api.openai.com; everything else is BFCL's: its test cases, its tool conversion (dots in function names become
underscores, which its checker maps back), its generation loop and its checker. Its scores are summarized
by evaluation/bfcl_results.py.

bfcl-eval is an optional dependency, imported inside `load_harness` only: it reads `BFCL_PROJECT_ROOT` when
it loads (and makes folders there), and importing it takes seconds. Install it without its dependencies
(`pip install --no-deps bfcl-eval`, then `pip install 'cognimamba[bfcl]'` for the ones its loading and the
categories below need): its own list pins numpy 1.26 and pulls sentence-transformers and faiss-cpu (and with
them a CUDA torch), which only its memory categories use.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from cognimamba.errors import CogniError
from cognimamba.evaluation.bfcl_results import INFERENCE_ERROR, REFUSED_FOR_CONTEXT, summarize_bfcl
from cognimamba.system.paths import cache_dir

REGISTRY_NAME = "cognimamba-FC"  # BFCL reads "FC" in a name as function-calling mode; no "_" (it maps "_" to "/")
BFCL_EVAL_VERSION = "2026.3.23"  # the release this shim was written and tested against
INSTALL_HINT = (f"cogni eval --bfcl needs BFCL's harness: pip install --no-deps bfcl-eval=={BFCL_EVAL_VERSION} "
                "&& pip install 'cognimamba[bfcl]'")
# What loading bfcl-eval imports (it imports every vendor's handler), module -> package.
HARNESS_NEEDS = {"anthropic": "anthropic", "boto3": "boto3", "cohere": "cohere==5.18.0",
                 "datamodel_code_generator": "datamodel-code-generator==0.25.7", "dotenv": "python-dotenv",
                 "google.genai": "google-genai", "mistralai": "mistralai==1.7.0", "overrides": "overrides",
                 "qwen_agent": "qwen-agent", "soundfile": "soundfile", "tenacity": "tenacity",
                 "tree_sitter": "tree_sitter==0.21.3", "tree_sitter_java": "tree-sitter-java==0.21.0",
                 "tree_sitter_javascript": "tree-sitter-javascript==0.21.4", "writerai": "writer-sdk"}
# What some categories import besides, when they run (category name part -> module -> package).
CATEGORY_NEEDS = {
    "memory": {"sentence_transformers": "sentence-transformers", "faiss": "faiss-cpu==1.11.0",
               "rank_bm25": "rank-bm25==0.2.2"},
    "web_search": {"bs4": "beautifulsoup4", "html2text": "html2text", "serpapi": "google-search-results"},
}
CATEGORY_HINTS = {
    "memory": "install a CPU torch first, or sentence-transformers brings a CUDA one",
    "web_search": "it also searches the web, with SERPAPI_API_KEY set",
}
REQUEST_TIMEOUT_SECONDS = 600.0


@dataclass
class BfclOptions:
    """What `cogni eval --bfcl` asks BFCL for."""

    categories: list[str]  # BFCL's category or group names (simple_python, live, ...)
    limit: float | None = None  # cases per category; below 1, a fraction of them (not comparable to full scores)
    threads: int = 8  # requests in flight at once
    # Greedy. `bfcl generate` samples at 0.001, which is greedy in all but name, and below the 0.01 the run
    # config accepts for sampling.
    temperature: float = 0.0

    def settings(self) -> dict[str, Any]:
        return {"categories": self.categories, "limit": self.limit, "threads": self.threads,
                "temperature": self.temperature, "mode": "function calling (FC)", "endpoint": "/v1/responses"}


def is_installed(module: str) -> bool:
    try:
        return importlib.util.find_spec(module) is not None
    except ModuleNotFoundError:  # a dotted name whose parent is missing
        return False


def missing_packages(needs: dict[str, str]) -> list[str]:
    return [package for module, package in needs.items() if not is_installed(module)]


def check_harness_installed() -> None:
    if not is_installed("bfcl_eval"):
        raise CogniError(INSTALL_HINT)
    missing = missing_packages(HARNESS_NEEDS)
    if missing:
        raise CogniError(f"bfcl-eval is installed without what it imports when it loads: pip install "
                         f"{' '.join(repr(p) if '=' in p else p for p in missing)} (or 'cognimamba[bfcl]')")


def check_categories(categories: list[str]) -> None:
    """One line for a category this mode cannot run, or one whose extra packages are missing."""
    if any("format_sensitivity" in name for name in categories):
        raise CogniError("--bfcl format_sensitivity scores prompting-mode models; this runs function-calling mode "
                         "(BFCL skips it there); leave it out")
    for part, needs in CATEGORY_NEEDS.items():
        chosen = [name for name in categories if part in name]
        missing = missing_packages(needs) if chosen else []
        if missing:
            raise CogniError(f"--bfcl {', '.join(chosen)}: BFCL's {part} categories need "
                             f"pip install {' '.join(missing)} ({CATEGORY_HINTS[part]})")
        if part == "web_search" and chosen and not os.environ.get("SERPAPI_API_KEY"):
            raise CogniError(f"--bfcl {', '.join(chosen)}: BFCL's web search needs SERPAPI_API_KEY set")


def load_harness() -> SimpleNamespace:
    """bfcl-eval's pieces this module drives, imported with its project root in cognimamba's cache."""
    check_harness_installed()
    os.environ.setdefault("BFCL_PROJECT_ROOT", str(cache_dir() / "bfcl"))
    # Optional dependency, and it must load after BFCL_PROJECT_ROOT is set.
    from bfcl_eval import _llm_response_generation as generation  # noqa: PLC0415
    from bfcl_eval import utils  # noqa: PLC0415
    from bfcl_eval.constants import eval_config, model_config  # noqa: PLC0415
    from bfcl_eval.constants.enums import ModelStyle  # noqa: PLC0415
    from bfcl_eval.eval_checker import eval_runner  # noqa: PLC0415
    from bfcl_eval.model_handler.api_inference.openai_response import OpenAIResponsesHandler  # noqa: PLC0415
    from bfcl_eval.model_handler.base_handler import BaseHandler  # noqa: PLC0415

    return SimpleNamespace(generation=generation, utils=utils, eval_config=eval_config, model_config=model_config,
                           ModelStyle=ModelStyle, eval_runner=eval_runner, BaseHandler=BaseHandler,
                           OpenAIResponsesHandler=OpenAIResponsesHandler)


def register_server(harness: SimpleNamespace, base_url: str, api_key: str, model: str,
                    on_case: Callable[[], None] = lambda: None) -> None:
    """Adds REGISTRY_NAME to BFCL's registry: its Responses API handler, talking to `base_url` (with /v1)."""
    from openai import BadRequestError, OpenAI  # noqa: PLC0415 (a dependency of bfcl-eval, not of cognimamba)

    class ServerHandler(harness.OpenAIResponsesHandler):
        """BFCL's handler for OpenAI's Responses API, with its client on this server; `on_case` after each case."""

        def __init__(self, model_name: str, temperature: float, registry_name: str, is_fc_model: bool,
                     **kwargs: Any) -> None:
            # The parent's __init__ builds its client from OPENAI_* variables; this one is built here instead.
            harness.BaseHandler.__init__(self, model_name, temperature, registry_name, is_fc_model, **kwargs)
            self.model_style = harness.ModelStyle.OPENAI_RESPONSES
            self.client = OpenAI(base_url=base_url, api_key=api_key, max_retries=0, timeout=REQUEST_TIMEOUT_SECONDS)

        def inference(self, test_entry: dict, include_input_log: bool, exclude_state_log: bool) -> Any:
            try:
                return super().inference(test_entry, include_input_log, exclude_state_log)
            except BadRequestError as error:
                if error.code != REFUSED_FOR_CONTEXT:
                    raise
                # The result BFCL records for a failed case, naming the refusal, without BFCL's traceback block:
                # a prompt longer than the context is an expected answer of a small model, counted, not a crash.
                return f"{INFERENCE_ERROR}: {REFUSED_FOR_CONTEXT}: {error.message}", {"refused_for_context": True}
            finally:
                on_case()

    harness.model_config.MODEL_CONFIG_MAPPING[REGISTRY_NAME] = harness.model_config.ModelConfig(
        model_name=model, display_name=f"{model} (cognimamba, FC)", url="", org="cognimamba", license="",
        model_handler=ServerHandler, input_price=None, output_price=None, is_fc_model=True,
        underscore_to_dot=True)  # as BFCL's GPT entries: its tool conversion turned dots into underscores


def chosen_cases(harness: SimpleNamespace, categories: list[str], limit: float | None) -> list[dict[str, Any]]:
    """Every category's test cases, or its first `limit` (a memory category keeps all its prerequisite turns)."""
    cases = []
    for category in categories:
        loaded = harness.utils.load_dataset_entry(category)
        prerequisites = [case for case in loaded if "prereq" in case["id"]]
        scored = [case for case in loaded if "prereq" not in case["id"]]
        if limit is not None:
            scored = scored[:int(limit) if limit >= 1 else max(1, round(limit * len(scored)))]
        cases += prerequisites + scored
    return cases


def run_bfcl(base_url: str, api_key: str, model: str, options: BfclOptions, raw_dir: Path,
             on_start: Callable[[int], None] = lambda total: None,
             on_case: Callable[[], None] = lambda: None) -> dict[str, Any]:
    """BFCL's generation and checker on `options.categories` against the server; BFCL's files go in `raw_dir`.

    `on_start` gets the number of cases, `on_case` is called after each. Returns the saved summary's content.
    """
    harness = load_harness()
    try:
        categories = harness.utils.parse_test_category_argument(options.categories)
    except Exception as error:  # BFCL raises a bare Exception for an unknown name
        raise CogniError(f"--bfcl: {error}; the categories are listed by `bfcl test-categories`") from None
    check_categories(categories)
    register_server(harness, f"{base_url}/v1", api_key, model, on_case)
    result_dir, score_dir = raw_dir / "result", raw_dir / "score"
    args = SimpleNamespace(result_dir=result_dir, allow_overwrite=True, run_ids=False, include_input_log=False,
                           exclude_state_log=True, temperature=options.temperature, num_threads=options.threads)
    with contextlib.redirect_stdout(sys.stderr):  # BFCL prints as it goes; stdout stays for `--json`
        cases = harness.generation.collect_test_cases(args, REGISTRY_NAME, categories,
                                                      chosen_cases(harness, categories, options.limit))
        on_start(len(cases))
        started = time.perf_counter()
        harness.generation.generate_results(args, REGISTRY_NAME, cases)
        generation_seconds = time.perf_counter() - started
        for path in result_dir.rglob(harness.eval_config.RESULT_FILE_PATTERN):
            harness.utils.sort_file_content_by_id(path)
        score(harness, categories, result_dir, score_dir, partial=options.limit is not None)
    settings = {**options.settings(), "categories": categories, "model": model,
                "generation_seconds": round(generation_seconds, 2), "raw_dir": raw_dir.name}
    return summarize_bfcl(result_dir / REGISTRY_NAME, score_dir / REGISTRY_NAME, settings,
                          installed_version())


def score(harness: SimpleNamespace, categories: list[str], result_dir: Path, score_dir: Path, partial: bool) -> None:
    """BFCL's checker on each category's results, as its `bfcl evaluate` runs it, without the leaderboard CSVs it
    then writes (reading every category's data again, for figures this summary does not use)."""
    runner = harness.eval_runner
    handler = runner.get_handler(REGISTRY_NAME)
    table: dict[str, Any] = {}
    for path in sorted((result_dir / REGISTRY_NAME).rglob(harness.eval_config.RESULT_FILE_PATTERN)):
        category = harness.utils.extract_test_category(path)
        if category in categories and not harness.utils.is_memory_prereq(category):
            results = harness.utils.load_file(path, sort_by_id=True)
            runner.evaluate_task(category, result_dir, score_dir, results, REGISTRY_NAME, handler, table,
                                 allow_missing=partial)


def installed_version() -> str:
    try:
        return version("bfcl-eval")
    except PackageNotFoundError:
        return "unknown"
