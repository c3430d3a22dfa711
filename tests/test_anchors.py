"""Anchors into the prompt: deterministic resolution, round trips, and safety for
values that are not anchors."""

from __future__ import annotations

import json

from hypothesis import given, settings
from hypothesis import strategies as st

from data_prep import anchors
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


# A booking e-mail and a review: the shapes of the test-split contexts the model mis-copied.
BOOKING = (
    "Estimada Sra. Ruiz:\nLe confirmamos su reserva en Hotel Casa Andina.\n"
    "Entrada: viernes 8 de noviembre\n"
    "Cancelación gratuita hasta 48 horas antes de la llegada; después se cobrará la primera noche.\n\n"
    "extrae la fecha de entrada y la política de cancelación"
)


def test_repair_places_a_mis_copied_tail_and_ends_at_its_line():
    # the tail "de la llegada." is not in the prompt ("de la llegada;" is)
    span = anchors.repair("Estimada Sra.…de la llegada.", BOOKING)
    assert span == BOOKING[: BOOKING.index("noche.") + len("noche.")]
    assert span in BOOKING


def test_repair_places_a_mis_copied_head_at_the_start_of_its_word():
    prompt = "Read this.\nThe endangered Ecuadorian Erotikus is a frog. It lives in the Andes.\nQ1: where?"
    span = anchors.repair("The endangered Ecuadorian,…in the Andes.", prompt)
    assert span == "The endangered Ecuadorian Erotikus is a frog. It lives in the Andes."


def test_repair_gives_up_on_parts_the_prompt_does_not_hold():
    assert anchors.repair("Estimada Sra.…zzzz qqqq wwww.", BOOKING) is None  # tail nowhere
    assert anchors.repair("Querido señor…primera noche.", BOOKING) is None  # head nowhere
    assert anchors.repair("not an anchor at all", BOOKING) is None
    assert anchors.repair(BOOKING[:60], BOOKING) is None  # verbatim: nothing to repair


def test_parse_completion_repairs_only_the_unresolved_context():
    from data_prep.formatting import parse_completion

    exact = anchors.encode(BOOKING[: BOOKING.index("\n\nextrae")], BOOKING)
    text = '{"parallelizable":true,"category":"keyword_extraction","template":"{context} {data}","context":%s,"data":["a","b"],"n":null}'
    assert parse_completion(text % json.dumps(exact), BOOKING)["context"] == BOOKING[: BOOKING.index("\n\nextrae")]
    repaired = parse_completion(text % json.dumps("Estimada Sra.…de la llegada."), BOOKING)["context"]
    assert repaired in BOOKING and repaired.endswith("primera noche.")
    hopeless = parse_completion(text % json.dumps("Estimada Sra.…zzzz qqqq wwww."), BOOKING)["context"]
    assert hopeless == "Estimada Sra.…zzzz qqqq wwww."  # left for the validator to reject (rule 6)
