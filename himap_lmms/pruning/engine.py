"""The pruned LLaVA forward: a decoder loop that drops image tokens between layers.

:class:`PrunedLlava` wraps a transformers ``LlavaForConditionalGeneration`` (or ``LlavaNext...``,
``LlavaOnevision...``, ``Qwen2_5_VLForConditionalGeneration``) without changing it; how a family merges its
images into the prompt and numbers its positions is its object in :mod:`himap_lmms.model_families`, so the loop
below is the same for all. Its prefill is the loop of transformers' ``LlamaModel.forward`` (hidden states, rotary
position embeddings, mask, KV cache, one call per decoder layer) with one addition: before a pruning layer, image
tokens are scored from the previous layer's attention (:mod:`himap_lmms.pruning.scoring`) and the sequence is
compacted to the kept tokens. Kept tokens stay in order and keep their position ids (RoPE sees the positions
the unpruned model would), unless the step renumbers them 0..n'-1 as PyramidDrop's and VisionZip's authors do;
decoding then continues each run of layers' own numbering. Layers after a step cache only the kept tokens;
decoding runs each new token through every layer against whatever that layer cached, so pruning happens once,
in the prefill. Methods differ only in the score of a step, whose rule every method, built-in or installed,
declares in its :class:`~himap_lmms.pruning.registry.MethodSpec`: DART's reads the previous layer's keys and
normed output, PyramidDrop's the next layer's projections, and VisionZip's selection is made in the vision tower
(its spec's ``embed``, :mod:`himap_lmms.pruning.kernels.visionzip`), so its step before layer 0 keeps the slots
chosen there.

Batches are left-padded as transformers pads for generation. Each sample is ranked on its own scores and
keeps its own budget; when samples end up with different lengths the shorter ones are left-padded again.

Instead of pruning, the probes edit attention (:data:`AttentionEdit`): with method ``none`` an edit may remove
edges from any layer's causal mask, in the prefill and at every decoding step, so a probe's generation runs
through this same loop rather than a copy of it.

The three parts of a pruning step run under ``torch.profiler.record_function`` labels (:data:`PRUNING_LABELS`
of :mod:`himap_lmms.pruning.scoring`, which VisionZip's selection in the tower shares), so a profiler run reads
their cost back without touching the engine; with no profiler active a label is one cheap dispatcher call and
adds no device synchronisation.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch.profiler import record_function
from transformers import DynamicCache, PretrainedConfig, PreTrainedModel

from himap_lmms.compat import call_decoder_layer, check_decoder_cache, image_token_id, new_cache
from himap_lmms.cost import Convention, PrefillCost, kv_hidden_of, prefill_cost
from himap_lmms.llava_forward import (
    additive_mask,
    causal_allowed,
    check_attention,
    language_model_of,
    last_token_logits,
    position_ids_of,
)
from himap_lmms.model_families import family_of
from himap_lmms.pruning.config import PruningConfig
from himap_lmms.pruning.registry import ScoreContext, method_spec
from himap_lmms.pruning.scoring import COMPACT_LABEL, SCORE_LABEL, TOP_K_LABEL, select_top

AttentionEdit = Callable[[int, torch.Tensor], torch.Tensor]
"""``(layer index, allowed) -> allowed``: which edges a layer keeps, given its causal ``(batch, q, kv)`` bool.

Queries are the last ``q`` of the ``kv`` sequence positions (the whole prompt in the prefill, the new token
when decoding). Returning ``allowed`` itself leaves that layer's mask untouched, so layers an edit does not
change cost no mask.
"""


@dataclass
class PrefillStats:
    """What the prefill did to each sample.

    ``tokens_per_layer[b, l]`` counts the real (non-padding) tokens layer ``l`` processed for sample ``b``,
    ``prompt_tokens[b]`` the real tokens of its whole prompt, and ``kept[s][b]`` holds the prompt positions of
    the image tokens sample ``b`` kept after step ``s``.
    """

    tokens_per_layer: torch.Tensor
    prompt_tokens: torch.Tensor
    kept: list[list[torch.Tensor]] = field(default_factory=list)

    def costs(self, text_config: PretrainedConfig, convention: Convention = "fastv") -> list[PrefillCost]:
        """Each sample's prefill cost (:mod:`himap_lmms.cost`) from the token counts its layers really saw, with the
        decoder's key-value width (grouped-query attention: Qwen2.5-VL, LLaVA-OneVision)."""
        return [
            prefill_cost(
                tokens.tolist(),
                text_config.hidden_size,
                text_config.intermediate_size,
                convention,
                prompt_tokens=int(prompt),
                kv_hidden=kv_hidden_of(text_config),
            )
            for tokens, prompt in zip(self.tokens_per_layer, self.prompt_tokens)
        ]


@dataclass
class DecodeState:
    """Everything decoding needs after the prefill: the cache and, per segment of layers, its valid keys.

    A segment is a run of layers that share one sequence (the layers between two pruning steps). Its keys
    are tracked only when it has padding; otherwise every decoding step attends to all of them, mask-free.
    ``position`` is the last position id of the unpruned prompt (its three components on Qwen2.5-VL, from the
    model's ``rope_deltas``: :mod:`himap_lmms.model_families`); a segment after a step that renumbered the
    kept tokens (PyramidDrop, VisionZip) sees new tokens ``segment_shift`` positions earlier (``(batch, 1)``,
    None: no shift), so that they follow on from its own numbering.
    """

    cache: DynamicCache
    segment_of_layer: list[int]
    segment_valid: list[torch.Tensor | None]
    position: torch.Tensor
    segment_shift: list[torch.Tensor | None] = field(default_factory=list)


@dataclass
class Generation:
    """Result of :meth:`PrunedLlava.generate`: new tokens only, plus cost, optional per-step logits and the cache.

    ``cache`` (with ``return_cache``) holds the keys and values of the prompt's kept tokens and of every new
    token but the last, which was never fed back.
    """

    sequences: torch.Tensor
    stats: PrefillStats
    prefill_seconds: float
    total_seconds: float
    logits: list[torch.Tensor] | None = None
    cache: DynamicCache | None = None


class PrunedLlava:
    """Prefill, decode and greedy/sampled generation of a LLaVA under a :class:`PruningConfig`."""

    def __init__(
        self,
        model: PreTrainedModel,
        config: PruningConfig,
        *,
        attention_edit: AttentionEdit | None = None,
        logits_dtype: torch.dtype = torch.float32,
    ) -> None:
        """``attention_edit`` changes the causal mask per layer (method ``none`` only: pruning moves the
        positions an edit refers to). Logits come back in ``logits_dtype``; float32 lets callers compare and
        sample alike whatever the model's dtype, a float64 model's probes ask for float64.
        """
        if attention_edit is not None and config.method != "none":
            raise ValueError(
                f"attention_edit needs method='none', got method={config.method!r}: pruning moves the "
                "sequence positions the edit's (query, key) mask refers to"
            )
        self.model = model
        self.family = family_of(model)  # input merge and position ids (himap_lmms.model_families)
        self.language_model = language_model_of(model)
        self.config = config.for_depth(len(self.language_model.layers))
        self.attention_edit = attention_edit
        self.logits_dtype = logits_dtype
        check_attention(model, "the pruning engine")
        check_decoder_cache(self.language_model)
        self.spec = method_spec(config.method)
        if self.spec.check is not None:
            self.spec.check(model)
        if self.spec.embed is None:  # a step a pre-LM method's embed chose needs no rule
            for step in self.config.steps:
                if step.score not in self.spec.scores:
                    raise ValueError(
                        f"method={config.method} has a step scored by {step.score!r} but its MethodSpec declares "
                        f"no rule for it (scores: {', '.join(self.spec.scores) or 'none'})"
                    )
        self.family.check(model, self.config)
        # SDPA applies the causal mask itself when given none; eager attention only adds the mask it is given.
        self._explicit_causal_mask = self.language_model.config._attn_implementation == "eager"
        self.image_token_id = image_token_id(model.config)

    @torch.no_grad()
    def prefill(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        batch_num_images: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, DecodeState, PrefillStats]:
        """Run the prompt through every layer, pruning on the way. Returns last-position logits (``logits_dtype``).

        ``image_sizes`` is LLaVA-NeXT's and LLaVA-OneVision's, ``batch_num_images`` LLaVA-OneVision's (its
        processor's images per prompt: a prompt of several is not tiled), ``image_grid_thw`` Qwen2.5-VL's (each
        family refuses the others').
        """
        lm = self.language_model
        if attention_mask is None:
            attention_mask = torch.ones_like(input_ids)
        valid = attention_mask.bool()
        if not bool(valid[:, -1].all()):
            raise ValueError("attention_mask has right padding: pad prompts on the left (padding_side='left')")
        chosen = None  # the slots a method that chooses before the language model (VisionZip, pool) picks
        if self.spec.embed is not None:
            hidden, chosen = self.spec.embed(self.model, input_ids, pixel_values, image_sizes, self.config.steps[0])
        else:
            hidden = self.family.embed(
                self.model, input_ids, pixel_values, image_sizes, image_grid_thw, batch_num_images
            )
        batch, length = input_ids.shape
        position_ids, last_position = self.family.positions(self.model, input_ids, valid, image_grid_thw)
        is_image = (input_ids == self.image_token_id) & valid
        is_text = _after_last(is_image) & valid
        source = torch.arange(length, device=input_ids.device).expand(batch, length)
        num_image = is_image.sum(dim=1).tolist()
        steps = {step.layer: step for step in self.config.steps}

        cache = new_cache(lm.config)
        state = DecodeState(cache=cache, segment_of_layer=[], segment_valid=[], position=last_position)
        prompt_tokens = valid.sum(dim=1)
        segment_tokens, kept = [], []
        shift = None  # how far a renumbering step moved the last position back (None: not at all)
        position_embeddings, mask = self._start_segment(state, segment_tokens, hidden, position_ids, valid, shift)
        layer_input = hidden
        for index, layer in enumerate(lm.layers):
            step = steps.get(index)
            if step is not None:
                with record_function(SCORE_LABEL):
                    budget = torch.tensor([step.budget(n) for n in num_image], device=valid.device)
                    context = ScoreContext(
                        step, index, lm, cache, hidden, layer_input, position_ids, position_embeddings, valid,
                        is_image, is_text, budget,
                    )  # fmt: skip
                    ranked = self._rank(context, chosen)
                with record_function(TOP_K_LABEL):
                    if ranked.dtype != torch.bool:  # scores: keep each sample's best ``budget``
                        ranked = select_top(ranked, is_image, budget)
                    keep = (valid & ~is_image) | ranked
                with record_function(COMPACT_LABEL):
                    order = _compact_order(keep)
                    hidden = hidden.gather(1, order[..., None].expand(-1, -1, hidden.shape[-1]))
                    position_ids, is_image, is_text, source = (
                        _gather_columns(t, order) for t in (position_ids, is_image, is_text, source)
                    )
                    valid = keep.gather(1, order)
                    is_image, is_text = is_image & valid, is_text & valid
                    if step.positions == "renumber":
                        position_ids = position_ids_of(valid)
                        shift = state.position - position_ids[:, -1:]
                kept.append((source, is_image))
                position_embeddings, mask = self._start_segment(
                    state, segment_tokens, hidden, position_ids, valid, shift
                )
            state.segment_of_layer.append(len(segment_tokens) - 1)
            layer_input = hidden
            hidden = call_decoder_layer(
                layer,
                hidden,
                cache,
                attention_mask=self._layer_mask(index, mask, valid),
                position_ids=position_ids,
                position_embeddings=position_embeddings,
            )
        stats = PrefillStats(
            tokens_per_layer=torch.stack(segment_tokens, dim=1)[:, state.segment_of_layer].cpu(),
            prompt_tokens=prompt_tokens.cpu(),
            kept=[[source[b][image[b]] for b in range(batch)] for source, image in kept],
        )
        return self._logits(hidden), state, stats

    def _rank(self, context: ScoreContext, chosen: torch.Tensor | None) -> torch.Tensor:
        """``(batch, n)`` scores of the image tokens before layer ``context.layer`` (each sample's best ``budget`` go
        on), or, for rules that choose rather than rank (DART's quotas), a bool mask of those kept: the rule the
        method's spec declares for the step's score, built-in or installed alike. ``chosen`` holds the slots a
        method picked before the language model (its spec's ``embed``: VisionZip's tower, pooling).
        """
        if chosen is not None:
            return chosen
        return self.spec.scores[context.step.score](context)

    @torch.no_grad()
    def decode(self, state: DecodeState, tokens: torch.Tensor) -> torch.Tensor:
        """Feed one new token per sample (``(batch, 1)``) through the cached layers; returns its logits."""
        lm = self.language_model
        hidden = self.model.get_input_embeddings()(tokens)
        state.position = state.position + 1
        position_embeddings = lm.rotary_emb(hidden, state.position)
        shifted = [None if shift is None else state.position - shift for shift in state.segment_shift]
        shifted_embeddings = [None if p is None else lm.rotary_emb(hidden, p) for p in shifted]
        new_key = torch.ones_like(tokens, dtype=torch.bool)
        state.segment_valid = [None if v is None else torch.cat([v, new_key], dim=1) for v in state.segment_valid]
        masks = [None if v is None else self._mask(v, 1, padded=True) for v in state.segment_valid]
        for index, layer in enumerate(lm.layers):
            segment = state.segment_of_layer[index]
            hidden = call_decoder_layer(
                layer,
                hidden,
                state.cache,
                attention_mask=self._layer_mask(index, masks[segment], state.segment_valid[segment], 1),
                position_ids=state.position if shifted[segment] is None else shifted[segment],
                position_embeddings=position_embeddings
                if shifted_embeddings[segment] is None
                else shifted_embeddings[segment],
            )
        return self._logits(hidden)

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor | None = None,
        pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        image_grid_thw: torch.Tensor | None = None,
        batch_num_images: torch.Tensor | None = None,
        *,
        max_new_tokens: int = 32,
        eos_token_id: int | list[int] | None = None,
        pad_token_id: int | None = None,
        do_sample: bool = False,
        temperature: float = 1.0,
        top_p: float | None = None,
        generator: torch.Generator | None = None,
        return_logits: bool = False,
        return_cache: bool = False,
    ) -> Generation:
        """Prefill once, then decode with the KV cache until every sample hit EOS or ``max_new_tokens``.

        Finished samples are filled with ``pad_token_id`` (EOS if unset), as transformers' ``generate`` does.
        ``prefill_seconds`` is the time to the first new token; both times synchronise the GPU.
        """
        if max_new_tokens < 1:
            raise ValueError(f"max_new_tokens={max_new_tokens} must be >= 1")
        eos = torch.tensor([eos_token_id] if isinstance(eos_token_id, int) else eos_token_id or [])
        eos = eos.to(input_ids.device)
        pad = pad_token_id if pad_token_id is not None else (int(eos[0]) if eos.numel() else 0)
        start = _now(input_ids.device)
        logits, state, stats = self.prefill(
            input_ids, attention_mask, pixel_values, image_sizes, image_grid_thw, batch_num_images
        )
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        new_tokens, step_logits = [], []
        prefill_seconds = 0.0
        for step in range(max_new_tokens):
            if return_logits:
                step_logits.append(logits)
            token = _next_token(logits, do_sample, temperature, top_p, generator)
            token = token.masked_fill(finished, pad)
            new_tokens.append(token)
            if step == 0:
                prefill_seconds = _now(input_ids.device) - start
            finished |= torch.isin(token, eos)
            if bool(finished.all()) or step == max_new_tokens - 1:
                break
            logits = self.decode(state, token[:, None])
        return Generation(
            sequences=torch.stack(new_tokens, dim=1),
            stats=stats,
            prefill_seconds=prefill_seconds,
            total_seconds=_now(input_ids.device) - start,
            logits=step_logits if return_logits else None,
            cache=state.cache if return_cache else None,
        )

    def _start_segment(
        self,
        state: DecodeState,
        segment_tokens: list[torch.Tensor],
        hidden: torch.Tensor,
        position_ids: torch.Tensor,
        valid: torch.Tensor,
        shift: torch.Tensor | None,
    ) -> tuple[tuple[torch.Tensor, torch.Tensor], torch.Tensor | None]:
        """Bookkeeping where a run of layers with a new sequence begins; returns its rotary embeddings and mask."""
        padded = not bool(valid.all())
        state.segment_shift.append(shift)
        # An attention edit is handed every key's validity, so the keys are tracked even without padding.
        state.segment_valid.append(valid if padded or self.attention_edit is not None else None)
        segment_tokens.append(valid.sum(dim=1))
        return self.language_model.rotary_emb(hidden, position_ids), self._mask(valid, valid.shape[1], padded)

    def _logits(self, hidden: torch.Tensor) -> torch.Tensor:
        return last_token_logits(self.model, hidden).to(self.logits_dtype)

    def _layer_mask(
        self, index: int, mask: torch.Tensor | None, valid: torch.Tensor | None, query_length: int | None = None
    ) -> torch.Tensor | None:
        """Layer ``index``'s mask: ``mask`` itself, unless the attention edit changes this layer's edges.

        ``valid`` marks the keys and ``query_length`` (default: all of them) the queries; both are read only
        when an edit is set, so the default path costs one ``is None`` test per layer.
        """
        if self.attention_edit is None:
            return mask
        allowed = causal_allowed(valid, valid.shape[1] if query_length is None else query_length)
        edited = self.attention_edit(index, allowed)
        return mask if edited is allowed else additive_mask(edited, self.language_model.dtype)

    def _mask(self, valid: torch.Tensor, query_length: int, padded: bool) -> torch.Tensor | None:
        """Additive ``(batch, 1, q, kv)`` mask for the last ``query_length`` of ``kv`` positions, or None.

        None (no padding, and a kernel that handles causality itself or a single query) lets SDPA pick its
        fastest path. ``padded`` is passed in rather than read off ``valid`` to spare a device sync per call.
        """
        if not padded and (query_length == 1 or not self._explicit_causal_mask):
            return None
        return additive_mask(causal_allowed(valid, query_length), self.language_model.dtype)


def _after_last(is_image: torch.Tensor) -> torch.Tensor:
    """True at the positions after each row's last image token (all positions if the row has none)."""
    length = is_image.shape[1]
    positions = torch.arange(length, device=is_image.device)
    last = torch.where(is_image, positions, -1).amax(dim=1)
    return positions[None, :] > last[:, None]


def _gather_columns(values: torch.Tensor, order: torch.Tensor) -> torch.Tensor:
    """``values`` (``(..., batch, n)``: position ids may have a component dimension first) at the columns ``order``."""
    return values.gather(-1, order.expand(*values.shape[:-2], *order.shape))


def _compact_order(keep: torch.Tensor) -> torch.Tensor:
    """Gather index that moves each row's kept positions to the right end, in order (left padding).

    A stable sort on ``keep`` puts dropped positions first and kept ones last, each group in its original
    order; the last ``max kept`` columns are then the new, left-padded sequence.
    """
    order = torch.sort(keep.int(), dim=1, stable=True).indices
    return order[:, keep.shape[1] - int(keep.sum(dim=1).max()) :]


def _next_token(
    logits: torch.Tensor,
    do_sample: bool,
    temperature: float,
    top_p: float | None,
    generator: torch.Generator | None,
) -> torch.Tensor:
    if not do_sample:
        return logits.argmax(dim=-1)
    probs = (logits / temperature).softmax(dim=-1)
    if top_p is not None and top_p < 1.0:
        sorted_probs, sorted_index = probs.sort(dim=-1, descending=True)
        outside = sorted_probs.cumsum(dim=-1) - sorted_probs > top_p
        sorted_probs = sorted_probs.masked_fill(outside, 0.0)
        probs = torch.zeros_like(probs).scatter(-1, sorted_index, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator).squeeze(-1)


def _now(device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter()
