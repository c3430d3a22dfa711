"""The session fixture's tiny random Qwen2: loads like a real model, chats, generates, reloads."""

from __future__ import annotations

import torch
from transformers import AutoModelForCausalLM


def test_tiny_model_loads_and_generates(tiny_model_dir, tiny_tokenizer):
    model = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    assert model.config.model_type == "qwen2"
    assert model.config.hidden_size // model.config.num_attention_heads == 32
    assert model.generation_config.eos_token_id == tiny_tokenizer.eos_token_id
    msgs = [{"role": "user", "content": "Übersetze: 你好 {x}"}]
    inputs = tiny_tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    text = tiny_tokenizer.decode(inputs["input_ids"][0])
    assert text == "<|im_start|>user\nÜbersetze: 你好 {x}<|im_end|>\n<|im_start|>assistant\n"
    out = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert out.shape[1] <= inputs["input_ids"].shape[1] + 6
    again = model.generate(**inputs, max_new_tokens=6, do_sample=False)
    assert torch.equal(out, again)


def test_llama_variant(tmp_path):
    from tiny import build_tiny_model

    path = build_tiny_model(tmp_path, ["hello world"] * 10, architecture="llama", vocab_size=300)
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.config.model_type == "llama"
