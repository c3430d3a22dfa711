"""Tiny random-weight models of real architectures, with a real (trained) tokenizer.

For tests and throughput benchmarks: `build_tiny_model(out_dir, texts)` trains a
small byte-level BPE on `texts`, adds the ChatML special tokens the Qwen2 family
uses, and saves a randomly initialised Qwen2 (or Llama) causal LM next to it, so
that `AutoTokenizer` / `AutoModelForCausalLM.from_pretrained(out_dir)` work
offline exactly as they do for the real models.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Literal

CHATML_TEMPLATE = (
    "{%- for message in messages %}"
    "{{- '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\\n' }}{%- endif %}"
)
SPECIAL_TOKENS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]


def train_tokenizer(texts: Iterable[str], vocab_size: int = 1024):
    """A byte-level BPE tokenizer (any UTF-8 text round-trips) with ChatML special tokens."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    backend.train_from_iterator(texts, trainer)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        chat_template=CHATML_TEMPLATE,
    )


def tiny_config(
    vocab_size: int,
    *,
    architecture: Literal["qwen2", "llama"] = "qwen2",
    hidden_size: int = 64,
    layers: int = 2,
    heads: int = 2,
    kv_heads: int = 1,
    eos_token_id: int | None = None,
    pad_token_id: int | None = None,
):
    """Config of a small model; head size hidden/heads = 32 by default (vLLM's CPU
    attention needs a head size in {32, 64, 80, ...})."""
    from transformers import LlamaConfig, Qwen2Config

    cls = {"qwen2": Qwen2Config, "llama": LlamaConfig}[architecture]
    return cls(
        vocab_size=vocab_size,
        hidden_size=hidden_size,
        intermediate_size=hidden_size * 2,
        num_hidden_layers=layers,
        num_attention_heads=heads,
        num_key_value_heads=kv_heads,
        max_position_embeddings=4096,
        tie_word_embeddings=False,
        bos_token_id=None,
        eos_token_id=eos_token_id,
        pad_token_id=pad_token_id,
    )


def build_tiny_model(
    out_dir: str | Path,
    texts: Iterable[str],
    *,
    architecture: Literal["qwen2", "llama"] = "qwen2",
    vocab_size: int = 1024,
    seed: int = 0,
) -> Path:
    """Train the tokenizer, initialise the model with `seed`, save both to `out_dir`."""
    import torch
    from transformers import AutoModelForCausalLM

    out_dir = Path(out_dir)
    tokenizer = train_tokenizer(texts, vocab_size)
    config = tiny_config(
        len(tokenizer),
        architecture=architecture,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
    )
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(out_dir)
    tokenizer.save_pretrained(out_dir)
    return out_dir
