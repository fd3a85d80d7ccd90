"""The timing `cogni bench` and benchmarks/ share: what runs when, and what counts (no timing asserts)."""

from __future__ import annotations

from cognimamba.evaluation.timing import Side, interleaved, markdown_table, spread, warm_then_repeat


def test_the_warm_up_runs_first_and_is_not_a_sample() -> None:
    runs, ticks = [], []
    warmup, seconds = warm_then_repeat(lambda: runs.append(len(runs)), 3, on_run=lambda: ticks.append(len(runs)))
    assert runs == [0, 1, 2, 3] and ticks == [1, 2, 3, 4]  # one warm-up and three samples, a tick after each
    assert len(seconds) == 3 and warmup >= 0 and all(each > 0 for each in seconds)


def test_interleaved_alternates_who_goes_first_and_gives_every_side_the_same_calls() -> None:
    order: list[str] = []

    def side(name: str) -> Side:
        return Side(name, {"decode": lambda: order.append(f"{name} decode"),
                           "prefill": lambda: order.append(f"{name} prefill")})

    ours, theirs = side("A"), side("B")
    progress: list[str] = []
    interleaved([(ours, theirs)], {"decode": 128, "prefill": 512}, 2, min_seconds=0.0, progress=progress.append)
    assert order == ["A decode", "B decode", "A prefill", "B prefill",  # warm-up, which also sizes the samples
                     "A decode", "B decode", "A prefill", "B prefill",  # repetition 1: A first
                     "B decode", "A decode", "B prefill", "A prefill"]  # repetition 2: B first
    assert progress == ["warm-up", "repetition 1/2", "repetition 2/2"]
    assert {test: len(samples) for test, samples in ours.samples.items()} == {"decode": 2, "prefill": 2}
    assert ours.median("decode") > 0 and theirs.median("prefill") > 0


def test_a_short_test_repeats_inside_a_sample() -> None:
    calls = []
    fast = Side("fast", {"step": lambda: calls.append(1)})
    interleaved([(fast,)], {"step": 1}, 1, min_seconds=0.01)
    assert len(calls) > 2  # one to warm up, then many in the one sample


def test_tables_and_spread() -> None:
    assert markdown_table(["test", "tokens/s"], [["tg128", "176"]], numeric=(1,)) == (
        "| test | tokens/s |\n| --- | ---: |\n| tg128 | 176 |")
    assert spread([5.0]) == 0.0 and spread([1.0, 3.0]) > 1.4
