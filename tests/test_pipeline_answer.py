"""models.pipeline: prompt -> decomposer -> branches -> one reassembled answer, really run
(the regex decomposer, the masked-attention executor on the tiny random-weight model)."""

from __future__ import annotations

from models.decomposer import load_decomposer
from models.pipeline import Pipeline
from models.pipeline.answer import load_answerer
from models.pipeline.config import AnswerConfig

LIST_PROMPT = "Translate into French:\n1. The cat sleeps.\n2. The dog runs.\n3. The bird sings."


def make_pipeline(tiny_model_dir, max_branches=64) -> Pipeline:
    cfg = AnswerConfig(
        model=str(tiny_model_dir), serial_max_new_tokens=6, branch_max_new_tokens=4, max_branches=max_branches
    )
    return Pipeline(load_decomposer("rules"), load_answerer("executor", cfg))


def test_a_split_prompt_runs_its_branches_and_is_reassembled_in_order(tiny_model_dir):
    pipeline = make_pipeline(tiny_model_dir)
    result = pipeline.answer(LIST_PROMPT)
    assert result.split and result.decomposition.record.data == ["The cat sleeps.", "The dog runs.", "The bird sings."]
    assert len(result.run.texts) == 3 and all(1 <= t <= 4 for t in result.run.tokens)
    # the user's markers, in the user's order, each before its branch's answer
    starts = [result.text.index(f"{i}. ") for i in (1, 2, 3)]
    assert starts == sorted(starts) and result.text.startswith("1. ")
    assert result.seconds >= result.run.seconds > 0


def test_a_serial_prompt_and_one_over_the_branch_limit_run_serially(tiny_model_dir):
    pipeline = make_pipeline(tiny_model_dir, max_branches=2)
    for prompt in ("What is the capital of France?", LIST_PROMPT):  # not split; 3 branches > 2
        result = pipeline.answer(prompt)
        assert not result.split and len(result.run.texts) == 1
        assert result.text == result.run.texts[0] and 1 <= result.run.tokens[0] <= 6
