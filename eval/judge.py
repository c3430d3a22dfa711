"""A local pairwise judge: which of two answers to a prompt is better, asked in both orders.

The judge model (the offline Qwen2.5-Coder-1.5B-Instruct by default, any local model by
config) reads the request and answers A and B and picks one of "A", "B", "tie". The pick
is constrained: with vLLM, structured outputs restricted to the three choices; with
transformers, the choice whose first token has the highest next-token logit (the same
argmax over the allowed continuations). Greedy, so a verdict is reproducible.

Each pair is judged twice, parallel answer as B and then as A. The two verdicts agree when
they prefer the same answer (or both say tie); a pair's verdict is that preference when
they agree and a tie when they do not, so position bias shows as ties, not as wins. The
agreement rate is reported so the judge's reliability is visible.
"""

from __future__ import annotations

from typing import Any

from eval.config import JudgeConfig

CHOICES = ("A", "B", "tie")

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


def combine(first: str, second: str) -> str:
    return first if first == second else "tie"


class Judge:
    def __init__(self, cfg: JudgeConfig):
        self.cfg = cfg
        from models.registry import resolve_model

        path = str(resolve_model(cfg.model))
        if cfg.backend == "vllm":
            from models.vllm_env import apply_cpu_env, engine_kwargs, require_vllm

            require_vllm()
            apply_cpu_env(cfg.kv_cache_gib)
            from vllm import LLM

            self.llm = LLM(model=path, **engine_kwargs(None, cfg.dtype, cfg.max_model_len))
        else:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            self.tokenizer = AutoTokenizer.from_pretrained(path)
            self.model = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, cfg.dtype)).eval()
            first = [self.tokenizer.encode(c, add_special_tokens=False)[0] for c in CHOICES]
            if len(set(first)) != len(CHOICES):
                raise ValueError(f"the judge's tokenizer starts {CHOICES} with the same token; pick another model")
            self.first_tokens = first

    def pick(self, conversations: list[list[dict[str, str]]]) -> list[str]:
        if self.cfg.backend == "vllm":
            from vllm import SamplingParams
            from vllm.sampling_params import StructuredOutputsParams

            params = SamplingParams(
                temperature=0.0, max_tokens=4, structured_outputs=StructuredOutputsParams(choice=list(CHOICES))
            )
            outs = self.llm.chat(conversations, params, use_tqdm=False)
            return [o.outputs[0].text.strip() for o in outs]
        import torch

        picks = []
        for messages in conversations:
            ids = self.tokenizer.apply_chat_template(
                messages, add_generation_prompt=True, tokenize=True, return_dict=False
            )
            with torch.inference_mode():
                logits = self.model(input_ids=torch.tensor([ids]), logits_to_keep=1).logits[0, -1]
            picks.append(CHOICES[int(torch.argmax(logits[self.first_tokens]))])
        return picks

    def compare(self, prompt: str, serial: str, parallel: str) -> dict[str, Any]:
        """Both orders; the parallel answer's verdict."""
        m = self.cfg.max_chars
        picks = self.pick([judge_messages(prompt, serial, parallel, m), judge_messages(prompt, parallel, serial, m)])
        first, second, agree = preference(picks[0], picks[1])
        return {"picks": picks, "orders": [first, second], "agree": agree, "verdict": combine(first, second)}
