"""Grammar-constrained decoding for transformers with llguidance.

`GrammarLogitsProcessor` keeps one llguidance matcher per batch row, compiled from the
decomposition JSON Schema: at each step it feeds the row's last token to its matcher
and masks every token the grammar forbids, so only outputs the schema accepts can be
decoded; once the grammar is complete only end-of-turn is allowed. The same engine
serves vLLM's `guidance` structured-outputs backend, so both backends share one grammar.
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Any

import torch
from transformers import LogitsProcessor

WHITESPACE = {"whitespace_flexible": False}  # compact JSON, as the decomposer is trained


@lru_cache(maxsize=4)
def _lltokenizer(tokenizer, n_vocab: int):
    import llguidance.hf

    return llguidance.hf.from_tokenizer(tokenizer, n_vocab=n_vocab)


@lru_cache(maxsize=16)
def _grammar(schema_json: str) -> str:
    import llguidance

    return llguidance.LLMatcher.grammar_from_json_schema(json.loads(schema_json), defaults=WHITESPACE)


class GrammarError(RuntimeError):
    pass


class GrammarLogitsProcessor(LogitsProcessor):
    """Masks logits to the tokens a JSON Schema allows. One instance per `generate` call."""

    def __init__(self, tokenizer, schema: dict[str, Any], vocab_size: int):
        import llguidance

        self._llg = llguidance
        self.lltok = _lltokenizer(tokenizer, vocab_size)
        self.grammar = _grammar(json.dumps(schema))  # key order matters: it is the emitted order
        self.vocab_size = vocab_size
        self.matchers: list[Any] | None = None
        self.bitmask: torch.Tensor | None = None

    def _start(self, batch: int) -> None:
        import llguidance.torch as llt

        self.matchers = [self._llg.LLMatcher(self.lltok, self.grammar) for _ in range(batch)]
        for m in self.matchers:
            if m.is_error():
                raise GrammarError(f"the output grammar does not compile: {m.get_error()}")
        self.bitmask = llt.allocate_token_bitmask(batch, self.vocab_size)

    def __call__(self, input_ids: torch.LongTensor, scores: torch.FloatTensor) -> torch.FloatTensor:
        import llguidance.torch as llt

        if self.matchers is None:
            self._start(input_ids.shape[0])
        else:
            for row, matcher in enumerate(self.matchers):
                if not matcher.is_stopped():  # finished rows are padded by generate(): nothing to feed
                    matcher.consume_token(int(input_ids[row, -1]))
        assert self.bitmask is not None
        for row, matcher in enumerate(self.matchers):
            if matcher.is_error():
                raise GrammarError(f"row {row}: {matcher.get_error()}")
            llt.fill_next_token_bitmask(matcher, self.bitmask, row)
        llt.apply_token_bitmask_inplace(scores, self.bitmask.to(scores.device))
        return scores

    def accepted(self) -> list[bool]:
        """Per row: the grammar reached a complete output (it ended, not cut by the budget)."""
        return [m.is_stopped() or m.is_accepting() for m in (self.matchers or [])]
