"""``himap_llava``: the lmms-eval adapter around :class:`~himap_lmms.pruning.PrunedLlava`.

One class serves ``method=none``, ``fastv`` and ``himap`` so that every comparison runs in the same harness,
with the same prompts, batching and decoding. Like lmms-eval's own ``llava_hf`` it only turns ``Instance``
requests into model calls; unlike it, it batches (``batch_size > 1``, left padding, each sample pruned on its
own scores).

Cost is recorded for every example: the real token count each layer processed, prefill FLOPs by the formula
of :mod:`himap_lmms.cost` and their ratio to the same example unpruned, prefill time (time to first token)
and total generation time. Batch times are split evenly over the batch's examples. The records of every rank
are gathered once the requests are answered and reach the results JSON as one entry of lmms-eval's metric log,
so its ``throughput`` block holds exact means over every example (``avg_flops_ratio``, ``avg_latency``,
``avg_prefill_s``, and per task ``avg_flops_ratio:<task>`` / ``avg_latency_s:<task>``). With
``cost_log=<file.jsonl>`` every example's record, tagged with the run's id, is also appended to that file as
soon as its batch is done, so an interrupted run keeps what it measured.

Every model_arg is checked before the model loads, and every request before it runs: an argument or a
generation setting this adapter cannot honour is an error naming it, never a run that silently does
something else under the user's label.
"""

from __future__ import annotations

import functools
import json
import logging
import uuid
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from lmms_eval import utils
from lmms_eval.api.instance import GenerationResult, Instance, TokenCounts
from lmms_eval.api.model import lmms
from lmms_eval.models.model_utils.gen_metrics import log_metrics
from PIL import Image
from tqdm import tqdm
from transformers import AutoConfig, AutoProcessor, LlavaForConditionalGeneration, LlavaNextForConditionalGeneration

from himap_lmms.compat import dtype_argument, image_token_id, untested_version_message, without_token_type_ids
from himap_lmms.cost import CONVENTIONS, metric_name
from himap_lmms.llava_forward import SUPPORTED_ATTENTION
from himap_lmms.prompting import VICUNA_CHAT_TEMPLATE, chat_prompt
from himap_lmms.pruning import Generation, PrunedLlava, PruningConfig, split_pruning_args
from himap_lmms.values import is_local_path, parse_float, parse_int

logger = logging.getLogger(__name__)

MODEL_CLASSES = {"llava": LlavaForConditionalGeneration, "llava_next": LlavaNextForConditionalGeneration}
CHAT_TEMPLATES = {"vicuna_v1": VICUNA_CHAT_TEMPLATE}
PROCESSOR_TEMPLATE = "model"  # chat_template=model: the processor's own template


@dataclass(frozen=True)
class ExampleCost:
    """One example's cost record (a line of ``cost_log``)."""

    run_id: str
    task: str
    doc_id: int
    method: str
    tokens_per_layer: list[int]
    flops: float
    flops_ratio: float
    flops_convention: str
    prefill_s: float
    latency_s: float
    new_tokens: int


class HimapLlava(lmms):
    """LLaVA / LLaVA-NeXT (transformers classes) with visual-token pruning, for ``lmms-eval --model himap_llava``.

    Pruning arguments (``method`` and each method's knobs, :func:`~himap_lmms.pruning.pruning_arguments`) are
    those of :meth:`PruningConfig.from_args`. ``chat_template`` is ``vicuna_v1`` (the paper's prompt, default),
    ``model`` (the processor's own template) or a Jinja string.
    """

    is_simple = True
    name = "himap_llava"  # the lmms-eval model name, in errors
    model_classes = MODEL_CLASSES  # model_type -> the transformers class that loads it
    probes = True  # the probes rebuild LLaVA's forward: families they are not tested on refuse probe tasks

    def __init__(
        self,
        pretrained: str = "llava-hf/llava-1.5-7b-hf",
        method: str = "none",
        revision: str = "main",
        device: str | None = None,
        dtype: str = "auto",
        batch_size: int | str = 1,
        attn_implementation: str = "sdpa",
        device_map: str = "",
        chat_template: str = "vicuna_v1",
        flops_convention: str = "fastv",
        cost_log: str | None = None,
        max_new_tokens: int = 128,
        **kwargs: Any,
    ) -> None:
        super().__init__()
        pruning_args, unknown = split_pruning_args(kwargs)
        if unknown:
            raise ValueError(f"unknown model_args for {self.name}: {', '.join(sorted(unknown))}")
        if flops_convention not in CONVENTIONS:
            raise ValueError(
                f"flops_convention={flops_convention!r} is not known: choose one of {', '.join(CONVENTIONS)}"
            )
        if attn_implementation not in SUPPORTED_ATTENTION:
            raise ValueError(
                f"attn_implementation={attn_implementation!r} is not supported by the pruning engine: "
                f"use one of {', '.join(SUPPORTED_ATTENTION)}"
            )
        _check_chat_template(chat_template)
        _warn_if_untested_transformers()
        self.flops_convention = flops_convention
        self.batch_size_per_gpu = parse_int("batch_size", batch_size, minimum=1)
        self.max_new_tokens = parse_int("max_new_tokens", max_new_tokens, minimum=1)
        self.cost_log = Path(cost_log) if cost_log else None
        pretrained = _checkpoint(pretrained)
        dtype = _torch_dtype(dtype)

        self.accelerator = Accelerator()
        self._rank = self.accelerator.process_index
        self._world_size = self.accelerator.num_processes
        if self._world_size > 1 or device is None:
            self._device = self.accelerator.device
        else:
            self._device = torch.device(device)
        self.run_id = self._shared_run_id()

        model_config = AutoConfig.from_pretrained(pretrained, revision=revision)
        model_type = model_config.model_type
        if model_type not in self.model_classes:
            raise ValueError(
                f"pretrained={pretrained!r} is a {model_type!r} model; {self.name} supports "
                f"{', '.join(self.model_classes)}"
            )
        # Bound to the depth read from the config, before any weight loads: a layer typed beyond the depth is
        # named as such before the steps are compared with each other (see PruningConfig.from_args).
        num_layers = model_config.get_text_config().num_hidden_layers
        self.pruning = PruningConfig.from_args(method, num_layers=num_layers, **pruning_args)
        self.processor = AutoProcessor.from_pretrained(pretrained, revision=revision, **self._processor_arguments())
        self.tokenizer = self.processor.tokenizer
        self.tokenizer.padding_side = "left"
        self.chat_template = self._resolve_chat_template(chat_template)
        self._model = (
            self.model_classes[model_type]
            .from_pretrained(
                pretrained,
                revision=revision,
                **dtype_argument(dtype),
                attn_implementation=attn_implementation,
                device_map=device_map or None,
            )
            .eval()
        )
        if not device_map:
            self._model.to(self._device)
        self.engine = PrunedLlava(self._model, self.pruning)
        self.pruning = self.engine.config  # bound to the model's depth: PyramidDrop's stages become layers
        self.context_length = self._model.config.get_text_config().max_position_embeddings
        self._warned_budgets: set[str] = set()

    @property
    def model(self) -> torch.nn.Module:
        return self._model

    @property
    def batch_size(self) -> int:
        return self.batch_size_per_gpu

    @property
    def device(self) -> torch.device:
        return self._device

    @classmethod
    def create_from_arg_string(cls, arg_string: str, additional_config: dict[str, Any] | None = None) -> HimapLlava:
        """lmms-eval's constructor from ``--model_args``, refusing ``batch_size`` there: lmms-eval passes
        ``--batch_size`` to the model itself, and both at once would end in a bare ``TypeError``."""
        args = utils.simple_parse_args_string(arg_string)
        if "batch_size" in args and (additional_config or {}).get("batch_size") is not None:
            raise ValueError(
                f"batch_size={args['batch_size']!r} in model_args: give the batch size as --batch_size "
                f"(this run's is {additional_config['batch_size']!r}), not in model_args"
            )
        return super().create_from_arg_string(arg_string, additional_config)

    def generate_until(self, requests: list[Instance]) -> list[GenerationResult]:
        """Answer generation requests in batches grouped by generation kwargs, longest prompts first."""
        collator = utils.Collator(
            [request.args for request in requests], lambda args: (-len(args[0]), args[0]), grouping=True
        )
        progress = tqdm(total=len(requests), disable=self.rank != 0, desc="Model Responding")
        outputs, costs = [], []
        for chunk in collator.get_batched(n=self.batch_size, batch_fn=None):
            contexts, all_gen_kwargs, doc_to_visuals, doc_ids, tasks, splits = zip(*chunk)
            gen_kwargs = dict(all_gen_kwargs[0])
            docs = [self.task_dict[task][split][doc_id] for task, split, doc_id in zip(tasks, splits, doc_ids)]
            visuals = [
                _images(to_visual(doc), task, doc_id)
                for to_visual, doc, task, doc_id in zip(doc_to_visuals, docs, tasks, doc_ids)
            ]
            if "probe" in gen_kwargs:
                outputs.extend(self._run_probes(contexts, visuals, docs, gen_kwargs, tasks, doc_ids))
                progress.update(len(chunk))
                continue
            inputs = self._encode(contexts, visuals, tasks, doc_ids)
            until = _until(gen_kwargs.pop("until", None), self.tokenizer.decode([self.tokenizer.eos_token_id]))
            generation = self.engine.generate(**inputs, **self._decoding(gen_kwargs))
            texts = self.tokenizer.batch_decode(generation.sequences, skip_special_tokens=True)
            batch_costs = self._costs(generation, tasks, doc_ids)
            for text, cost, prompt_tokens in zip(texts, batch_costs, inputs["attention_mask"].sum(dim=1).tolist()):
                outputs.append(
                    GenerationResult(
                        text=_truncate(text, until),
                        token_counts=TokenCounts(input_tokens=prompt_tokens, output_tokens=cost.new_tokens),
                    )
                )
            self._append_cost_log(batch_costs)
            costs.extend(batch_costs)
            progress.set_postfix(flops_ratio=f"{_mean(c.flops_ratio for c in costs):.3f}", refresh=False)
            progress.update(len(chunk))
        progress.close()
        self._log_costs(costs)
        return collator.get_original(outputs)

    def loglikelihood(self, requests: list[Instance]) -> list[tuple[float, bool]]:
        """Log-probability of each continuation given its (pruned) context.

        The context is prefilled, and pruned, once; the continuation is then fed token by token through the
        KV cache, exactly as generated tokens are, so the score matches what generation would see.
        """
        results = []
        for context, continuation, doc_to_visual, doc_id, task, split in tqdm(
            [request.args for request in requests], disable=self.rank != 0, desc="Model Responding"
        ):
            doc = self.task_dict[task][split][doc_id]
            inputs = self._encode([context], [_images(doc_to_visual(doc), task, doc_id)], [task], [doc_id])
            target = self.tokenizer(continuation, add_special_tokens=False, return_tensors="pt").input_ids
            target = target.to(self.device)
            logits, state, _ = self.engine.prefill(**inputs)
            total, greedy = 0.0, True
            for index in range(target.shape[1]):
                token = target[:, index]
                total += float(logits.log_softmax(dim=-1)[0, token])
                greedy &= bool(logits.argmax(dim=-1) == token)
                if index + 1 < target.shape[1]:
                    logits = self.engine.decode(state, token[:, None])
            results.append((total, greedy))
        return results

    def generate_until_multi_round(self, requests: list[Instance]) -> list[str]:
        raise NotImplementedError(f"{self.name} does not implement multi-round generation")

    def _shared_run_id(self) -> str:
        """One id for this run on every rank (UTC time + random suffix), so cost records of reruns that append
        to the same ``cost_log`` stay apart."""
        run_id = [f"{datetime.now(timezone.utc):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:8]}"]
        if self.world_size > 1:
            broadcast_object_list(run_id, from_process=0)
        return run_id[0]

    def _resolve_chat_template(self, chat_template: str) -> str:
        if chat_template == PROCESSOR_TEMPLATE:
            if not self.processor.chat_template:
                raise ValueError("chat_template=model, but the processor of this checkpoint has no chat template")
            return self.processor.chat_template
        return CHAT_TEMPLATES.get(chat_template, chat_template)

    def _decoding(self, gen_kwargs: dict[str, Any]) -> dict[str, Any]:
        """The engine's decoding arguments for a task's gen_kwargs; a setting it cannot honour is an error."""
        num_beams = parse_int("num_beams", gen_kwargs.get("num_beams") or 1, minimum=1)
        if num_beams > 1:
            raise ValueError(
                f"gen_kwargs num_beams={num_beams} is not supported: {self.name} decodes greedily or by sampling"
            )
        temperature = parse_float("temperature", gen_kwargs.get("temperature") or 0)
        top_p = gen_kwargs.get("top_p")
        return {
            "max_new_tokens": parse_int("max_new_tokens", gen_kwargs.get("max_new_tokens", self.max_new_tokens), 1),
            "eos_token_id": self.tokenizer.eos_token_id,
            "pad_token_id": self.tokenizer.pad_token_id,
            "do_sample": temperature > 0,
            "temperature": temperature or 1.0,
            "top_p": None if top_p is None else parse_float("top_p", top_p),
        }

    def _encode(
        self,
        contexts: tuple[str, ...],
        visuals: list[list[Image.Image]],
        tasks: tuple[str, ...] | list[str],
        doc_ids: tuple[int, ...] | list[int],
    ) -> dict[str, torch.Tensor]:
        """Chat-formatted, left-padded model inputs for a batch, on the model's device and dtype.

        A prompt longer than the model's context is an error naming its doc: the model was never trained on
        such positions, and scoring it would put a meaningless number in the results.
        """
        prompts = [self._prompt(context, len(images)) for context, images in zip(contexts, visuals)]
        images = [image for sample in visuals for image in sample]
        inputs = self.processor(
            images=images or None, text=prompts, return_tensors="pt", padding=True, add_special_tokens=False
        )
        for length, task, doc_id in zip(inputs["attention_mask"].sum(dim=1).tolist(), tasks, doc_ids):
            if length > self.context_length:
                raise ValueError(
                    f"task {task!r} doc {doc_id}: the prompt has {length} tokens, more than the model's context "
                    f"of {self.context_length} (max_position_embeddings)"
                )
        self._warn_unpruned_budgets(inputs["input_ids"])
        return without_token_type_ids(inputs.to(self.device, self.model.dtype))

    def _processor_arguments(self) -> dict[str, Any]:
        """Keyword arguments of ``AutoProcessor.from_pretrained`` beyond the checkpoint's (none for LLaVA)."""
        return {}

    def _prompt(self, context: str, num_images: int) -> str:
        """One user turn: the images' ``<image>`` placeholders before the context, through the chat template."""
        return chat_prompt(self.tokenizer, context, num_images, self.chat_template)

    def _warn_unpruned_budgets(self, input_ids: torch.Tensor) -> None:
        """Warn once per run and argument when a count keeps every image token of a sample (it prunes nothing)."""
        image_tokens = [n for n in (input_ids == image_token_id(self.model.config)).sum(dim=1).tolist() if n]
        if not image_tokens:
            return
        for argument in self.pruning.budgets_keeping_all(min(image_tokens)):
            if argument not in self._warned_budgets:
                self._warned_budgets.add(argument)
                logger.warning(
                    "%s keeps every image token of samples with %d of them: that step prunes nothing there",
                    argument,
                    min(image_tokens),
                )

    def _costs(self, generation: Generation, tasks: tuple[str, ...], doc_ids: tuple[int, ...]) -> list[ExampleCost]:
        batch = len(tasks)
        prefill_costs = generation.stats.costs(self.model.config.get_text_config(), self.flops_convention)
        return [
            ExampleCost(
                run_id=self.run_id,
                task=task,
                doc_id=int(doc_id),
                method=self.pruning.describe(),
                tokens_per_layer=list(cost.tokens_per_layer),
                flops=cost.flops,
                flops_ratio=cost.flops_ratio,
                flops_convention=cost.convention,
                prefill_s=generation.prefill_seconds / batch,
                latency_s=generation.total_seconds / batch,
                new_tokens=int((sequence != self.tokenizer.pad_token_id).sum()),
            )
            for task, doc_id, cost, sequence in zip(tasks, doc_ids, prefill_costs, generation.sequences)
        ]

    def _append_cost_log(self, costs: list[ExampleCost]) -> None:
        """Append records at once, so an interrupted run keeps what it measured."""
        if self.cost_log is None:
            return
        path = self.cost_log.with_name(f"{self.cost_log.stem}.rank{self.rank}{self.cost_log.suffix}")
        path = self.cost_log if self.world_size == 1 else path
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as handle:
            for cost in costs:
                handle.write(json.dumps(asdict(cost)) + "\n")

    def _log_costs(self, costs: list[ExampleCost]) -> None:
        """One entry in lmms-eval's metric log with the means over every rank's examples (rank 0 writes the
        results file, so it gathers the others' records)."""
        if self.world_size > 1:
            costs = gather_object(costs)
            if self.rank != 0:
                return
        if not costs:
            return
        latency = sum(cost.latency_s for cost in costs)
        new_tokens = sum(cost.new_tokens for cost in costs)
        per_task = {}
        for task in sorted({cost.task for cost in costs}):
            mine = [cost for cost in costs if cost.task == task]
            per_task[metric_name("flops_ratio", task)] = _mean(cost.flops_ratio for cost in mine)
            per_task[metric_name("latency_s", task)] = _mean(cost.latency_s for cost in mine)
        log_metrics(
            total_elapsed_time=latency,
            total_gen_tokens=new_tokens,
            avg_speed=new_tokens / latency if latency > 0 else 0.0,
            additional_metrics={
                "total_requests": len(costs),
                "flops_ratio": _mean(cost.flops_ratio for cost in costs),
                "prefill_s": _mean(cost.prefill_s for cost in costs),
                **per_task,
            },
        )

    def _run_probes(
        self,
        contexts: tuple[str, ...],
        visuals: list[list[Image.Image]],
        docs: list[dict],
        gen_kwargs: dict[str, Any],
        tasks: tuple[str, ...],
        doc_ids: tuple[int, ...],
    ) -> list[str]:
        """Probe tasks (``probe: saliency`` / ``probe: disruption`` in generation_kwargs), one sample at a time.

        The probes study the unpruned model; a pruning method in model_args would label their results with a
        method they never ran, so it is an error.
        """
        from himap_lmms.probes.requests import run_probe_request

        if not self.probes:
            raise ValueError(
                f"task {tasks[0]!r} runs the {gen_kwargs['probe']} probe, which supports LLaVA checkpoints "
                f"(himap_llava), not {self.name}"
            )
        if self.pruning.method != "none":
            raise ValueError(
                f"task {tasks[0]!r} runs the {gen_kwargs['probe']} probe, which studies the unpruned model: "
                f"drop method={self.pruning.method} and its arguments from model_args"
            )
        return [
            run_probe_request(
                self.model, self.processor, self._encode((context,), [images], [task], [doc_id]), gen_kwargs, doc
            )
            for context, images, doc, task, doc_id in zip(contexts, visuals, docs, tasks, doc_ids)
        ]


def _images(visual: Any, task: str, doc_id: int) -> list[Image.Image]:
    """The doc's visuals as a list of RGB images; anything else is an error naming the doc."""
    visual = [] if visual is None else visual if isinstance(visual, list) else [visual]
    for item in visual:
        if not isinstance(item, Image.Image):
            raise ValueError(
                f"task {task!r} doc {doc_id}: himap_llava takes images, got a {type(item).__name__} visual"
            )
    return [image.convert("RGB") for image in visual]


def _until(until: str | list[str] | None, eos: str) -> list[str]:
    if until is None:
        return [eos]
    if isinstance(until, str):
        return [until]
    if isinstance(until, list) and all(isinstance(stop, str) for stop in until):
        return until
    raise ValueError(f"gen_kwargs until={until!r} must be a string or a list of strings")


def _truncate(text: str, until: list[str]) -> str:
    for stop in until:
        if stop:
            text = text.split(stop)[0]
    return text


def _torch_dtype(dtype: str) -> torch.dtype | str:
    if dtype == "auto":
        return "auto"
    value = getattr(torch, str(dtype), None)
    if not isinstance(value, torch.dtype):
        raise ValueError(f"dtype={dtype!r} is not a torch dtype (try auto, float32, float16, bfloat16)")
    return value


@functools.cache
def _warn_if_untested_transformers() -> None:
    """Say once per process (not per model or batch) that this transformers is outside the tested range."""
    message = untested_version_message()
    if message:
        logger.warning(message)


def _check_chat_template(chat_template: str) -> None:
    """A template name must be one we know; anything else must be Jinja (checked before the model loads)."""
    known = (*CHAT_TEMPLATES, PROCESSOR_TEMPLATE)
    if chat_template not in known and "{{" not in chat_template and "{%" not in chat_template:
        raise ValueError(
            f"chat_template={chat_template!r} is neither a known name ({', '.join(known)}) nor a Jinja template"
        )


def _checkpoint(pretrained: str) -> str:
    """``pretrained`` as given when it is a directory or a hub id; a clear error when it is a local path that
    does not exist (transformers would report it as a malformed repo id, or as an unreachable hub)."""
    path = Path(pretrained).expanduser()
    if path.is_dir():
        return str(path)
    if path.exists() or is_local_path(pretrained):
        what = "a file, not a checkpoint directory" if path.exists() else "no such directory"
        raise ValueError(
            f"pretrained={pretrained!r}: {what} (relative paths resolve against the working directory, {Path.cwd()})"
        )
    return pretrained


def _mean(values: Any) -> float:
    values = list(values)
    return sum(values) / len(values)
