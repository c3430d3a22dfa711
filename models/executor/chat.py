"""Chat-format helpers shared by the executor's callers and the decomposer: one user turn
as messages or token ids, and where a generation ends."""

from __future__ import annotations


def end_of_turn_ids(model, tokenizer) -> tuple[int, ...]:
    """The tokens that end a generation: the generation config's eos ids and the tokenizer's."""
    eos = model.generation_config.eos_token_id
    return tuple(sorted({*(eos if isinstance(eos, list) else [eos]), tokenizer.eos_token_id} - {None}))


def generated_length(ids: list[int], stops: tuple[int, ...]) -> int:
    """Tokens up to and including the first end-of-turn token (all of them if none)."""
    return next((i + 1 for i, t in enumerate(ids) if t in stops), len(ids))


def chat_messages(prompt: str, system_prompt: str | None = None) -> list[dict[str, str]]:
    """One user turn, after the system prompt when there is one."""
    return ([{"role": "system", "content": system_prompt}] if system_prompt else []) + [
        {"role": "user", "content": prompt}
    ]


def chat_token_ids(tokenizer, prompts: list[str], system_prompt: str | None = None) -> list[list[int]]:
    """Sub-prompts as chat-templated token ids (the executor's input)."""
    out = []
    for prompt in prompts:
        messages = chat_messages(prompt, system_prompt)
        out.append(
            tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)
        )
    return out
