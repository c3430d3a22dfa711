"""A local pairwise judge: which of two answers to a prompt is better, asked in both orders.

The judge model (the offline Qwen2.5-Coder-1.5B-Instruct by default, any local model by
config) reads the request and answers A and B and is asked for one of "A", "B", "tie".
We read its next-token probabilities of the three choices (with vLLM: the top-20
log-probabilities; with transformers: the full next-token distribution), renormalised
over the three, greedy and reproducible.

Each pair is judged twice, the parallel answer as B and then as A. Small judges are
strongly position-biased (the 1.5B picks "A" nearly always), so the verdict comes from
the two orders averaged: P(parallel better) = (P1(B) + P2(A)) / 2 against P(serial
better) = (P1(A) + P2(B)) / 2, a constant preference for one position cancels; a
difference under `tie_margin` is a tie. The raw picks of each order are kept, and how
often the two orders agree (and how often the judge picks "A") is reported so the
judge's reliability is visible.
"""

from __future__ import annotations

import math
from typing import Any

from eval.config import JudgeConfig

CHOICES = ("A", "B", "tie")
TOP_LOGPROBS = 20  # vLLM's default max_logprobs

INSTRUCTIONS = (
    "You are a strict, impartial judge. Compare two answers to the same user request. "
    "Judge which answer fulfils the request better: correct, complete (every part of the "
    "request answered), in the requested language and format. Ignore the order the answers "
    "are shown in and their length as such."
)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit] + " [...cut]"


def judge_messages(prompt: str, answer_a: str, answer_b: str, max_chars: int = 3000) -> list[dict[str, str]]:
    user = (
        f"[User request]\n{_cut(prompt, max_chars)}\n\n"
        f"[Answer A]\n{_cut(answer_a, max_chars)}\n\n"
        f"[Answer B]\n{_cut(answer_b, max_chars)}\n\n"
        'Which answer is better? Reply with exactly one of: "A", "B", "tie".'
    )
    return [{"role": "system", "content": INSTRUCTIONS}, {"role": "user", "content": user}]


def preference(verdict_parallel_b: str, verdict_parallel_a: str) -> tuple[str, str, bool]:
    """(verdict of order 1, of order 2, agree) for the parallel answer: win / tie / loss."""
    first = {"B": "win", "A": "loss", "tie": "tie"}[verdict_parallel_b]
    second = {"A": "win", "B": "loss", "tie": "tie"}[verdict_parallel_a]
    return first, second, first == second


def debiased(probs_parallel_b: list[float], probs_parallel_a: list[float], tie_margin: float) -> dict[str, Any]:
    """The verdict from the choice probabilities (A, B, tie) of both orders averaged."""
    win = (probs_parallel_b[1] + probs_parallel_a[0]) / 2
    loss = (probs_parallel_b[0] + probs_parallel_a[1]) / 2
    verdict = "tie" if abs(win - loss) < tie_margin else ("win" if win > loss else "loss")
    return {"p_win": round(win, 4), "p_loss": round(loss, 4), "verdict": verdict}


def _normalise(logprobs: list[float]) -> list[float]:
    top = max(logprobs)
    exp = [math.exp(x - top) for x in logprobs]
    return [x / sum(exp) for x in exp]


def first_tokens(tokenizer) -> list[int]:
    first = [tokenizer.encode(c, add_special_tokens=False)[0] for c in CHOICES]
    if len(set(first)) != len(CHOICES):
        raise ValueError(f"the judge's tokenizer starts {CHOICES} with the same token; pick another model")
    return first


class Judge:
    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        if cfg.backend == "vllm":
            from models.serving.vllm_env import engine_kwargs, load_llm

            kwargs = engine_kwargs(None, cfg.dtype, cfg.max_model_len)
            self.llm = load_llm(cfg.model, kv_cache_gib=cfg.kv_cache_gib, **kwargs)
            self.tokenizer = self.llm.get_tokenizer()
        else:
            from models.weights import load_causal_lm

            self.tokenizer, self.model = load_causal_lm(cfg.model, cfg.dtype)
        self.first_tokens = first_tokens(self.tokenizer)

    def choice_probs(self, conversations: list[list[dict[str, str]]]) -> list[list[float]]:
        """P(A), P(B), P(tie) of the judge's next token, renormalised over the three."""
        if self.cfg.backend == "vllm":
            from vllm import SamplingParams

            params = SamplingParams(temperature=0.0, max_tokens=1, logprobs=TOP_LOGPROBS)
            outs = self.llm.chat(conversations, params, use_tqdm=False)
            rows = []
            for out in outs:
                top = out.outputs[0].logprobs[0]  # {token id: Logprob}
                floor = min(lp.logprob for lp in top.values())  # a choice outside the top-k: at most this
                rows.append(_normalise([top[t].logprob if t in top else floor for t in self.first_tokens]))
            return rows
        import torch

        rows = []
        for messages in conversations:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
            rows.append(_normalise(torch.log_softmax(logits.float(), -1)[self.first_tokens].tolist()))
        return rows

    def compare(self, prompt: str, serial: str, parallel: str) -> dict[str, Any]:
        """Both orders; the parallel answer's verdict."""
        m = self.cfg.max_chars
        p1, p2 = self.choice_probs(
            [judge_messages(prompt, serial, parallel, m), judge_messages(prompt, parallel, serial, m)]
        )
        picks = [CHOICES[max(range(3), key=p.__getitem__)] for p in (p1, p2)]
        first, second, agree = preference(*picks)
        return {
            "picks": picks,
            "probs": [[round(x, 4) for x in p] for p in (p1, p2)],
            "orders": [first, second],
            "agree": agree,
            **debiased(p1, p2, self.cfg.tie_margin),
        }
