"""Anchors into the prompt: deterministic resolution, round trips, and safety for
values that are not anchors."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep.anchors import SEP, encode, is_anchor, resolve

PASSAGE = (
    "The Amazon rainforest covers much of the Amazon basin of South America. "
    "This basin encompasses seven million square kilometres, of which five and a half "
    "million are covered by the rainforest."
)
PROMPT = f"Read this:\n{PASSAGE}\n\n1. How big is the basin?\n2. Which continent is it on?"


def test_long_span_becomes_short_anchor_that_resolves_back():
    anchor = encode(PASSAGE, PROMPT)
    assert SEP in anchor and len(anchor) < len(PASSAGE) / 2
    assert anchor.startswith("The Amazon rainforest") and anchor.endswith("the rainforest.")
    assert resolve(anchor, PROMPT) == PASSAGE and is_anchor(anchor, PROMPT)


def test_short_or_foreign_values_stay_verbatim():
    assert encode("How big is the basin?", PROMPT) == "How big is the basin?"
    assert encode("not in the prompt at all, and quite a long paraphrase too", PROMPT).find(SEP) < 0
    assert resolve("How big is the basin?", PROMPT) == "How big is the basin?"
    assert resolve(f"nowhere{SEP}found", PROMPT) == f"nowhere{SEP}found"  # unresolvable: left for the checks
    assert resolve(f"{SEP}rainforest.", PROMPT) == f"{SEP}rainforest."  # an empty head is no anchor


def test_literal_ellipsis_in_prompt_is_kept():
    prompt = f"Quote: wait{SEP} what? and more text around it to be long enough for anchors"
    assert resolve(f"wait{SEP} what?", prompt) == f"wait{SEP} what?"


def test_cjk_spans_anchor_by_character():
    passage = (
        "亚马逊雨林覆盖了南美洲亚马逊盆地的大部分地区。这个盆地面积达七百万平方公里，其中五百五十万平方公里被雨林覆盖。"
    )
    prompt = f"阅读下文：\n{passage}\n问题：盆地有多大？"
    anchor = encode(passage, prompt)
    assert SEP in anchor and resolve(anchor, prompt) == passage


def test_repeated_head_uses_a_longer_anchor():
    item = "Please rate the service of the hotel on a scale from one to ten, honestly"
    prompt = f"Please rate the food here. {item}"
    anchor = encode(item, prompt)
    assert resolve(anchor, prompt) == item


words = st.text(alphabet="abcdefgh", min_size=1, max_size=6)


@settings(max_examples=300, deadline=None)
@given(st.lists(words, min_size=5, max_size=60), st.data())
def test_encode_always_round_trips(tokens, data):
    prompt = " ".join(tokens)
    i = data.draw(st.integers(0, len(tokens) - 1))
    j = data.draw(st.integers(i + 1, len(tokens)))
    span = " ".join(tokens[i:j])
    assert resolve(encode(span, prompt), prompt) == span
