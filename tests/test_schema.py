"""Every rule of SCHEMA.md, accepting and rejecting; JSON Schema export; rendering."""

from __future__ import annotations

import copy

import pytest

from data_prep.schema import (
    CATEGORIES,
    Record,
    check_record,
    errors,
    output_json_schema,
    parse_record,
    render_subprompts,
)

PROMPT = "Translate into French:\n1. Good morning\n2. See you {soon}\nContext: the shop is closed."
GOOD_DATA = {
    "id": "t-1",
    "source": "test",
    "language": "en",
    "prompt": PROMPT,
    "parallelizable": True,
    "category": "translation",
    "template": "Translate into French: {data}",
    "context": None,
    "data": ["Good morning", "See you {soon}"],
    "n": None,
}
GOOD_N = {
    "id": "t-2",
    "source": "test",
    "language": "en",
    "prompt": "Give me 5 slogans for a bakery called Crumb.",
    "parallelizable": True,
    "category": "repeated_generation",
    "template": "Give me a slogan for a bakery called {context}.",
    "context": "Crumb",
    "data": None,
    "n": 5,
}
GOOD_NEG = {
    "id": "t-3",
    "source": "test",
    "language": "de",
    "prompt": "Schreib mir ein Gedicht über den Herbst.",
    "parallelizable": False,
    "category": None,
    "template": None,
    "context": None,
    "data": None,
    "n": None,
}


def rules(obj) -> set[str]:
    return {v.rule for v in errors(check_record(obj))}


@pytest.mark.parametrize("good", [GOOD_DATA, GOOD_N, GOOD_NEG])
def test_valid_records_pass(good):
    assert errors(check_record(good)) == []


def test_real_labelled_file_has_no_errors(labelled_rows):
    broken = {r["id"]: errors(check_record(r)) for r in labelled_rows}
    assert {k: v for k, v in broken.items() if v} == {}
    # rule 7 allows minimal paraphrases; they are reported as warnings, not errors
    warned = [r["id"] for r in labelled_rows if check_record(r)]
    assert set(warned) == {"train-ru-0052", "train-ar-0062"}


def mutate(base, **changes):
    rec = copy.deepcopy(base)
    rec.update(changes)
    return rec


@pytest.mark.parametrize(
    "record, rule",
    [
        # rule 2: negatives carry no decomposition
        (mutate(GOOD_NEG, category="other"), "rule2.negative_nulls"),
        (mutate(GOOD_NEG, n=3), "rule2.negative_nulls"),
        # rule 3: exactly one of data / n, with at least two
        (mutate(GOOD_DATA, n=2), "rule3.data_or_n"),
        (mutate(GOOD_N, n=None), "rule3.data_or_n"),
        (mutate(GOOD_DATA, data=["Good morning"]), "rule3.data_len"),
        (mutate(GOOD_N, n=1), "rule3.n_min"),
        (mutate(GOOD_DATA, data=["Good morning", "  "]), "rule3.data_empty"),
        # rule 4: category from the list, present on positives
        (mutate(GOOD_DATA, category=None), "rule4.category"),
        (mutate(GOOD_DATA, category="summarisation"), "types"),
        # rule 5: placeholders
        (mutate(GOOD_DATA, template="Translate into French"), "rule5.data_placeholder"),
        (mutate(GOOD_DATA, template="Translate {data} into French: {data}"), "rule5.data_placeholder"),
        (mutate(GOOD_N, template="Give me a slogan for {data}: {context}"), "rule5.data_placeholder"),
        (mutate(GOOD_N, template="Give me a slogan."), "rule5.context_placeholder"),
        (mutate(GOOD_DATA, template="{context} Translate: {data}"), "rule5.context_placeholder"),
        (mutate(GOOD_N, template="Give me {n} slogans for {context}."), "rule5.count_placeholder"),
        (mutate(GOOD_DATA, template="Translate {data} into {language}"), "rule5.unknown_placeholder"),
        (mutate(GOOD_DATA, template='Translate {data} as {"json": 1}'), "rule5.unknown_placeholder"),
        (mutate(GOOD_DATA, template="Translate {data} }"), "rule5.braces"),
        (mutate(GOOD_DATA, template="   "), "rule5.template"),
        # rule 6: context copied verbatim
        (mutate(GOOD_N, context="crumb"), "rule6.context_verbatim"),
        (mutate(GOOD_N, context="bakery  called Crumb"), "rule6.context_verbatim"),
        (mutate(GOOD_N, context=" "), "rule6.context_empty"),
        # types and basics
        (mutate(GOOD_N, n=2.0), "types"),
        (mutate(GOOD_N, n="5"), "types"),
        (mutate(GOOD_DATA, parallelizable="true"), "types"),
        (mutate(GOOD_DATA, extra_field=1), "types"),
        (mutate(GOOD_DATA, language="english"), "language"),
        (mutate(GOOD_DATA, prompt=""), "prompt"),
    ],
)
def test_each_rule_rejects(record, rule):
    assert rule in rules(record)


def test_doubled_braces_are_literal():
    rec = mutate(GOOD_DATA, template="Translate {{as JSON}}: {data}")
    assert errors(check_record(rec)) == []
    assert render_subprompts(Record.model_validate(rec))[0] == "Translate {as JSON}: Good morning"


def test_rule7_paraphrase_is_a_warning_only():
    rec = mutate(GOOD_DATA, data=["Good morning", "Goodbye"])
    violations = check_record(rec)
    assert errors(violations) == []
    assert [v.rule for v in violations] == ["rule7.item_verbatim"]


def test_reasons_are_readable():
    _, violations = parse_record(mutate(GOOD_N, context="crumb"))
    assert "not a verbatim substring" in str(violations[0])
    _, violations = parse_record(mutate(GOOD_N, n="5"))
    assert "field 'n'" in violations[0].reason


def test_render_subprompts():
    data_rec = Record.model_validate(GOOD_DATA)
    assert render_subprompts(data_rec) == [
        "Translate into French: Good morning",
        "Translate into French: See you {soon}",
    ]
    n_rec = Record.model_validate(GOOD_N)
    assert render_subprompts(n_rec) == ["Give me a slogan for a bakery called Crumb."] * 5
    neg = Record.model_validate(GOOD_NEG)
    assert render_subprompts(neg) == [neg.prompt]


def test_render_every_labelled_record(labelled_rows):
    for row in labelled_rows:
        rec = Record.model_validate(row)
        subs = render_subprompts(rec)
        if rec.parallelizable:
            assert len(subs) == (len(rec.data) if rec.data else rec.n)
            if rec.context:
                assert all(rec.context in s for s in subs)
            if rec.data:
                assert all(item in s for item, s in zip(rec.data, subs, strict=True))
        else:
            assert subs == [rec.prompt]


def test_json_schema_shape():
    schema = output_json_schema()
    serial, over_data, over_data_ctx, repeated, repeated_ctx = schema["anyOf"]
    assert serial["properties"]["parallelizable"] == {"const": False}
    assert over_data["properties"]["category"]["enum"] == list(CATEGORIES)
    assert over_data["properties"]["data"]["minItems"] == 2
    assert over_data["properties"]["context"] == {"type": "null"}
    assert over_data_ctx["properties"]["context"]["minLength"] == 1
    assert repeated["properties"]["n"]["minimum"] == 2
    assert repeated_ctx["properties"]["data"] == {"type": "null"}
    assert all(v["additionalProperties"] is False for v in schema["anyOf"])
