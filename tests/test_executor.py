"""The masked-attention executor: greedy outputs are token-identical to running each
sub-prompt alone with plain `generate` (fp32), for Qwen2 and Llama, sdpa and eager,
over random branch counts, prefix and tail lengths, EOS and length limits."""

from __future__ import annotations

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from models.executor import ParallelExecutor, SamplingConfig
from models.executor.core import common_prefix_length

_MODELS: dict = {}


def load(path, attn):
    from transformers import AutoModelForCausalLM

    key = (str(path), attn)
    if key not in _MODELS:
        _MODELS[key] = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn).eval()
    return _MODELS[key]


def reference(model, prompt, cfg):
    out = model.generate(
        torch.tensor([prompt]),
        attention_mask=torch.ones(1, len(prompt), dtype=torch.long),
        max_new_tokens=cfg.max_new_tokens,
        do_sample=False,
        eos_token_id=list(cfg.eos_token_ids) or None,
        pad_token_id=0,
    )
    return out[0, len(prompt) :].tolist()


branch_sets = st.integers(0, 24).flatmap(
    lambda prefix_len: st.tuples(
        st.lists(st.integers(3, 1000), min_size=prefix_len, max_size=prefix_len),
        st.lists(st.lists(st.integers(3, 1000), min_size=1, max_size=8), min_size=1, max_size=6),
    )
)


@pytest.mark.parametrize("arch", ["qwen2", "llama"])
@pytest.mark.parametrize("attn", ["sdpa", "eager"])
@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=branch_sets, max_new=st.integers(1, 10), eos=st.integers(3, 1000))
def test_greedy_equals_one_at_a_time(arch, attn, data, max_new, eos, tiny_model_dir, tiny_llama_dir):
    model = load(tiny_model_dir if arch == "qwen2" else tiny_llama_dir, attn)
    prefix, tails = data
    prompts = [prefix + tail for tail in tails]
    cfg = SamplingConfig(max_new_tokens=max_new, eos_token_ids=(eos,))
    results = ParallelExecutor(model).run(prompts, cfg)
    for prompt, res in zip(prompts, results, strict=True):
        assert res.token_ids == reference(model, prompt, cfg)
        assert res.finish_reason == ("eos" if res.token_ids[-1] == eos else "length")


def test_eos_actually_hit_and_finished_branches_are_dropped(tiny_model_dir):
    model = load(tiny_model_dir, "sdpa")
    prompts = [[5, 6, 7, 8], [5, 6, 7, 9], [5, 6, 7, 10, 11]]
    free = ParallelExecutor(model).run(prompts, SamplingConfig(max_new_tokens=8))
    eos = free[0].token_ids[2]  # make branch 0 stop after 3 tokens
    ex = ParallelExecutor(model)
    res = ex.run(prompts, SamplingConfig(max_new_tokens=8, eos_token_ids=(eos,)))
    assert res[0].finish_reason == "eos" and len(res[0].token_ids) <= 3
    assert ex.stats.generated_tokens == sum(len(r.token_ids) for r in res)
    # the prefill yields each branch's first token; every later token costs one decode step
    assert ex.stats.decode_steps == max(len(r.token_ids) for r in res) - 1
    for prompt, r in zip(prompts, res, strict=True):
        assert r.token_ids == reference(model, prompt, SamplingConfig(max_new_tokens=8, eos_token_ids=(eos,)))


def test_hybrid_batches_equal_separate_runs(tiny_model_dir):
    model = load(tiny_model_dir, "sdpa")
    groups = [[[5, 6, 7, 8, 9], [5, 6, 7, 10]], [[11, 12, 13], [11, 12, 14, 15], [11, 16]], [[20, 21]]]
    cfg = SamplingConfig(max_new_tokens=6)
    separate = [ParallelExecutor(model).run(g, cfg) for g in groups]
    for group_size in (None, 2):
        together = ParallelExecutor(model).run_groups(groups, cfg, group_size=group_size)
        assert [[r.token_ids for r in g] for g in together] == [[r.token_ids for r in g] for g in separate]


def test_repeated_generation_identical_prompts_with_seeds(tiny_model_dir, tiny_tokenizer):
    model = load(tiny_model_dir, "sdpa")
    prompt = tiny_tokenizer.encode("Give me a slogan for a bakery")
    cfg = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, seeds=[1, 2, 3, 1])
    a = ParallelExecutor(model, tiny_tokenizer).run([prompt] * 4, cfg)
    b = ParallelExecutor(model, tiny_tokenizer).run([prompt] * 4, cfg)
    assert [r.token_ids for r in a] == [r.token_ids for r in b]  # per-branch seeds reproduce
    assert a[0].token_ids == a[3].token_ids  # same seed, same prompt, same sample
    assert len({tuple(r.token_ids) for r in a[:3]}) > 1  # different seeds differ
    assert common_prefix_length([prompt] * 4) == len(prompt) - 1


def test_stop_strings(tiny_model_dir, tiny_tokenizer):
    model = load(tiny_model_dir, "sdpa")
    prompt = tiny_tokenizer.encode("Translate: hello")
    free = ParallelExecutor(model, tiny_tokenizer).run([prompt], SamplingConfig(max_new_tokens=10))[0]
    stop = tiny_tokenizer.decode(free.token_ids[3:5])
    res = ParallelExecutor(model, tiny_tokenizer).run(
        [prompt], SamplingConfig(max_new_tokens=10, stop_strings=(stop,))
    )[0]
    assert res.finish_reason == "stop" and stop not in res.text and len(res.token_ids) <= 5


def test_bad_input():
    with pytest.raises(ValueError, match="non-empty"):
        ParallelExecutor.__new__(ParallelExecutor)._run_rows([[[]]], SamplingConfig(), 0)


@pytest.mark.real_model
def test_real_model_real_decompositions(labelled_rows):
    """The offline Qwen2.5-Coder-0.5B on real decompositions from the labelled data."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from data_prep.schema import Record, render_subprompts
    from models.executor import chat_token_ids
    from models.weights.fetch import fetch_model

    path = fetch_model("qwen2.5-coder-0.5b-instruct")
    tok = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32).eval()
    records = [Record.model_validate(r) for r in labelled_rows if r["parallelizable"]]
    picks = [next(r for r in records if r.context and r.data), next(r for r in records if r.n)]
    cfg = SamplingConfig(max_new_tokens=8, eos_token_ids=(tok.eos_token_id,))
    for rec in picks:
        subs = render_subprompts(rec)[:3]
        ids = chat_token_ids(tok, subs, system_prompt="You are a helpful assistant.")
        ex = ParallelExecutor(model, tok)
        results = ex.run(ids, cfg)
        assert ex.stats.prefix_tokens[-1] > 10  # the system prompt and shared head are prefilled once
        for prompt, res in zip(ids, results, strict=True):
            assert res.token_ids == reference(model, prompt, cfg), rec.id


def test_benchmark_quick_on_tiny_model(tmp_path, tiny_model_dir):
    import json

    from models.executor.benchmark import main

    assert (
        main(
            [
                "--model",
                str(tiny_model_dir),
                "--quick",
                "--out",
                str(tmp_path),
                "--methods",
                "one_at_a_time,batched_generate,seqbatch,executor",
            ]
        )
        == 0
    )
    report = json.loads((tmp_path / "results.json").read_text())
    ex = [m for m in report["results"] if m["method"] == "executor"]
    assert ex and all(m["exact_vs_one_at_a_time"] == 1.0 for m in ex)
    assert (tmp_path / "throughput.png").is_file() and "| executor |" in (tmp_path / "results.md").read_text()
