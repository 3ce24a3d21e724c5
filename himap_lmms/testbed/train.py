"""Training of the testbed LLaVA from scratch on the three synthetic benchmarks, so pruning has real accuracy
to lose.

``scripts/train_testbed.py`` is the command line; :func:`train` is the whole run. Each image comes with a
conversation of evaluation-format questions that ends in dense turns about the whole scene
(:data:`DENSE_TURNS`), and a linear read-out on the image tokens names every patch's colour, shape and region
(thrown away after training). Why each piece is there, and the mixes tried, are in ``docs/testbed.md``.
Seeded: the same settings give the same weights on the same machine and thread count.
"""

from __future__ import annotations

import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import torch
from PIL import Image
from tqdm import tqdm
from transformers import LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

from himap_lmms.compat import projector_of, save_model, save_processor, vision_tower_of
from himap_lmms.model_shapes import LlavaShape
from himap_lmms.prompting import chat_prompt
from himap_lmms.synthetic import BENCHMARKS, generate_records
from himap_lmms.synthetic.scenes import COLOURS, GRID, OBJECT_SHAPES, REGION, Scene, draw_scene, make_scene
from himap_lmms.tiny_llava import build_config, build_processor, build_tokenizer

SPEC = LlavaShape(
    "llava-testbed",
    image_size=168,
    patch_size=14,
    vision_hidden=96,
    vision_layers=2,
    vision_heads=4,
    vision_intermediate=192,
    vision_feature_layer=-1,
    hidden=128,
    layers=12,
    heads=4,
    intermediate=256,
    vocab=1000,  # the tokenizer's target size
    # At transformers' 0.02 a 128-wide decoder starts with near-uniform attention and learns slowly: in 500-step
    # A/B runs, 0.06 reached 52.0 % check accuracy against 43.3 % (and 41.3 vs 33.0 % at step 250).
    init_std=0.06,
    context=2048,
)
SEED = 0  # of the random init and of Python's generator
# Seeds of the generator: the shipped held-out split uses make_sample_data.py's seed, never one of these.
TRAIN_SEED = 1
CHECK_SEED = 12345  # a quick accuracy check while training
CORPUS_SEED = 99  # prompts the tokenizer is trained on
# The dense turns: a request, and the scene listed in the order it asks for.
DENSE_TURNS: dict[str, Callable[[Scene], str]] = {
    "Describe the scene.": Scene.description,
    "List the shapes.": lambda scene: scene.inventory(by="shape"),
    "List the colours.": lambda scene: scene.inventory(by="colour"),
}


@dataclass(frozen=True)
class TrainSettings:
    """One training run's knobs; the defaults trained the shipped checkpoint. Checked when created, so a bad
    value fails before anything is built, with an error naming the field, its value and the allowed range."""

    steps: int = field(default=2400, metadata={"help": "optimizer steps"})
    batch_size: int = field(default=16, metadata={"help": "conversations per step"})
    lr: float = field(default=1.5e-3, metadata={"help": "peak learning rate of the language model"})
    image_lr_scale: float = field(default=1.0, metadata={"help": "LR factor of vision tower, projector and read-out"})
    questions: int = field(default=5, metadata={"help": "questions asked about each training image"})
    dense_turns: int = field(default=2, metadata={"help": "dense turns (distinct forms) ending each conversation"})
    layout_weight: float = field(default=0.5, metadata={"help": "weight of the vision read-out loss"})
    minutes: float = field(default=58.0, metadata={"help": "stop early (and save) after this long"})
    check_every: int = field(default=400, metadata={"help": "steps between two accuracy checks"})
    threads: int = field(default=2, metadata={"help": "torch threads (the weights are reproducible per count)"})

    def __post_init__(self) -> None:
        for name in ("steps", "batch_size", "questions", "check_every", "threads"):
            self._check_integer(name, 1)
        self._check_integer("dense_turns", 0, len(DENSE_TURNS))
        for name in ("lr", "image_lr_scale", "minutes"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name}={getattr(self, name)!r} is out of range: it must be > 0")
        if not self.layout_weight >= 0:
            raise ValueError(f"layout_weight={self.layout_weight!r} is out of range: it must be >= 0")

    def _check_integer(self, name: str, low: int, high: int | None = None) -> None:
        value = getattr(self, name)
        if isinstance(value, bool) or not isinstance(value, int) or value < low or (high is not None and value > high):
            allowed = f">= {low}" if high is None else f"in [{low}, {high}]"
            raise ValueError(f"{name}={value!r} is out of range: it must be an integer {allowed}")


class LayoutProbe(torch.nn.Module):
    """Per image token: logits for the colour (or none) and the shape (or none) of the object on its patch, and
    for the region (0-8) the patch lies in."""

    def __init__(self, hidden: int) -> None:
        super().__init__()
        self.sizes = (len(COLOURS) + 1, len(OBJECT_SHAPES) + 1, 9)
        self.head = torch.nn.Linear(hidden, sum(self.sizes))

    def loss(self, image_tokens: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Mean cross-entropy of the three read-outs; ``targets`` is (batch, tokens, 3)."""
        # Normalised first: the projector's outputs start ~100x smaller than unit scale, and a read-out of raw
        # features would learn the weak position signal (which region) far too slowly.
        normalised = torch.nn.functional.layer_norm(image_tokens, image_tokens.shape[-1:])
        logits = self.head(normalised).split(self.sizes, dim=-1)
        losses = [
            torch.nn.functional.cross_entropy(part.flatten(0, 1), targets[..., i].flatten())
            for i, part in enumerate(logits)
        ]
        return sum(losses) / len(losses)


def layout_targets(scenes: list[Scene]) -> torch.Tensor:
    """(batch, 144, 3): colour id and shape id (0 = no object on the patch) and region of every patch, in the
    vision tower's raster order."""
    colours, shapes = list(COLOURS), list(OBJECT_SHAPES)
    regions = torch.tensor([(row // REGION) * 3 + column // REGION for row in range(GRID) for column in range(GRID)])
    targets = torch.zeros(len(scenes), GRID * GRID, 3, dtype=torch.long)
    targets[:, :, 2] = regions
    for i, scene in enumerate(scenes):
        for region, thing in scene.objects.items():
            for patch in scene.patches(region):
                targets[i, patch, 0] = colours.index(thing.colour) + 1
                targets[i, patch, 1] = shapes.index(thing.shape) + 1
    return targets


def capture_image_tokens(model: LlavaForConditionalGeneration) -> dict[str, torch.Tensor]:
    """Keep the projector's latest output (the image tokens the language model gets) in the returned dict."""
    captured: dict[str, torch.Tensor] = {}

    def keep(module: torch.nn.Module, args: tuple, output: torch.Tensor) -> None:
        captured["image_tokens"] = output

    projector_of(model).register_forward_hook(keep)
    return captured


@dataclass
class Conversation:
    """One image and the turns asked about it: user content and the answer's token ids (EOS not included)."""

    image: Image.Image
    scene: Scene
    turns: list[tuple[str, list[int]]]
    benchmark: str = ""  # the first question's benchmark, for per-benchmark accuracy


def corpus(prompts: int = 200) -> list[str]:
    """Text the tokenizer is trained on: every benchmark's prompts and answers as the chat template lays them
    out after ``<image>`` (a line break first), and every dense turn's request and listing, so their frequent
    words are single pieces."""
    texts = [f"\n{request} ASSISTANT:" for request in DENSE_TURNS]
    for name, spec in BENCHMARKS.items():
        for row in generate_records(name, prompts, seed=CORPUS_SEED, with_layout=True):
            texts.append(f"\n{spec.prompt(row)} ASSISTANT: {spec.answer(row)}")
            texts += [listing(row["layout"]) for listing in DENSE_TURNS.values()]
    return [*COLOURS, *OBJECT_SHAPES, *texts]


def answer_ids(tokenizer: PreTrainedTokenizerFast, answer: str) -> list[int]:
    """The tokens the model emits for ``answer`` after "ASSISTANT:" (Llama-style: a word-start marker first)."""
    ids = tokenizer.encode(" " + answer, add_special_tokens=False)
    if tokenizer.unk_token_id in ids:
        raise ValueError(f"answer {answer!r} has a piece this tokenizer does not know: {ids}")
    return ids


def from_record(name: str, record: dict, tokenizer: PreTrainedTokenizerFast) -> Conversation:
    """A held-out style record of benchmark ``name`` as a one-turn conversation in its task's prompt."""
    spec = BENCHMARKS[name]
    turns = [(spec.prompt(record), answer_ids(tokenizer, spec.answer(record)))]
    return Conversation(record["image"], record.get("layout", Scene({})), turns, name)


def conversation(
    rng: random.Random, tokenizer: PreTrainedTokenizerFast, questions: int, dense_turns: int = 0
) -> Conversation:
    """A scene asked ``questions`` distinct questions, each in the format of a benchmark drawn at random, then
    ``dense_turns`` distinct dense turns of :data:`DENSE_TURNS`, drawn at random."""
    scene = make_scene(rng)
    turns, first = [], ""
    asked: set[str] = set()
    for _ in range(4 * questions):
        if len(turns) == questions:
            break
        name = rng.choice(list(BENCHMARKS))
        spec = BENCHMARKS[name]
        row = spec.record(rng, scene, rng.randrange(6))  # the index picks POPE's category and yes/no, VQA's family
        if row is None or spec.prompt(row) in asked:
            continue
        asked.add(spec.prompt(row))
        turns.append((spec.prompt(row), answer_ids(tokenizer, spec.answer(row))))
        first = first or name
    for request in rng.sample(list(DENSE_TURNS), dense_turns):
        turns.append((request, answer_ids(tokenizer, DENSE_TURNS[request](scene))))
    return Conversation(draw_scene(scene), scene, turns, first)


def encode(processor: LlavaProcessor, conversations: list[Conversation]) -> dict[str, torch.Tensor]:
    """Token ids of whole conversations, left-padded as at evaluation; labels on every answer and its EOS.

    The first turn goes through the processor exactly as at evaluation (``<image>`` expanded to the image
    tokens); later turns follow the chat template's layout: `` USER: {content} ASSISTANT:``.
    """
    tokenizer = processor.tokenizer
    first = [chat_prompt(tokenizer, c.turns[0][0], 1) for c in conversations]
    inputs = processor(
        images=[c.image for c in conversations], text=first, return_tensors="pt", padding=True, add_special_tokens=False
    )
    rows, targets = [], []
    for ids, mask, talk in zip(inputs["input_ids"], inputs["attention_mask"], conversations):
        row = ids[mask.bool()].tolist()
        target = [-100] * len(row)
        for index, (content, answer) in enumerate(talk.turns):
            if index:
                prompt = tokenizer.encode(f" USER: {content} ASSISTANT:", add_special_tokens=False)
                row += prompt
                target += [-100] * len(prompt)
            row += [*answer, tokenizer.eos_token_id]
            target += [*answer, tokenizer.eos_token_id]
        rows.append(row)
        targets.append(target)
    width = max(map(len, rows))
    input_ids = torch.full((len(rows), width), tokenizer.pad_token_id)
    attention_mask = torch.zeros((len(rows), width), dtype=torch.long)
    labels = torch.full((len(rows), width), -100)
    for i, (row, target) in enumerate(zip(rows, targets)):
        input_ids[i, width - len(row) :] = torch.tensor(row)
        attention_mask[i, width - len(row) :] = 1
        labels[i, width - len(row) :] = torch.tensor(target)
    return {
        "input_ids": input_ids,
        "attention_mask": attention_mask,
        "pixel_values": inputs["pixel_values"],
        "labels": labels,
    }


@torch.no_grad()
def accuracy(model, processor: LlavaProcessor, checks: dict[str, list[dict]], batch_size: int = 50) -> dict[str, float]:
    """Share of one-turn questions whose whole answer and EOS are the greedy tokens (teacher-forced: a wrong token
    fails the question), per benchmark and over all."""
    model.eval()
    hits: dict[str, list[bool]] = {}
    for name, records in checks.items():
        for start in range(0, len(records), batch_size):
            chunk = [from_record(name, r, processor.tokenizer) for r in records[start : start + batch_size]]
            batch = encode(processor, chunk)
            logits = model(**{k: v for k, v in batch.items() if k != "labels"}).logits
            labels = batch["labels"]
            predicted = torch.where(labels[:, 1:] == -100, -100, logits[:, :-1].argmax(-1))
            for hit in (predicted == labels[:, 1:]).all(dim=1).tolist():
                hits.setdefault(name, []).append(hit)
                hits.setdefault("all", []).append(hit)
    model.train()
    return {group: sum(values) / len(values) for group, values in hits.items()}


def describe(scores: dict[str, float]) -> str:
    """One log line of accuracies: ``"all 0.910, scienceqa 0.988, ..."``."""
    return ", ".join(f"{group} {score:.3f}" for group, score in scores.items())


def sine_cosine_codes(grid: int, dim: int) -> torch.Tensor:
    """(grid * grid, dim) 2-D sine-cosine position codes in raster order: a quarter of ``dim`` each for
    sin(row), cos(row), sin(column), cos(column) at geometric frequencies (as MAE initialises ViTs)."""
    quarter = dim // 4
    frequencies = 1.0 / (100 ** (torch.arange(quarter) / quarter))
    rows, columns = torch.meshgrid(torch.arange(grid), torch.arange(grid), indexing="ij")
    parts = []
    for coordinate in (rows.flatten(), columns.flatten()):
        angles = coordinate[:, None].float() * frequencies[None]
        parts += [angles.sin(), angles.cos()]
    codes = torch.zeros(grid * grid, dim)
    codes[:, : 4 * quarter] = torch.cat(parts, dim=1)
    return codes


def init_position_codes(model: LlavaForConditionalGeneration) -> None:
    """Start CLIP's learned position embeddings from unit-scale 2-D sine-cosine codes (the class slot at 0).

    At the default init (std 0.02, ~30x below the patch embeddings) where a patch sits is buried under what
    it shows, and a tower trained from scratch on this budget never learns which cell a patch is in; with
    these codes it does within ~100 steps. They stay trainable parameters of the stock CLIP embedding.
    """
    embedding = vision_tower_of(model).embeddings.position_embedding
    grid = SPEC.image_size // SPEC.patch_size
    with torch.no_grad():
        embedding.weight.zero_()
        embedding.weight[1:] = sine_cosine_codes(grid, embedding.weight.shape[1])


def optimizer_for(model: LlavaForConditionalGeneration, probe: LayoutProbe, lr: float, image_lr_scale: float):
    """AdamW; the vision tower, the projector and the probe learn ``image_lr_scale`` times faster (they start
    from nothing, as the language model does, but LLaVA's would start from CLIP), and norms and biases get no
    weight decay."""
    named = [*model.named_parameters(), *(("probe." + n, p) for n, p in probe.named_parameters())]
    groups: dict[tuple[bool, bool], list[torch.nn.Parameter]] = {}
    for name, parameter in named:
        image_side = any(part in name for part in ("vision_tower", "multi_modal_projector", "probe."))
        groups.setdefault((image_side, parameter.ndim < 2), []).append(parameter)
    return torch.optim.AdamW(
        [
            {
                "params": params,
                "lr": lr * (image_lr_scale if image_side else 1.0),
                "weight_decay": 0.0 if flat else 0.01,
            }
            for (image_side, flat), params in groups.items()
        ],
        betas=(0.9, 0.98),
    )


def warmup_cosine(steps: int, warmup: int, floor: float = 0.05):
    """LR multiplier: linear warm-up, then a cosine down to ``floor`` at ``steps``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, steps - warmup))
        return floor + (1 - floor) * 0.5 * (1 + math.cos(math.pi * progress))

    return factor


def train_batch(step: int, settings: TrainSettings, tokenizer: PreTrainedTokenizerFast) -> list[Conversation]:
    """The conversations of one step (seeded by ``step``)."""
    rng = random.Random(TRAIN_SEED * 10_000_000 + step)
    return [conversation(rng, tokenizer, settings.questions, settings.dense_turns) for _ in range(settings.batch_size)]


def train(settings: TrainSettings, out: str | Path) -> dict[str, float]:
    """Train from the seeded init, save the checkpoint (model, tokenizer, processor) to ``out`` and return the
    final check accuracy (overall and per benchmark)."""
    torch.set_num_threads(settings.threads)
    random.seed(SEED)
    torch.manual_seed(SEED)

    tokenizer = build_tokenizer(corpus(), SPEC.vocab, isolate_newlines=True)
    processor = build_processor(SPEC, tokenizer)
    model = LlavaForConditionalGeneration(build_config(SPEC, tokenizer))
    init_position_codes(model)
    model.train()
    probe = LayoutProbe(SPEC.hidden)
    captured = capture_image_tokens(model)
    checks = {name: generate_records(name, 100, seed=CHECK_SEED) for name in BENCHMARKS}

    optimizer = optimizer_for(model, probe, settings.lr, settings.image_lr_scale)
    schedule = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(settings.steps, min(100, settings.steps // 10))
    )
    started = time.time()
    progress = tqdm(range(settings.steps), desc="train", mininterval=10)
    for step in progress:
        conversations = train_batch(step, settings, tokenizer)
        loss = model(**encode(processor, conversations)).loss
        layout = probe.loss(captured["image_tokens"], layout_targets([talk.scene for talk in conversations]))
        (loss + settings.layout_weight * layout).backward()
        torch.nn.utils.clip_grad_norm_([*model.parameters(), *probe.parameters()], 1.0)
        optimizer.step()
        schedule.step()
        optimizer.zero_grad(set_to_none=True)
        progress.set_postfix(loss=f"{loss.item():.3f}", layout=f"{layout.item():.3f}")
        if (step + 1) % settings.check_every == 0:
            scores = describe(accuracy(model, processor, checks))
            tqdm.write(f"step {step + 1}: loss {loss.item():.3f}, check accuracy: {scores}")
        if time.time() - started > settings.minutes * 60:
            tqdm.write(f"time budget reached at step {step + 1}")
            break
    final = accuracy(model, processor, checks)
    print(f"done in {(time.time() - started) / 60:.1f} min; check accuracy: {describe(final)}", flush=True)
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    save_model(model, out)
    save_processor(processor, out)
    return final
