"""Train the testbed LLaVA from scratch on synthetic scenes, so pruning has real accuracy to lose.

    python scripts/train_testbed.py                     # ~30 min on 2 CPU cores; writes himap_lmms/testbed/checkpoint
    python scripts/train_testbed.py --steps 200 --out /tmp/testbed   # a quick smoke run

Same classes as LLaVA-1.5 (CLIP vision tower, projector, Llama language model), 168 px images in 14 px
patches (144 image tokens) and 12 language layers, so HiMAP's K1 = 2 and K2 = 8 sit where they sit in 7B.
It learns the paper's prompt: system prompt, "USER: <image>\\n{context}{question}\\nA. ...\\nAnswer with the
option's letter from the given choices directly. ASSISTANT:" and then the answer letter, with the loss on the
letter and the end-of-sequence token only. Training questions come from the same generator as the shipped
held-out split, with another seed; the split itself is never trained on. Seeded: the same command gives the
same weights on the same machine.
"""

from __future__ import annotations

import argparse
import math
import random
import sys
import time
from pathlib import Path

import torch
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "tasks" / "scienceqa_img_himap"))
from utils import OPTION_LETTERS, build_prompt  # noqa: E402  (the task's own prompt, so train = test format)

from himap_lmms.synthetic_data import COLOURS, POSITIONS, SHAPES, generate_records  # noqa: E402
from himap_lmms.tiny_llava import TinyLlavaSpec, build_config, build_processor, build_tokenizer  # noqa: E402

SPEC = TinyLlavaSpec(
    image_size=168,
    patch_size=14,
    vision_hidden=96,
    vision_layers=2,
    vision_heads=4,
    text_hidden=128,
    text_layers=12,
    text_heads=4,
    text_kv_heads=4,
    text_intermediate=256,
    vocab_size=400,
    seed=0,
)
TRAIN_SEED = 1  # the shipped held-out split uses the generator with make_sample_data.py's seed


def corpus() -> list[str]:
    words = [*COLOURS, *SHAPES, *POSITIONS, "Look at the picture.", "How many shapes are there?"]
    questions = [build_prompt(r["question"], r["choices"], r["hint"]) for r in generate_records(300, seed=99)]
    return words + questions


def answer_token(tokenizer, letter: str) -> int:
    """The one token the model emits for an answer letter after "ASSISTANT:" (Llama-style: "▁A")."""
    ids = tokenizer.encode(" " + letter, add_special_tokens=False)
    if len(ids) != 1 or ids[0] == tokenizer.unk_token_id:
        raise ValueError(f"answer letter {letter!r} is not one known token for this tokenizer: {ids}")
    return ids[0]


def encode(processor, records: list[dict], letter_ids: list[int]) -> dict[str, torch.Tensor]:
    """Prompt + answer letter + EOS, left-padded; labels only on the letter and EOS."""
    tokenizer = processor.tokenizer
    prompts = [
        tokenizer.apply_chat_template(
            [{"role": "user", "content": "<image>\n" + build_prompt(r["question"], r["choices"], r["hint"])}],
            add_generation_prompt=True,
            tokenize=False,
        )
        for r in records
    ]
    inputs = processor(
        images=[r["image"] for r in records], text=prompts, return_tensors="pt", padding=True, add_special_tokens=False
    )
    answers = torch.tensor([[letter_ids[r["answer"]], tokenizer.eos_token_id] for r in records])
    labels = torch.full_like(inputs["input_ids"], -100)
    return {
        "input_ids": torch.cat([inputs["input_ids"], answers], dim=1),
        "attention_mask": torch.cat([inputs["attention_mask"], torch.ones_like(answers)], dim=1),
        "pixel_values": inputs["pixel_values"],
        "labels": torch.cat([labels, answers], dim=1),
    }


@torch.no_grad()
def accuracy(model, processor, records: list[dict], letter_ids: list[int], batch_size: int = 50) -> float:
    """Greedy first answer token against the gold letter (what the ScienceQA task scores)."""
    model.eval()
    correct = 0
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        batch = encode(processor, chunk, letter_ids)
        logits = model(
            input_ids=batch["input_ids"][:, :-2],
            attention_mask=batch["attention_mask"][:, :-2],
            pixel_values=batch["pixel_values"],
            logits_to_keep=1,
        ).logits[:, -1]
        correct += int((logits.argmax(-1) == batch["labels"][:, -2]).sum())
    model.train()
    return correct / len(records)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=REPO / "himap_lmms" / "testbed" / "checkpoint")
    parser.add_argument("--steps", type=int, default=1500)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--minutes", type=float, default=40.0, help="stop early (and save) after this long")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    random.seed(0)
    torch.manual_seed(0)

    tokenizer = build_tokenizer(corpus(), SPEC.vocab_size)
    processor = build_processor(SPEC, tokenizer)
    model = LlavaForConditionalGeneration(build_config(SPEC, tokenizer))
    letter_ids = [answer_token(tokenizer, letter) for letter in OPTION_LETTERS[:5]]
    held_out = generate_records(300, seed=12345)  # a quick check split; the shipped one is evaluated by tests

    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=0.01, betas=(0.9, 0.98))
    warmup = min(100, args.steps // 10)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer,
        lambda step: min(1.0, (step + 1) / warmup) * 0.5 * (1 + math.cos(math.pi * min(step, args.steps) / args.steps)),
    )
    started = time.time()
    progress = tqdm(range(args.steps), desc="train", mininterval=10)
    for step in progress:
        records = generate_records(args.batch_size, seed=TRAIN_SEED * 10_000_000 + step)
        loss = model(**encode(processor, records, letter_ids)).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.3f}")
        if (step + 1) % 250 == 0:
            check = accuracy(model, processor, held_out, letter_ids)
            print(f"step {step + 1}: loss {loss.item():.3f}, check accuracy {check:.3f}", flush=True)
        if time.time() - started > args.minutes * 60:
            print(f"time budget reached at step {step + 1}", flush=True)
            break
    final = accuracy(model, processor, held_out, letter_ids)
    print(f"done in {(time.time() - started) / 60:.1f} min; check accuracy {final:.3f}", flush=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(args.out)
    processor.save_pretrained(args.out)


if __name__ == "__main__":
    main()
