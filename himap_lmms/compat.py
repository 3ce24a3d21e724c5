"""Every difference between the transformers versions himap-lmms supports, in one place.

The engine rebuilds transformers' decoder loop around LLaVA's parts, so it touches internals that moved between
releases. Each shim below names the versions it serves; the rest of the package calls these and never looks at
the version itself. What is the same on every supported version (attention ``head_dim``/``scaling``/
``num_key_value_groups``, ``rotary_emb``, ``norm``, ``layers``, ``get_text_config()``, ``generate(output_logits=)``)
is used directly. ``docs/compatibility.md`` lists the supported range and how CI checks it.

A version outside the tested range is not refused: :func:`check_decoder_cache` fails at engine construction if
the decoder layers no longer fill the cache the way the engine passes it, which is the one difference that
would otherwise decode wrong tokens silently, and :func:`untested_version_message` says that it is untested.
"""

from __future__ import annotations

import inspect
import json
from pathlib import Path

import torch
import transformers
from packaging.version import Version
from safetensors.torch import load_file, save_file
from transformers import DynamicCache, PretrainedConfig, PreTrainedModel, ProcessorMixin

VERSION = Version(transformers.__version__)
_RELEASE = VERSION.release

# The versions CI runs the engine, method and adapter tests on (scripts/test_transformers_matrix.sh keeps its
# own list in step); the supported range is from the first to the last, pyproject.toml states the lower bound.
# 4.47 and before fail: their attention modules have no `scaling`, which the attention scores read (4.48's
# attention refactor added it).
TESTED_VERSIONS = ("4.48.0", "4.57.6", "5.12.1", "5.24.0")
OLDEST_TESTED, NEWEST_TESTED = Version(TESTED_VERSIONS[0]), Version(TESTED_VERSIONS[-1])


def _from(*release: int) -> bool:
    """True on transformers ``release`` and later (pre-releases of it included)."""
    return _RELEASE >= release


# The decoder layer's keyword for the KV cache: `past_key_value` up to 4.55, `past_key_values` 4.56-5.23, `cache`
# from 5.24. Layers accept any keyword (`**kwargs`), so a wrong one is swallowed, not refused.
CACHE_KEYWORD = "cache" if _from(5, 24) else "past_key_values" if _from(4, 56) else "past_key_value"


def untested_version_message() -> str | None:
    """A sentence for the user when this transformers lies outside the tested range, else None."""
    if OLDEST_TESTED.release <= _RELEASE[:3] and _RELEASE[:2] <= NEWEST_TESTED.release[:2]:
        return None
    return (
        f"transformers {VERSION} is untested with himap-lmms (tested: {', '.join(TESTED_VERSIONS)}); "
        "the engine checked at load time that it fills the KV cache, but other changes may still alter results"
    )


def call_decoder_layer(
    layer: torch.nn.Module, hidden: torch.Tensor, cache: DynamicCache | None = None, **kwargs
) -> torch.Tensor:
    """One decoder layer's output hidden states, with ``cache`` (if any) passed under this version's keyword.

    Up to 4.53 a layer returns a tuple whose first item is the hidden states; from 4.54 the tensor itself.
    """
    caching = {} if cache is None else {CACHE_KEYWORD: cache, "use_cache": True}
    output = layer(hidden, **caching, **kwargs)
    return output[0] if isinstance(output, tuple) else output


@torch.no_grad()
def check_decoder_cache(language_model: torch.nn.Module) -> None:
    """Fail unless the first decoder layer, called as the engine calls it, stores one token in the cache.

    On a version whose layers take the cache under another keyword the engine's would be swallowed, the cache
    would stay empty and decoding would attend to nothing: wrong tokens, no error. One token through one layer
    is enough to tell.
    """
    layer = language_model.layers[0]
    parameter = next(layer.parameters())
    hidden = torch.zeros(1, 1, language_model.config.hidden_size, dtype=parameter.dtype, device=parameter.device)
    positions = torch.zeros(1, 1, dtype=torch.long, device=parameter.device)
    rope = getattr(language_model.config, "rope_parameters", None) or language_model.config.rope_scaling or {}
    if "mrope_section" in rope:  # Qwen2.5-VL: 3 components (its rotary embedding requires them up to 5.23)
        positions = positions.expand(3, 1, 1)
    cache = new_cache(language_model.config)
    call_decoder_layer(
        layer, hidden, cache, position_ids=positions, position_embeddings=language_model.rotary_emb(hidden, positions)
    )
    index = getattr(layer.self_attn, "layer_idx", 0)
    if cache.get_seq_length(index) != 1:
        raise RuntimeError(
            f"transformers {VERSION}: {type(layer).__name__} did not fill the KV cache passed as "
            f"`{CACHE_KEYWORD}=` (the keyword himap-lmms uses on transformers {VERSION.major}.{VERSION.minor}; "
            f"tested: {', '.join(TESTED_VERSIONS)}). Decoding would ignore the prompt; install a tested version."
        )


def new_cache(text_config: PretrainedConfig) -> DynamicCache:
    """An empty KV cache for the decoder: `DynamicCache(config=)` from 4.56 (it sizes per-layer types from the
    config), a bare `DynamicCache()` before, which takes no config."""
    return DynamicCache(config=text_config) if _from(4, 56) else DynamicCache()


def cached_keys_values(cache: DynamicCache) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Each layer's cached ``(keys, values)``: `cache.layers[i].keys` from 4.54, `cache.key_cache[i]` before."""
    if _from(4, 54):
        return [(layer.keys, layer.values) for layer in cache.layers]
    return list(zip(cache.key_cache, cache.value_cache))


def llava_model_of(model: PreTrainedModel) -> torch.nn.Module:
    """The module holding the tower, projector and language model: `model.model` (a `LlavaModel`) from 4.52;
    before, the `...ForConditionalGeneration` holds them itself."""
    return model.model if _from(4, 52) else model


def language_model_of(model: PreTrainedModel) -> torch.nn.Module:
    """The ``LlamaModel``-like decoder of a LLaVA / LLaVA-NeXT (up to 4.51 inside a ``...ForCausalLM``)."""
    language_model = llava_model_of(model).language_model
    return language_model if _from(4, 52) else language_model.model


def vision_tower_of(model: PreTrainedModel) -> torch.nn.Module:
    return llava_model_of(model).vision_tower


def projector_of(model: PreTrainedModel) -> torch.nn.Module:
    return llava_model_of(model).multi_modal_projector


def lm_head_of(model: PreTrainedModel) -> torch.nn.Module:
    """The output projection: on the LLaVA itself from 4.52, on its ``...ForCausalLM`` language model before."""
    return model.lm_head if _from(4, 52) else model.language_model.lm_head


def vision_encoder_layers(tower: torch.nn.Module) -> torch.nn.ModuleList:
    """A CLIP vision tower's transformer layers: `tower.encoder` from 5.6, `tower.vision_model.encoder` before."""
    return (tower.encoder if _from(5, 6) else tower.vision_model.encoder).layers


def image_token_id(config: PretrainedConfig) -> int:
    """The image placeholder's token id. LLaVA's field is `image_token_index` on every version; `image_token_id` is an
    alias of it only from 4.52 (on 4.51 a config built with `image_token_id=` silently keeps 32000). Qwen2.5-VL's
    config has `image_token_id` only."""
    return config.image_token_id if config.model_type == "qwen2_5_vl" else config.image_token_index


def image_features_per_image(
    model: PreTrainedModel,
    pixel_values: torch.Tensor,
    image_sizes: torch.Tensor | None = None,
    batch_num_images: torch.Tensor | None = None,
) -> list[torch.Tensor]:
    """One ``(tokens, hidden)`` tensor per image: its projected features (LLaVA-NeXT and LLaVA-OneVision: its tiles
    packed, with their newline tokens), in reading order.

    `get_image_features` returns an output object whose `pooler_output` holds them from 5.0, a list (one tensor
    per image) in 4.53-4.57, a tensor before. LLaVA-NeXT and LLaVA-OneVision pack their tiles and append
    `image_newline` inside `get_image_features` from 4.53; before, their `forward` did that (into one tensor, with
    each image's length), so it is done here.
    ``batch_num_images`` (LLaVA-OneVision's processor returns it from the release that stopped tiling the images of
    multi-image prompts, which its model then takes too) is passed on only when given.
    """
    owner = llava_model_of(model)
    config = model.config
    selection = {
        "vision_feature_layer": config.vision_feature_layer,
        "vision_feature_select_strategy": config.vision_feature_select_strategy,
    }
    tiled = config.model_type in ("llava_next", "llava_onevision")
    if tiled:
        selection["image_sizes"] = image_sizes
    if batch_num_images is not None:
        selection["batch_num_images"] = batch_num_images
    if _from(5, 0):
        features = owner.get_image_features(pixel_values=pixel_values, return_dict=True, **selection).pooler_output
    else:
        features = owner.get_image_features(pixel_values=pixel_values, **selection)
    if tiled and not _from(4, 53):  # packed into one tensor: split back per image
        newline = owner.image_newline
        packed, lengths = owner.pack_image_features(features, image_sizes, image_newline=newline, **_packing(config))
        features = packed.split(lengths.tolist())
    return [f.reshape(-1, f.shape[-1]) for f in features]


def _packing(config: PretrainedConfig) -> dict[str, str]:
    """`pack_image_features`'s own arguments before 4.53: LLaVA-NeXT's feature selection, LLaVA-OneVision's
    `vision_aspect_ratio` (how many tiles' worth of features it keeps before downsampling them)."""
    if config.model_type == "llava_onevision":
        return {"vision_aspect_ratio": config.vision_aspect_ratio}
    return {"vision_feature_select_strategy": config.vision_feature_select_strategy}


def image_features(
    model: PreTrainedModel,
    pixel_values: torch.Tensor,
    image_sizes: torch.Tensor | None = None,
    batch_num_images: torch.Tensor | None = None,
) -> torch.Tensor:
    """``(image tokens, hidden)``: the projected features of every image, in reading order."""
    return torch.cat(image_features_per_image(model, pixel_values, image_sizes, batch_num_images), dim=0)


def qwen2_5_vl_image_features(
    model: PreTrainedModel, pixel_values: torch.Tensor, image_grid_thw: torch.Tensor
) -> torch.Tensor:
    """``(image tokens, hidden)``: Qwen2.5-VL's merged-patch features of every image, in reading order.

    `get_image_features` returns an output object whose `pooler_output` holds one tensor per image from 5.0, the
    tuple of them before.
    """
    owner = llava_model_of(model)
    if _from(5, 0):
        features = owner.get_image_features(pixel_values, image_grid_thw, return_dict=True).pooler_output
    else:
        features = owner.get_image_features(pixel_values, image_grid_thw)
    return torch.cat(list(features), dim=0)


def qwen2_5_vl_rope_index(
    model: PreTrainedModel, input_ids: torch.Tensor, image_grid_thw: torch.Tensor | None, valid: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Qwen2.5-VL's ``(3, batch, n)`` rotary position ids and ``(batch, 1)`` `rope_deltas` for a left-padded batch
    of text and images (no video): the model's own `get_rope_index`.

    From 5.x it also takes `mm_token_type_ids` (1 on image tokens), which the processor returns (5.12.1 has it,
    4.57.6 has not); it is built here from the image placeholders, the same thing for prompts without video.
    """
    owner = llava_model_of(model)
    arguments = {"image_grid_thw": image_grid_thw, "attention_mask": valid.long()}
    if "mm_token_type_ids" in inspect.signature(owner.get_rope_index).parameters:
        arguments["mm_token_type_ids"] = (input_ids == image_token_id(model.config)).int()
    return owner.get_rope_index(input_ids, **arguments)


# The engine runs Qwen2.5-VL from 5.0 (tested 5.12.1 and 5.24.0). Up to 4.57 `get_rope_index`'s `rope_deltas` count
# from the padded length (from 5.0 from each prompt's real length), and 4.57.6 cannot build the tiny checkpoint the
# tests need (its Qwen2.5-VL processor requires a Qwen2Tokenizer): untested there, so refused.
QWEN2_5_VL_IN_ENGINE = _from(5, 0)


def per_token_rotary(
    position_embeddings: tuple[torch.Tensor, torch.Tensor], attention: torch.nn.Module
) -> tuple[torch.Tensor, torch.Tensor]:
    """A decoder layer's rotary ``(cos, sin)`` as one ``(batch, n, head_dim)`` row per token, what the scores read.

    Qwen2.5-VL's text rotary embedding returns its three position components apart, ``(3, batch, n, head_dim)``,
    up to 5.23 (the attention interleaves them by `mrope_section`, read from `rope_parameters` from 5.0, from
    `rope_scaling` before), and interleaved from 5.24, as every other decoder's always are.
    """
    cos, sin = position_embeddings
    if cos.ndim == 3:
        return cos, sin
    rope = attention.config.rope_parameters if _from(5, 0) else attention.config.rope_scaling
    section = list(rope["mrope_section"]) * 2
    return tuple(torch.cat([m[i % 3] for i, m in enumerate(t.split(section, dim=-1))], dim=-1) for t in (cos, sin))


def dtype_argument(dtype: torch.dtype | str) -> dict[str, torch.dtype | str]:
    """``from_pretrained``/``_from_config``'s dtype keyword: `dtype=` from 4.56, `torch_dtype=` before."""
    return {"dtype": dtype} if _from(4, 56) else {"torch_dtype": dtype}


def without_token_type_ids(inputs: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``inputs`` less the token type ids the engine does not take: `token_type_ids`, which generic fast
    tokenizers return up to 4.57 and generation rejects, and Qwen2.5-VL's `mm_token_type_ids` (from 5.x), which
    the engine builds from the image placeholders itself (:func:`qwen2_5_vl_rope_index`)."""
    return {name: value for name, value in inputs.items() if name not in ("token_type_ids", "mm_token_type_ids")}


def save_model(model: PreTrainedModel, out_dir: str | Path) -> None:
    """``model.save_pretrained(out_dir)``, then :func:`portable_weight_names` on what it wrote."""
    model.save_pretrained(out_dir)
    portable_weight_names(out_dir)


def portable_weight_names(checkpoint: str | Path) -> None:
    """Store a LLaVA checkpoint's CLIP tower weights under the names every supported version loads.

    From 5.6 the CLIP tower has no `vision_model` wrapper and `save_pretrained` writes `vision_tower.encoder...`;
    before 5.6 those names match nothing, and loading leaves the whole tower randomly initialised with only a
    warning. The hub's LLaVA checkpoints name them `vision_tower.vision_model...`, which 5.6 and later map too.
    """
    for path in sorted(Path(checkpoint).glob("*.safetensors")):
        weights = load_file(path)
        renamed = {_hub_weight_name(name): tensor for name, tensor in weights.items()}
        if renamed.keys() != weights.keys():
            save_file(renamed, path, metadata={"format": "pt"})
    index = Path(checkpoint) / "model.safetensors.index.json"
    if index.exists():
        content = json.loads(index.read_text())
        content["weight_map"] = {_hub_weight_name(name): file for name, file in content["weight_map"].items()}
        index.write_text(json.dumps(content, indent=2) + "\n")


def _hub_weight_name(name: str) -> str:
    tower = "vision_tower."
    if name.startswith(tower) and not name.startswith(tower + "vision_model."):
        return tower + "vision_model." + name[len(tower) :]
    return name


def save_processor(processor: ProcessorMixin, out_dir: str | Path) -> None:
    """``processor.save_pretrained(out_dir)``, then :func:`portable_processor_files` on what it wrote."""
    processor.save_pretrained(out_dir)
    portable_processor_files(out_dir, processor.tokenizer.model_input_names)


def portable_processor_files(checkpoint: str | Path, model_input_names: list[str]) -> None:
    """Rewrite a LLaVA checkpoint's processor files into a layout every supported version loads alike.

    From 5.0 the image processor is saved inside `processor_config.json`, the tokenizer class as
    `TokenizersBackend`, `extra_special_tokens` as a list, and the tokenizer's `model_input_names` not at all;
    4.x reads the image processor from `preprocessor_config.json`, knows the class as `PreTrainedTokenizerFast`,
    wants a dict of named tokens, and without the names a generic tokenizer returns `token_type_ids`, which
    LLaVA does not take. 5.x reads this layout too. Files already in it are left as they are.
    """
    checkpoint = Path(checkpoint)
    processor_file, tokenizer_file = checkpoint / "processor_config.json", checkpoint / "tokenizer_config.json"
    settings = json.loads(processor_file.read_text())
    if "image_processor" in settings:
        image = settings.pop("image_processor") | {"processor_class": settings["processor_class"]}
        (checkpoint / "preprocessor_config.json").write_text(json.dumps(image, indent=2) + "\n")
        processor_file.write_text(json.dumps(settings, indent=2) + "\n")
    tokenizer = json.loads(tokenizer_file.read_text())
    if tokenizer.get("tokenizer_class") == "TokenizersBackend":
        tokenizer["tokenizer_class"] = "PreTrainedTokenizerFast"
    if isinstance(tokenizer.get("extra_special_tokens"), list):
        tokenizer["extra_special_tokens"] = {key: tokenizer.pop(key) for key in ("image_token",) if key in tokenizer}
    tokenizer["model_input_names"] = list(model_input_names)
    tokenizer_file.write_text(json.dumps(tokenizer, indent=2) + "\n")
