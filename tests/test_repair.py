"""Safe repairs of known upstream label defects, and what stays broken."""

from __future__ import annotations

from data_prep.repair import escape_literal_braces, find_loose, one_output_template, repair, strip_list_markers
from data_prep.schema import errors, parse_record


def upstream(**fields):
    base = {
        "id": "u",
        "source": "parallelprompt-lmsys",
        "language": "en",
        "parallelizable": True,
        "category": "reading_comprehension",
        "context": None,
        "data": None,
        "n": None,
    }
    base.update(fields)
    return base


def valid(rec) -> bool:
    _, violations = parse_record(rec)
    return not errors(violations)


def test_context_matching_up_to_whitespace_is_recut_from_the_prompt():
    prompt = "Read this:\n\nThe  cat sat\non the mat.\n\nQ1. Who sat?\nQ2. Where?"
    rec = upstream(
        prompt=prompt,
        template="{context}\n\nAnswer: {data}",
        context="The cat sat on the mat.",
        data=["Who sat?", "Where?"],
    )
    assert not valid(rec)
    fixed, notes = repair(rec, upstream=True)
    assert fixed["context"] == "The  cat sat\non the mat."
    assert fixed["context"] in prompt
    assert "recut_context_whitespace" in notes
    assert valid(fixed)


def test_reworded_context_is_not_repaired():
    rec = upstream(
        prompt="Answer the questions below.\n1. a?\n2. b?",
        template="{context}\n{data}",
        context="Answer the question below.",
        data=["a?", "b?"],
    )
    fixed, _ = repair(rec, upstream=True)
    assert fixed["context"] == "Answer the question below."
    assert not valid(fixed)


def test_count_template_becomes_one_output():
    assert one_output_template("Generate {n} sentence(s) with the word x.") == "Generate one sentence with the word x."
    assert one_output_template("Please generate {n} unique quiz(zes) now") == "Please generate one unique quiz now"
    assert (
        one_output_template("Generate {n} website domain recommendation(s).")
        == "Generate one website domain recommendation."
    )
    assert one_output_template("Write {n} ideas") == "Write one ideas"
    rec = upstream(
        category="repeated_generation",
        prompt="Generate 10 riddle(s) about cats",
        template="Generate {n} riddle(s) about cats",
        n=10,
        context="",
    )
    fixed, notes = repair(rec, upstream=True)
    assert fixed["template"] == "Generate one riddle about cats"
    assert fixed["context"] is None
    assert {"count_template_to_one_output", "empty_context_to_null"} <= set(notes)
    assert valid(fixed)


def test_literal_braces_are_escaped_but_placeholders_kept():
    t = "Extract tags for {data}\n\nText: {context}. Give output as: {text: tag}"
    escaped = escape_literal_braces(t)
    assert escaped == "Extract tags for {data}\n\nText: {context}. Give output as: {{text: tag}}"
    assert escaped.format(context="C", data="D") == "Extract tags for D\n\nText: C. Give output as: {text: tag}"


def test_list_markers_stripped_only_when_every_item_has_one():
    assert strip_list_markers(["1. What?", "2) Why?", "- How?"]) == ["What?", "Why?", "How?"]
    assert strip_list_markers(["1. What?", "Why?"]) == ["1. What?", "Why?"]
    assert strip_list_markers(["3.5 million people", "4.2 million"]) == ["3.5 million people", "4.2 million"]


def test_unused_nonempty_context_is_not_silently_dropped():
    rec = upstream(
        prompt="Passage: P.\nQ1 a?\nQ2 b?", template="Answer: {data}", context="Passage: P.", data=["a?", "b?"]
    )
    fixed, _ = repair(rec, upstream=True)
    assert fixed["context"] == "Passage: P."  # the label lost its passage: dropped by validation, not hidden
    assert not valid(fixed)


def test_find_loose():
    assert find_loose("a b", "x a\n\tb y") == "a\n\tb"
    assert find_loose("a c", "a b c") is None
    assert find_loose("  ", "abc") is None


def test_schema_records_are_not_brace_escaped():
    rec = upstream(
        source="claude-authored", prompt="Fix: {x} one. two.", template="Fix {{x}}: {data}", data=["one.", "two."]
    )
    fixed, notes = repair(rec, upstream=False)
    assert fixed["template"] == "Fix {{x}}: {data}" and notes == []
