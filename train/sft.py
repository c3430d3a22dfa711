"""Supervised fine-tuning of the decomposer with TRL + PEFT LoRA (QLoRA on CUDA).

Usage (offline CPU default; any YAML key can be overridden on the command line):

    accelerate launch --config_file configs/accelerate/cpu.yaml train/sft.py \
        --config configs/sft/qwen2.5-coder-0.5b-lora-cpu.yaml

    # resume from the last checkpoint in output_dir
    accelerate launch --config_file configs/accelerate/cpu.yaml train/sft.py \
        --config configs/sft/qwen2.5-coder-0.5b-lora-cpu.yaml --resume_from_checkpoint true

    # one GPU, QLoRA
    accelerate launch --config_file configs/accelerate/single_gpu.yaml train/sft.py \
        --config configs/sft/qwen2.5-0.5b-instruct-qlora-gpu.yaml

The loss is on the completion only (the decomposition JSON and the end-of-turn
token); the adapter has no added tokens and no `modules_to_save`, so vLLM loads it.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from pathlib import Path

import transformers
from transformers import AutoTokenizer, set_seed
from transformers.trainer_utils import get_last_checkpoint
from trl import ModelConfig, SFTConfig, TrlParser, get_peft_config, get_quantization_config

from data_prep.config import ConfigError
from data_prep.formatting import FORMAT_FILE, format_of_messages, write_format_file
from models.weights import REGISTRY, resolve_model
from train.args import DecomposerDataArguments
from train.data import TrainDataError, drop_long, load_sft_dataset, parse_source_caps, select_split
from train.decision_loss import DecisionWeightedSFTTrainer, check_weight
from train.gate_metrics import GateEvaluation
from train.hub import PushError, push_adapter
from train.model_card import render_model_card
from train.plots import plot_loss_curves

logger = logging.getLogger(__name__)


def cpu_has_fast_bf16() -> bool:
    """Whether this CPU runs bf16 matmuls natively (oneDNN with AVX-512 BF16 or AMX)."""
    import torch

    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):
        try:
            flags = open("/proc/cpuinfo").read()
        except OSError:
            return False
        return "avx512_bf16" in flags or "amx_bf16" in flags


def check_args(training_args: SFTConfig, model_args: ModelConfig) -> None:
    import torch

    if training_args.bf16 and not torch.cuda.is_available() and not cpu_has_fast_bf16():
        # TRL's SFTConfig turns bf16 autocast on by default; without native bf16 matmuls a CPU
        # runs them ~100x slower than fp32 (measured: artifacts/bench/training/speed.md)
        logger.warning("bf16 autocast requested, but this CPU has no native bf16 matmul: training in fp32")
        training_args.bf16 = False
        training_args.mixed_precision = os.environ.get("ACCELERATE_MIXED_PRECISION", "no")  # set from bf16 at parse
        if training_args.mixed_precision == "bf16":
            training_args.mixed_precision = "no"

    if model_args.load_in_4bit or model_args.load_in_8bit:
        if not torch.cuda.is_available():
            raise ConfigError(
                "QLoRA (load_in_4bit / load_in_8bit) needs a CUDA GPU and bitsandbytes; this machine has "
                "no CUDA device. Use a *-lora-cpu.yaml config here."
            )
    if not model_args.use_peft:
        raise ConfigError("use_peft must be true: the decomposer is trained as a LoRA adapter")
    if model_args.lora_modules_to_save:
        raise ConfigError("lora_modules_to_save is not allowed: vLLM refuses adapters with modules_to_save")
    if training_args.push_to_hub and not training_args.hub_model_id:
        raise ConfigError("push_to_hub needs hub_model_id (e.g. your-org/decomposer-qwen2.5-0.5b-lora)")


def peft_config(model_args: ModelConfig, data_args: DecomposerDataArguments):
    """TRL's LoRA config from the YAML keys, restricted to the upper layers when asked."""
    config = get_peft_config(model_args)
    first = data_args.lora_first_layer
    if first is not None and config is not None:
        from transformers import AutoConfig

        layers = AutoConfig.from_pretrained(resolve_model(model_args.model_name_or_path)).num_hidden_layers
        if not 0 <= first < layers:
            raise ConfigError(f"lora_first_layer must be in [0, {layers - 1}] for this model, not {first}")
        config.layers_to_transform = list(range(first, layers))
    return config


def warm_start(model, adapter: str) -> None:
    """Load a trained adapter's LoRA weights into the freshly wrapped PEFT model."""
    from peft import set_peft_model_state_dict
    from safetensors.torch import load_file

    path = Path(adapter) / "adapter_model.safetensors"
    if not path.is_file():
        raise ConfigError(f"init_adapter {adapter}: no adapter_model.safetensors in that folder")
    tensors = load_file(str(path))
    try:
        result = set_peft_model_state_dict(model, tensors)
    except RuntimeError as err:  # shape mismatch: another lora_r
        raise ConfigError(f"init_adapter {adapter} does not fit this run's LoRA layout: {str(err)[:300]}") from None
    unexpected = list(getattr(result, "unexpected_keys", []))
    missing = [k for k in getattr(result, "missing_keys", []) if "lora_" in k]
    if unexpected or missing:
        raise ConfigError(
            f"init_adapter {adapter} does not fit this run's LoRA layout (lora_target_modules, lora_first_layer): "
            f"{len(unexpected)} unexpected and {len(missing)} missing LoRA tensors, e.g. {(unexpected or missing)[0]}"
        )
    logger.info("warm start from %s (%d tensors)", adapter, len(tensors))


def resume_checkpoint(training_args: SFTConfig) -> str | None:
    value = training_args.resume_from_checkpoint
    if value is None or str(value).lower() in ("false", "no", ""):
        return None
    if str(value).lower() in ("true", "yes", "last"):
        last = get_last_checkpoint(training_args.output_dir) if Path(training_args.output_dir).is_dir() else None
        if last is None:
            raise ConfigError(
                f"--resume_from_checkpoint true, but {training_args.output_dir} has no checkpoint-* folder"
            )
        return last
    return value


def main(data_args: DecomposerDataArguments, training_args: SFTConfig, model_args: ModelConfig) -> dict:
    # ---------------- logging ----------------
    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s: %(message)s", level=logging.INFO)
    transformers.utils.logging.set_verbosity_warning()
    check_args(training_args, model_args)
    check_weight(data_args.decision_loss_weight)
    set_seed(training_args.seed)

    # ---------------- checkpoint ----------------
    checkpoint = resume_checkpoint(training_args)
    if checkpoint:
        logger.info("resuming from %s", checkpoint)

    # ---------------- tokenizer ----------------
    base_name = model_args.model_name_or_path
    model_path = resolve_model(base_name)  # registry name -> converted offline folder
    tokenizer = AutoTokenizer.from_pretrained(model_path, revision=model_args.model_revision)
    if tokenizer.chat_template is None:
        raise ConfigError(f"{base_name} has no chat template; the decomposer is trained on chat-formatted prompts")

    # ---------------- data ----------------
    dsd = load_sft_dataset(data_args.dataset_path, data_args.data_config)
    train_ds = drop_long(
        select_split(
            dsd,
            data_args.train_split,
            data_args.max_train_samples,
            data_args.balance_positive_fraction,
            training_args.seed,
            parse_source_caps(data_args.train_source_caps),
        ),
        tokenizer,
        training_args.max_length,
        "train",
    )
    eval_ds = None
    if training_args.eval_strategy != "no" or data_args.gate_eval_steps:
        eval_ds = drop_long(
            select_split(dsd, data_args.eval_split, data_args.max_eval_samples),
            tokenizer,
            training_args.max_length,
            data_args.eval_split,
        )
    logger.info("train %d examples, eval %s", len(train_ds), len(eval_ds) if eval_ds is not None else "-")
    output_format = format_of_messages(train_ds[0]["prompt"]) if len(train_ds) else None
    if output_format is None:
        logger.warning("the training prompts use a custom system prompt: no %s is written", FORMAT_FILE)
    else:
        logger.info("output format of the completions: %s", output_format)

    # ---------------- model ----------------
    quantization_config = get_quantization_config(model_args)
    model_init_kwargs = dict(
        revision=model_args.model_revision, attn_implementation=model_args.attn_implementation, dtype=model_args.dtype
    )
    if quantization_config is not None:
        from trl import get_kbit_device_map

        model_init_kwargs.update(quantization_config=quantization_config, device_map=get_kbit_device_map())
    training_args.model_init_kwargs = {**model_init_kwargs, **(training_args.model_init_kwargs or {})}

    # ---------------- trainer ----------------
    # We push the adapter ourselves at the end (with our model card); the Trainer must not
    # create repos or push checkpoints on its own.
    push = training_args.push_to_hub
    training_args.push_to_hub = False
    # The gate's precision/recall on the eval split every gate_eval_steps (train.gate_metrics):
    # the learning curve of the detector, at one prefill per prompt.
    gate = None
    if data_args.gate_eval_steps:
        gate = GateEvaluation(
            tokenizer, eval_ds, data_args.gate_eval_steps, training_args.output_dir, patience=data_args.gate_patience
        )
    trainer = DecisionWeightedSFTTrainer(
        model=model_path,
        decision_loss_weight=data_args.decision_loss_weight,
        args=training_args,
        train_dataset=train_ds,
        processing_class=tokenizer,
        peft_config=peft_config(model_args, data_args),
        eval_dataset=eval_ds if training_args.eval_strategy != "no" else None,
        callbacks=[gate] if gate else None,
    )
    if gate:
        gate.trainer = trainer
    if data_args.init_adapter and not checkpoint:  # a checkpoint already holds the weights
        warm_start(trainer.model, data_args.init_adapter)

    # ---------------- train ----------------
    train_result = trainer.train(resume_from_checkpoint=checkpoint)
    metrics = {f"train_{k}" if not k.startswith("train") else k: v for k, v in train_result.metrics.items()}
    metrics["train_examples"] = len(train_ds)
    trainer.log_metrics("train", train_result.metrics)
    trainer.save_metrics("train", train_result.metrics)
    trainer.save_state()

    # ---------------- eval ----------------
    if eval_ds is not None and training_args.eval_strategy != "no":
        last = trainer.state.log_history[-2:] if trainer.state.log_history else []
        done = [e for e in last if "eval_loss" in e and e.get("step") == trainer.state.global_step]
        eval_metrics = dict(done[0]) if done else trainer.evaluate()  # no second pass over the same step
        eval_metrics.pop("step", None)
        eval_metrics["eval_examples"] = len(eval_ds)
        trainer.log_metrics("eval", eval_metrics)
        trainer.save_metrics("eval", eval_metrics)
        metrics.update(eval_metrics)

    # ---------------- save ----------------
    # Stop at end of turn: the saved generation config carries the tokenizer's eos.
    trainer.model.generation_config.eos_token_id = tokenizer.eos_token_id
    trainer.save_model(training_args.output_dir)
    if trainer.accelerator.is_main_process:
        trainer.model.generation_config.save_pretrained(training_args.output_dir)
        tokenizer.save_pretrained(training_args.output_dir)
        if output_format is not None:
            write_format_file(training_args.output_dir, output_format)  # the decomposer reads it at inference
        plot_loss_curves(
            trainer.state.log_history, f"{training_args.output_dir}/loss_curves.png", title=f"LoRA SFT of {base_name}"
        )
        upstream = REGISTRY[base_name].upstream_id if base_name in REGISTRY else base_name
        config_dump = {
            "data": vars(data_args),
            "model": vars(model_args),
            "training": {k: v for k, v in training_args.to_dict().items() if "token" not in k},
        }
        card = render_model_card(
            repo_id=training_args.hub_model_id,
            base_model=base_name,
            base_model_id=upstream,
            dataset_path=data_args.dataset_path,
            config=config_dump,
            metrics=metrics,
            output_format=output_format,
        )
        with open(f"{training_args.output_dir}/README.md", "w", encoding="utf-8") as f:
            f.write(card)
        with open(f"{training_args.output_dir}/run_summary.json", "w", encoding="utf-8") as f:
            json.dump({"base_model": base_name, "base_model_path": model_path, "metrics": metrics}, f, indent=2)
        logger.info("adapter saved to %s", training_args.output_dir)

        # ---------------- push ----------------
        if push:
            url = push_adapter(
                training_args.output_dir,
                training_args.hub_model_id,
                private=bool(training_args.hub_private_repo),
                token=training_args.hub_token,
            )
            logger.info("pushed to %s", url)
    if hasattr(trainer, "end"):
        trainer.end()
    return metrics


def make_parser() -> TrlParser:
    return TrlParser((DecomposerDataArguments, SFTConfig, ModelConfig))


if __name__ == "__main__":
    try:
        data_args, training_args, model_args = make_parser().parse_args_and_config()
    except ValueError as err:  # unknown YAML keys, bad values: one clear line
        print(f"error: invalid training config: {err}", file=sys.stderr)
        sys.exit(2)
    try:
        main(data_args, training_args, model_args)
    except (ConfigError, TrainDataError, PushError) as err:
        print(f"error: {err}", file=sys.stderr)
        sys.exit(2)
