# ruff: noqa
# The body of the script that "Copy as code" writes.  `script.to_python_script` puts CONFIG
# and TRAINING_ARGS in front of this text; the package never imports this module.  It may use
# only the standard library, numpy, torch, transformers, peft and datasets, because the person
# who runs it may not have modx_widgets installed.  Every step follows what a modx_widgets run
# does, so the same task with the same seed logs the same losses.

import argparse
import json
import os
import re
import sys
import time
from pathlib import Path

ROLES = ("system", "user", "assistant")
IGNORE_INDEX = -100  # label of tokens that do not count in the loss


# ---------------------------------------------------------------------------- reading the data


def read_lines(path):
    """(line number, text) for every line; a UTF-8 byte-order mark and CRLF line ends are fine."""
    text = Path(path).expanduser().read_text(encoding="utf-8-sig")
    for number, line in enumerate(text.split("\n"), 1):
        yield number, line.rstrip("\r\n")


def conversation_problem(record):
    """Why a JSON line is not a usable conversation, or None."""
    if not isinstance(record, dict) or not isinstance(record.get("messages"), list) or not record["messages"]:
        return 'expected {"messages": [{"role": ..., "content": ...}, ...]}'
    for i, message in enumerate(record["messages"], 1):
        if not isinstance(message, dict) or message.get("role") not in ROLES:
            return f"message {i}: role must be one of {', '.join(ROLES)}"
        content = message.get("content")
        if not isinstance(content, str) or not content.strip():
            return f"message {i}: content must be a non-empty string"
        if message["role"] == "system" and i != 1:
            return f"message {i}: a system message may only come first"
    if not any(m["role"] == "assistant" for m in record["messages"]):
        return "no assistant turn"
    return None


def read_records(path, training_type):
    """Conversations (SFT) or document strings (pre-training), in file order.

    Pre-training files are JSON Lines with a "text" field when the name ends in .jsonl/.json or
    the first line is such an object; otherwise every non-blank line is one document.  A bad
    line stops the script with its line number, as a modx_widgets run would refuse to start.
    """
    lines = [(n, line) for n, line in read_lines(path) if line.strip()]
    if not lines:
        sys.exit(f"{path}: no data")
    as_json = training_type == "sft" or Path(path).suffix.lower() in (".jsonl", ".json")
    if not as_json:
        try:
            first = json.loads(lines[0][1])
            as_json = isinstance(first, dict) and "text" in first
        except ValueError:
            pass
    if not as_json:
        return [line for _, line in lines]
    records, problems = [], []
    for number, line in lines:
        try:
            value = json.loads(line)
        except ValueError as exc:
            problems.append(f"line {number}: not valid JSON ({exc})")
            continue
        if training_type == "sft":
            problem = conversation_problem(value)
        else:
            ok = isinstance(value, dict) and isinstance(value.get("text"), str) and value["text"].strip()
            problem = None if ok else 'expected {"text": "..."}'
        if problem:
            problems.append(f"line {number}: {problem}")
        else:
            records.append(value["messages"] if training_type == "sft" else value["text"])
    if problems:
        shown = "\n  ".join(problems[:10])
        sys.exit(f"{path}: {len(problems)} bad line(s); fix or remove them:\n  {shown}")
    return records


# ---------------------------------------------------------------------------- tokenizing


def render(tokenizer, messages, add_generation_prompt=False):
    return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=add_generation_prompt)


def assistant_char_spans(tokenizer, messages, text):
    """Character spans of the assistant replies in `text`, for templates without generation tags.

    Each reply is what the conversation up to that reply adds after the generation prompt;
    when a template re-renders earlier turns, the reply text itself is searched for.
    """
    spans, cursor = [], 0
    for k, message in enumerate(messages):
        if message["role"] != "assistant":
            continue
        prompt = render(tokenizer, messages[:k], add_generation_prompt=True) if k else ""
        upto = text if k == len(messages) - 1 else render(tokenizer, messages[: k + 1])
        if upto.startswith(prompt) and text.startswith(upto) and len(upto) > len(prompt) >= cursor:
            spans.append((len(prompt), len(upto)))
            cursor = len(upto)
            continue
        at = text.find(message["content"], cursor)
        if at >= 0:
            spans.append((at, at + len(message["content"])))
            cursor = at + len(message["content"])
    return spans


def mark_tokens(offsets, spans):
    """1 for every token whose characters overlap an assistant span, else 0."""
    mask = [0] * len(offsets)
    for i, (start, end) in enumerate(offsets):
        if end > start and any(start < b and end > a for a, b in spans):
            mask[i] = 1
    return mask


def encode_conversation(tokenizer, messages, has_generation_tags):
    """(token ids, assistant mask) of one conversation rendered with the chat template."""
    if has_generation_tags and tokenizer.is_fast:
        out = tokenizer.apply_chat_template(
            messages, tokenize=True, return_dict=True, return_assistant_tokens_mask=True
        )
        return list(out["input_ids"]), list(out["assistant_masks"])
    text = render(tokenizer, messages)
    spans = [(a, b) for a, b in assistant_char_spans(tokenizer, messages, text) if b > a]
    if tokenizer.is_fast:
        enc = tokenizer(text, add_special_tokens=False, return_offsets_mapping=True)
        return list(enc["input_ids"]), mark_tokens(enc["offset_mapping"], spans)
    ids, mask, pos = [], [], 0  # slow tokenizer: encode the text between span edges piece by piece
    for a, b in spans:
        piece = tokenizer.encode(text[pos:a], add_special_tokens=False) if a > pos else []
        reply = tokenizer.encode(text[a:b], add_special_tokens=False)
        ids, mask, pos = ids + piece + reply, mask + [0] * len(piece) + [1] * len(reply), b
    rest = tokenizer.encode(text[pos:], add_special_tokens=False) if pos < len(text) else []
    return ids + rest, mask + [0] * len(rest)


def tokenize_conversations(conversations, tokenizer, max_seq_length):
    """Examples with labels only on assistant tokens, cut at max_seq_length.

    An example whose assistant part was cut away entirely is dropped: it would teach nothing.
    """
    template = tokenizer.chat_template
    if isinstance(template, dict):
        template = template.get("default")
    if not template:
        sys.exit("the tokenizer has no chat template; set tokenizer.chat_template or use another tokenizer_path")
    has_tags = re.search(r"\{%-?\s*generation\s*-?%\}", template) is not None
    examples = []
    for messages in conversations:
        messages = [{k: v for k, v in m.items() if v is not None} for m in messages]
        ids, mask = encode_conversation(tokenizer, messages, has_tags)
        ids, mask = ids[:max_seq_length], mask[:max_seq_length]
        if any(mask):
            labels = [t if m else IGNORE_INDEX for t, m in zip(ids, mask)]
            examples.append({"input_ids": ids, "attention_mask": [1] * len(ids), "labels": labels})
    return examples


def pack_documents(documents, order, separator, max_seq_length):
    """Join the documents `order` (each followed by `separator`) and cut into max_seq_length blocks.

    A shorter last block is kept when it has at least max(2, max_seq_length // 8) tokens, or
    when it is the only block.
    """
    flat = []
    for i in order:
        flat += documents[i] + [separator]
    full, rest = divmod(len(flat), max_seq_length)
    lengths = [max_seq_length] * full
    if rest and (rest >= max(2, max_seq_length // 8) or (full == 0 and rest >= 2)):
        lengths.append(rest)
    blocks, start = [], 0
    for n in lengths:
        ids = flat[start : start + n]
        blocks.append({"input_ids": ids, "attention_mask": [1] * n, "labels": list(ids)})
        start += n
    return blocks


def sample_order(n, seed, max_samples, eval_ratio, split):
    """(train indices, eval indices or None): one seeded shuffle, the first max_samples of it,
    and round(n * ratio) of those (at least one) for evaluation, kept in file order."""
    import numpy as np

    order = np.random.default_rng(seed).permutation(n)
    if max_samples > 0:
        order = order[:max_samples]
    if not split:
        return order.tolist(), None
    n_eval = max(1, int(round(len(order) * eval_ratio)))
    if len(order) - n_eval < 1:
        sys.exit(f"eval_split_ratio={eval_ratio} leaves no training examples")
    return order[n_eval:].tolist(), sorted(order[:n_eval].tolist())


# The length-grouped order of modx_widgets.data.order, copied in by script.py:
# <modx_widgets.data.order>


def separator_id(tokenizer):
    for token_id in (tokenizer.eos_token_id, tokenizer.bos_token_id):
        if isinstance(token_id, int):
            return token_id
    sys.exit("the tokenizer has neither an eos nor a bos token to separate documents")


def build_datasets(cfg, tokenizer):
    """The train and eval `datasets.Dataset`s (eval is None without evaluation data)."""
    from datasets import Dataset

    kind, length, seed = cfg["training_type"], cfg["max_seq_length"], cfg["seed"]
    ratio, eval_file = cfg["eval_split_ratio"], cfg["eval_file"]
    if kind == "sft":
        train_all = tokenize_conversations(read_records(cfg["train_file"], kind), tokenizer, length)
        if not train_all:
            sys.exit(f"every conversation lost its assistant tokens at max_seq_length={length}")
        train_idx, eval_idx = sample_order(len(train_all), seed, cfg["max_samples"], ratio, not eval_file and ratio > 0)
        if cfg["length_grouped_step_examples"] > 0:  # similar lengths share a batch: less padding
            import numpy as np

            lengths = np.array([len(example["input_ids"]) for example in train_all])
            train_idx = length_grouped(np.array(train_idx), lengths, cfg["length_grouped_step_examples"]).tolist()
        train = [train_all[i] for i in train_idx]
        if eval_file:
            evaluation = tokenize_conversations(read_records(eval_file, kind), tokenizer, length)
        else:
            evaluation = [train_all[i] for i in eval_idx] if eval_idx is not None else None
    else:
        sep = separator_id(tokenizer)
        encode = lambda docs: [tokenizer.encode(d, add_special_tokens=False) for d in docs]
        docs = encode(read_records(cfg["train_file"], kind))
        train_idx, eval_idx = sample_order(len(docs), seed, cfg["max_samples"], ratio, not eval_file and ratio > 0)
        train = pack_documents(docs, train_idx, sep, length)
        if not train:
            sys.exit("the pre-training data is too short to fill one block")
        if eval_file:
            eval_docs = encode(read_records(eval_file, kind))
            evaluation = pack_documents(eval_docs, range(len(eval_docs)), sep, length)
        else:
            evaluation = pack_documents(docs, eval_idx, sep, length) if eval_idx is not None else None
    columns = ("input_ids", "attention_mask", "labels")
    as_dataset = lambda rows: Dataset.from_dict({k: [r[k] for r in rows] for k in columns})
    return as_dataset(train), (as_dataset(evaluation) if evaluation else None)


class PadToLongest:
    """Pads each batch on the right to its own longest example; pads are masked and unlabelled."""

    def __init__(self, pad_id):
        self.pad_id = pad_id

    def __call__(self, features):
        import torch

        width = max(len(f["input_ids"]) for f in features)
        ids = torch.full((len(features), width), self.pad_id, dtype=torch.long)
        labels = torch.full((len(features), width), IGNORE_INDEX, dtype=torch.long)
        mask = torch.zeros((len(features), width), dtype=torch.long)
        for i, f in enumerate(features):
            n = len(f["input_ids"])
            ids[i, :n] = torch.tensor(f["input_ids"])
            labels[i, :n] = torch.tensor(f["labels"])
            mask[i, :n] = torch.tensor(f["attention_mask"])
        return {"input_ids": ids, "attention_mask": mask, "labels": labels}


def flattening_collator():
    """Padding-free packing: one row per batch, position ids restarting per example."""
    from transformers import DataCollatorWithFlattening

    return DataCollatorWithFlattening(return_position_ids=True, separator_id=IGNORE_INDEX)


# ---------------------------------------------------------------------------- model and training


def load_tokenizer(cfg):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(cfg["tokenizer_path"] or cfg["model_path"])
    if tokenizer.pad_token_id is None:
        if tokenizer.eos_token_id is None:
            sys.exit("the tokenizer has neither a pad nor an eos token; add a pad token")
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def add_adapter(model, cfg):
    """LoRA (new, or an existing adapter to continue), or every weight trainable."""
    if cfg["lora"] is None and not cfg["attach_lora_path"]:
        for p in model.parameters():
            p.requires_grad_(True)
        return model
    if cfg["attach_lora_path"]:
        from peft import PeftModel

        return PeftModel.from_pretrained(model, cfg["attach_lora_path"], is_trainable=True)
    from dataclasses import fields

    from peft import LoraConfig, get_peft_model

    known = {f.name for f in fields(LoraConfig)}
    peft_model = get_peft_model(model, LoraConfig(**{k: v for k, v in cfg["lora"].items() if k in known}))
    if cfg["gradient_checkpointing"]:
        peft_model.enable_input_require_grads()  # checkpointed blocks need a grad path into LoRA
    return peft_model


def fit_arguments_to_hardware(args):
    """fp16 and tf32 need a CUDA GPU (fp16 is silently ignored on CPU and tf32 fails): drop them there."""
    import torch

    if not torch.cuda.is_available() or args.get("use_cpu"):
        if args.get("fp16"):
            print("note: fp16 needs a CUDA GPU; training in fp32")
        args.update(fp16=False, use_cpu=True, dataloader_pin_memory=False)
        args.pop("tf32", None)
    elif args.get("bf16") and not torch.cuda.is_bf16_supported():
        print("note: this GPU has no bf16; training in fp32")
        args["bf16"] = False
    return args


def interval_save_callback(minutes):
    """Asks the Trainer for a checkpoint whenever `minutes` have passed since the last one."""
    from transformers import TrainerCallback

    class SaveEvery(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            self.last = time.monotonic()

        def on_step_end(self, args, state, control, **kwargs):
            if time.monotonic() - self.last >= minutes * 60:
                control.should_save = True
            return control

        def on_save(self, args, state, control, **kwargs):
            self.last = time.monotonic()

    return SaveEvery()


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--output-dir", help="write checkpoints and the result here instead")
    parser.add_argument("--max-steps", type=int, help="stop after this many optimizer steps (a quick try)")
    options = parser.parse_args(argv)
    cfg, targs = dict(CONFIG), dict(TRAINING_ARGS)
    if options.output_dir:
        targs["output_dir"] = options.output_dir
    if options.max_steps:
        targs["max_steps"] = options.max_steps
    if cfg["device"].startswith("cuda:") and "," not in cfg["device"]:
        os.environ.setdefault("CUDA_VISIBLE_DEVICES", cfg["device"].split(":", 1)[1])

    import torch
    import transformers
    from transformers import AutoModelForCausalLM, EarlyStoppingCallback, Trainer, TrainingArguments, set_seed

    if int(transformers.__version__.split(".")[0]) < 5:
        sys.exit(f"this script uses transformers 5 argument names; found transformers {transformers.__version__}")

    seed = cfg["seed"]
    set_seed(seed)
    tokenizer = load_tokenizer(cfg)
    train_data, eval_data = build_datasets(cfg, tokenizer)
    print(f"data: {len(train_data)} training and {len(eval_data) if eval_data else 0} evaluation example(s)")

    model = AutoModelForCausalLM.from_pretrained(cfg["model_path"], dtype=torch.float32)
    model.config.use_cache = False
    set_seed(seed)  # the adapter's random start depends on it
    model = add_adapter(model, cfg)

    callbacks = []
    if targs.get("save_strategy") != "no":
        callbacks.append(interval_save_callback(cfg["save_interval_minutes"]))
    if cfg["early_stopping_patience"] > 0:
        callbacks.append(
            EarlyStoppingCallback(
                early_stopping_patience=cfg["early_stopping_patience"],
                early_stopping_threshold=cfg["early_stopping_threshold"],
            )
        )
    pad_id = next((t for t in (tokenizer.pad_token_id, tokenizer.eos_token_id) if isinstance(t, int)), 0)
    trainer = Trainer(
        model=model,
        args=TrainingArguments(**fit_arguments_to_hardware(targs)),
        train_dataset=train_data,
        eval_dataset=eval_data,
        data_collator=flattening_collator() if cfg["padding_free"] else PadToLongest(pad_id),
        processing_class=tokenizer,
        callbacks=callbacks,
    )
    trainer.train(resume_from_checkpoint=cfg["resume_from_checkpoint"])

    output_dir = Path(targs["output_dir"])
    peft = hasattr(model, "merge_and_unload")
    if not peft:
        model.config.use_cache = True  # for inference
    trainer.save_model(str(output_dir))
    (output_dir / "log_history.json").write_text(json.dumps(trainer.state.log_history, indent=1))
    if peft and cfg["merge_lora"]:
        merged = model.merge_and_unload()
        merged.config.use_cache = True
        merged.save_pretrained(str(output_dir / "merged"), safe_serialization=True)
        tokenizer.save_pretrained(str(output_dir / "merged"))
    print(f"saved to {output_dir}")


if __name__ == "__main__":
    main()
