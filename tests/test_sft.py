"""train/sft.py through the real CLI (`accelerate launch`) on the tiny random Qwen2:
2 steps end to end, the adapter reloads with peft and generates, resume continues,
bad configs give clear errors, and the end-of-turn token is inside the loss."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from conftest import ACCELERATE, ROOT, run_sft, run_sft_directly, write_config  # noqa: F401


def test_two_steps_end_to_end(trained):
    work, _ = trained
    out = work / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    assert state["global_step"] == 2
    assert any("eval_loss" in e for e in state["log_history"])
    adapter_cfg = json.loads((out / "adapter_config.json").read_text())
    assert not adapter_cfg.get("modules_to_save")
    for name in (
        "adapter_model.safetensors",
        "README.md",
        "loss_curves.png",
        "generation_config.json",
        "run_summary.json",
    ):
        assert (out / name).is_file(), name
    card = (out / "README.md").read_text()
    assert "library_name: peft" in card and "eval_loss" in card and "ParallelPrompt" in card


def test_adapter_reloads_with_peft_and_generates(trained, tiny_model_dir, tiny_tokenizer):
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, GenerationConfig

    out = trained[0] / "out"
    base = AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    model = PeftModel.from_pretrained(base, out)
    assert GenerationConfig.from_pretrained(out).eos_token_id == tiny_tokenizer.eos_token_id
    msgs = [{"role": "user", "content": "Give me 3 slogans for a bakery"}]
    inputs = tiny_tokenizer.apply_chat_template(msgs, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    gen = model.generate(**inputs, max_new_tokens=5, do_sample=False)
    assert gen.shape[1] > inputs["input_ids"].shape[1]
    # the LoRA weights were trained (B starts at zero)
    lora_b = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora_b and any(p.abs().sum() > 0 for p in lora_b)


def test_resume_continues_from_checkpoint(trained):
    work, config = trained
    proc = run_sft(config, "--max_steps", "3", "--resume_from_checkpoint", "true")
    assert proc.returncode == 0, proc.stderr[-4000:]
    assert "resuming from" in proc.stderr
    state = json.loads((work / "out" / "trainer_state.json").read_text())
    assert state["global_step"] == 3
    steps = [e["step"] for e in state["log_history"] if "loss" in e]
    assert steps[-1] == 3


@pytest.mark.parametrize(
    "overrides, message",
    [
        ({"lora_rank": 8}, "Unknown arguments"),
        ({"load_in_4bit": True}, "needs a CUDA GPU"),
        ({"lora_modules_to_save": ["lm_head"]}, "modules_to_save is not allowed"),
        ({"dataset_path": "/nonexistent/sft"}, "does not exist"),
        ({"decision_loss_weight": 0.5}, "decision_loss_weight must be >= 1"),
    ],
)
def test_bad_configs_give_clear_errors(tmp_path, tiny_model_dir, overrides, message):
    dataset = overrides.pop("dataset_path", "/unused")
    config = write_config(tmp_path / "bad.yaml", tiny_model_dir, dataset, tmp_path / "out", **overrides)
    proc = run_sft_directly(config)
    assert proc.returncode == 2, proc.stderr[-2000:]
    assert message in proc.stderr and "Traceback" not in proc.stderr


def test_resume_without_checkpoint_is_an_error(tmp_path, tiny_model_dir, built_default):
    config = write_config(tmp_path / "c.yaml", tiny_model_dir, built_default[0] / "sft", tmp_path / "out")
    proc = run_sft_directly(config, "--resume_from_checkpoint", "true")
    assert proc.returncode == 2 and "has no checkpoint" in proc.stderr


def test_end_of_turn_token_is_inside_the_loss(tiny_model_dir, tiny_tokenizer, built_default):
    """TRL's prompt-completion processing: labels cover the completion and its <|im_end|>."""
    import datasets
    from trl import SFTConfig, SFTTrainer

    ds = (
        datasets.load_from_disk(str(built_default[0] / "sft"))["train"]
        .select(range(4))
        .select_columns(["prompt", "completion"])
    )
    args = SFTConfig(output_dir=str(built_default[0] / "tmp-trainer"), use_cpu=True, report_to="none", max_length=2048)
    trainer = SFTTrainer(model=str(tiny_model_dir), args=args, train_dataset=ds, processing_class=tiny_tokenizer)
    row = trainer.train_dataset[0]
    ids, labels = row["input_ids"], row["labels"]
    trained = [t != -100 for t in labels]
    eos_positions = [i for i, t in enumerate(ids) if t == tiny_tokenizer.eos_token_id]
    assert trained[eos_positions[-1]] and labels[eos_positions[-1]] == tiny_tokenizer.eos_token_id
    assert not any(trained[: eos_positions[1] + 1])  # system and user turns are not trained
    completion = tiny_tokenizer.decode([t for t, m in zip(ids, trained, strict=True) if m])
    assert completion.startswith('{"parallelizable":') and "<|im_end|>" in completion


VLLM_SCRIPT = """
import json, sys
from vllm import LLM, SamplingParams
from vllm.lora.request import LoRARequest
base, adapter, prompts = sys.argv[1], sys.argv[2], json.loads(sys.argv[3])
llm = LLM(model=base, enable_lora=True, max_lora_rank=8, enforce_eager=True, distributed_executor_backend="uni",
          dtype="float32", max_model_len=1024)
outs = llm.generate(prompts, SamplingParams(max_tokens=12, temperature=0, ignore_eos=True),
                    lora_request=LoRARequest("decomposer", 1, adapter))
print("TOKENS:" + json.dumps([list(o.outputs[0].token_ids) for o in outs]))
"""


@pytest.mark.skipif(__import__("importlib").util.find_spec("vllm") is None, reason="vLLM not installed")
def test_vllm_loads_the_adapter_and_matches_peft(trained, tiny_model_dir, tiny_tokenizer):
    """No added tokens, no modules_to_save: vLLM serves the adapter, with the same greedy tokens as peft (fp32)."""
    import torch
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from data_prep.formatting import prompt_messages

    out = trained[0] / "out"
    texts = [
        tiny_tokenizer.apply_chat_template(prompt_messages(p), add_generation_prompt=True, tokenize=False)
        for p in ("Give me 3 slogans for a bakery", "Translate into German: 1. Hello 2. Goodbye")
    ]
    from models.serving.vllm_env import cpu_env

    env = {**os.environ, **cpu_env(kv_cache_gib=1)}
    proc = subprocess.run(
        [sys.executable, "-c", VLLM_SCRIPT, str(tiny_model_dir), str(out), json.dumps(texts)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    vllm_tokens = json.loads(next(line for line in proc.stdout.splitlines() if line.startswith("TOKENS:"))[7:])

    model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32), out)
    for text, expected in zip(texts, vllm_tokens, strict=True):
        ids = tiny_tokenizer(text, return_tensors="pt", add_special_tokens=False)
        gen = model.generate(**ids, max_new_tokens=12, min_new_tokens=12, do_sample=False)
        assert gen[0, ids["input_ids"].shape[1] :].tolist() == expected


def test_push_to_hub_from_the_training_script(tmp_path, tiny_model_dir, built_default, monkeypatch):
    """push_to_hub: true uploads the adapter and its card once, through our pusher (fake HfApi)."""
    from test_hub_push import FakeHfApi

    from train import hub
    from train.sft import main, make_parser

    FakeHfApi.calls = []
    monkeypatch.setattr(hub, "HfApi", FakeHfApi)
    config = write_config(
        tmp_path / "c.yaml",
        tiny_model_dir,
        built_default[0] / "sft",
        tmp_path / "out",
        max_steps=1,
        eval_strategy="no",
        save_strategy="no",
    )
    args = make_parser().parse_args_and_config(
        ["--config", str(config), "--push_to_hub", "true", "--hub_model_id", "me/decomposer-tiny"]
    )
    main(*args)
    assert [c[0] for c in FakeHfApi.calls] == ["create_repo", "upload_folder"]
    assert FakeHfApi.calls[1][2] == str(tmp_path / "out")
    assert "me/decomposer-tiny" in (tmp_path / "out" / "README.md").read_text()


def test_gate_metrics_are_logged_at_each_gate_evaluation(tmp_path, tiny_model_dir, built_default):
    """The detector's learning curve: eval_gate_* on the eval split every gate_eval_steps
    and at the last step, the per-prompt scores written, the train metrics left alone."""
    from models.decomposer.hf_backend import HFDecomposer

    config = write_config(
        tmp_path / "gate.yaml",
        tiny_model_dir,
        built_default[0] / "sft",
        tmp_path / "out",
        eval_strategy="no",
        gate_eval_steps=2,
        max_steps=3,
        max_eval_samples=8,
        lora_first_layer=1,
    )
    proc = run_sft(config)
    assert proc.returncode == 0, proc.stderr[-4000:]
    out = tmp_path / "out"
    state = json.loads((out / "trainer_state.json").read_text())
    evals = [e for e in state["log_history"] if "eval_gate_f1" in e]
    assert [e["step"] for e in evals] == [2, 3]
    assert 0.0 <= evals[0]["eval_gate_ap"] <= 1.0 and 0.0 <= evals[0]["eval_gate_precision"] <= 1.0
    assert all("mean_token_accuracy" in e for e in state["log_history"] if "loss" in e)
    scores = [json.loads(line) for line in (out / "gate_scores" / "step-3.jsonl").read_text().splitlines()]
    assert 0 < len(scores) <= 8 and all(0.0 < s["p"] < 1.0 for s in scores)  # long ones dropped (max_length)
    # the final scores are the hf backend's gate on the same prompts with the trained adapter
    hf = HFDecomposer(model=str(tiny_model_dir), adapter=str(out))
    assert hf.decision_probs([s["prompt"] for s in scores]) == pytest.approx([s["p"] for s in scores], abs=1e-4)
    adapter_cfg = json.loads((tmp_path / "out" / "adapter_config.json").read_text())
    assert adapter_cfg["layers_to_transform"] == [1]  # the tiny model's upper layer only


def test_bf16_autocast_only_where_the_cpu_has_native_bf16(tmp_path):
    """TRL turns bf16 autocast on by default; a CPU without native bf16 matmuls runs them
    ~100x slower, so check_args falls back to fp32 there, mixed precision included."""
    import torch
    from trl import ModelConfig, SFTConfig

    from train.sft import check_args, cpu_has_fast_bf16

    args = SFTConfig(output_dir=str(tmp_path), use_cpu=True, bf16=True, report_to="none")
    assert args.mixed_precision == "bf16"
    check_args(args, ModelConfig(use_peft=True))
    if torch.cuda.is_available() or cpu_has_fast_bf16():
        assert args.bf16 and args.mixed_precision == "bf16"
    else:
        assert not args.bf16 and args.mixed_precision == "no"


def test_warm_start_loads_the_adapter_weights(trained, tmp_path, tiny_model_dir, built_default):
    """init_adapter: at learning rate 0 the saved adapter is exactly the one it started from;
    an adapter of another LoRA layout is refused with a clear message."""
    from safetensors.torch import load_file

    work, _ = trained
    start = work / "out" / "adapter_model.safetensors"
    config = write_config(
        tmp_path / "warm.yaml",
        tiny_model_dir,
        built_default[0] / "sft",
        tmp_path / "out",
        init_adapter=str(work / "out"),
        learning_rate=0.0,
        max_steps=1,
        eval_strategy="no",
        save_strategy="no",
    )
    proc = run_sft_directly(config)
    assert proc.returncode == 0, proc.stderr[-3000:]
    before, after = load_file(str(start)), load_file(str(tmp_path / "out" / "adapter_model.safetensors"))
    assert before.keys() == after.keys() and all((before[k] == after[k]).all() for k in before)
    assert any(k for k in before if "lora_B" in k and before[k].abs().sum() > 0)  # not a fresh (zero) lora_B

    other = write_config(
        tmp_path / "other.yaml",
        tiny_model_dir,
        built_default[0] / "sft",
        tmp_path / "out2",
        init_adapter=str(work / "out"),
        lora_r=4,
        max_steps=1,
        eval_strategy="no",
    )
    proc = run_sft_directly(other)
    assert proc.returncode != 0 and "does not fit this run's LoRA layout" in proc.stderr
    assert "Traceback" not in proc.stderr
