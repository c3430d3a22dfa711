"""The one output format: round trip, SFT record shape, chat template, and agreement
with the JSON Schema that constrained decoding compiles (llguidance)."""

from __future__ import annotations

import json

import pytest

from data_prep.formatting import (
    FORMATS,
    SYSTEM_PROMPT,
    adapter_format,
    format_completion,
    format_of_messages,
    parse_completion,
    prompt_messages,
    sft_example,
    write_format_file,
)
from data_prep.schema import DECOMPOSITION_FIELDS, Record, output_json_schema


@pytest.fixture(scope="module")
def records(labelled_rows):
    return [Record.model_validate(r) for r in labelled_rows]


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_round_trip(records, fmt):
    for rec in records:
        text = format_completion(rec, fmt)
        assert list(json.loads(text)) == list(DECOMPOSITION_FIELDS)
        fields = parse_completion(text, rec.prompt)
        assert Record.model_validate({**rec.model_dump(), **fields}) == rec


def test_compact_format_is_shorter_and_verbatim_is_unchanged(records):
    compact = sum(len(format_completion(r, "anchor-v1")) for r in records)
    verbatim = sum(len(format_completion(r, "json-v2")) for r in records)
    assert compact < 0.8 * verbatim
    rec = next(r for r in records if r.context and len(r.context) > 200)
    assert json.loads(format_completion(rec, "json-v2"))["context"] == rec.context
    assert len(json.loads(format_completion(rec, "anchor-v1"))["context"]) < 100


def test_format_of_messages_and_adapter_format(tmp_path):
    for name in FORMATS:
        assert format_of_messages(prompt_messages("hi", name)) == name
    assert format_of_messages([{"role": "system", "content": "custom"}]) is None
    assert adapter_format(None) == "anchor-v2"
    assert adapter_format(tmp_path) == "json-v2"  # adapters from before the format file
    write_format_file(tmp_path, "anchor-v1")
    assert adapter_format(tmp_path) == "anchor-v1"
    with pytest.raises(ValueError, match="unknown output format"):
        write_format_file(tmp_path, "yaml-v0")


@pytest.mark.parametrize(
    "text, reason",
    [
        ("{not json", "not valid JSON"),
        ("[1, 2]", "not an object"),
        ('{"parallelizable": false, "x": 1}', "unknown keys"),
    ],
)
def test_parse_errors_are_clear(text, reason):
    with pytest.raises(ValueError, match=reason):
        parse_completion(text)


def test_sft_example_is_conversational_prompt_completion(records):
    ex = sft_example(records[0])
    assert ex["prompt"] == prompt_messages(records[0].prompt)
    assert ex["prompt"][0] == {"role": "system", "content": SYSTEM_PROMPT}
    assert ex["completion"] == [{"role": "assistant", "content": format_completion(records[0])}]
    assert json.loads(ex["record"])["id"] == records[0].id


def test_chat_template_prompt_is_prefix_of_full_conversation(records, tiny_tokenizer):
    """TRL masks the loss to the completion by tokenising prompt and prompt+completion;
    the split only works if one is a prefix of the other, with <|im_end|> in the completion."""
    ex = sft_example(records[1])
    prompt_ids = tiny_tokenizer.apply_chat_template(
        ex["prompt"], add_generation_prompt=True, tokenize=True, return_dict=False
    )
    full_ids = tiny_tokenizer.apply_chat_template(ex["prompt"] + ex["completion"], tokenize=True, return_dict=False)
    assert full_ids[: len(prompt_ids)] == prompt_ids
    assert tiny_tokenizer.eos_token_id in full_ids[len(prompt_ids) :]


def _accepts(tokenizer):
    """text -> whether the decomposition grammar accepts it as a whole output."""
    import llguidance
    import llguidance.hf

    lltok = llguidance.hf.from_tokenizer(tokenizer)
    grammar = llguidance.LLMatcher.grammar_from_json_schema(
        output_json_schema(), defaults={"whitespace_flexible": False}
    )

    def accepts(text: str) -> bool:
        matcher = llguidance.LLMatcher(lltok, grammar)
        ids = tokenizer.encode(text, add_special_tokens=False)
        return matcher.try_consume_tokens(ids) == len(ids) and matcher.consume_token(tokenizer.eos_token_id)

    return accepts


@pytest.mark.parametrize("fmt", sorted(FORMATS))
def test_every_gold_completion_is_accepted_by_the_grammar(records, tiny_tokenizer, fmt):
    accepts = _accepts(tiny_tokenizer)
    for rec in records:
        assert accepts(format_completion(rec, fmt)), rec.id


def test_grammar_accepts_literal_braces_and_either_placeholder_order(tiny_tokenizer):
    accepts = _accepts(tiny_tokenizer)
    good = [
        '{"parallelizable":true,"category":"other","template":"{context} then {{json}} {data}",'
        '"context":"ctx","data":["a","b"],"n":null}',
        '{"parallelizable":true,"category":"other","template":"{data} in {context}","context":"c","data":["a","b"],"n":null}',
        '{"parallelizable":true,"category":"repeated_generation","template":"A slogan","context":null,"data":null,"n":5}',
    ]
    for text in good:
        assert accepts(text), text


def test_grammar_rejects_invalid_outputs(tiny_tokenizer):
    accepts = _accepts(tiny_tokenizer)
    bad = [
        '{"parallelizable":true,"category":"poetry"',  # not a category
        '{"parallelizable":true,"category":"other","template":"x {data}","context":null,"data":["only one"]',
        '{"parallelizable":true,"category":"other","template":"x","context":null,"data":null,"n":1',
        '{"parallelizable":false,"category":"other"',
        # rule 5 in the template's regex
        '{"parallelizable":true,"category":"other","template":"x {data} {data}","context":null,"data":["a","b"]',
        '{"parallelizable":true,"category":"other","template":"x {item}","context":null',
        '{"parallelizable":true,"category":"repeated_generation","template":"Give {n} slogans","context":null',
        '{"parallelizable":true,"category":"other","template":"x {data}","context":"shared text","data":["a","b"]',
        '{"parallelizable":true,"category":"other","template":"Use {context}","context":null,"data":null,"n":3',
        '{"parallelizable":true,"category":"other","template":"x {data}","context":null,"data":[" ","b"]',
    ]
    for text in bad:
        assert not accepts(text), text
