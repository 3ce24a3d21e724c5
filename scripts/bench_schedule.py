"""What a method's token schedule alone costs against its equal-FLOPs FastV partner's, with no engine.

The cost benchmark times each method against FastV at the same FLOPs ratio. When a method is slower there, this
tells how much of it is the schedule's shape on this hardware rather than the method's own work: the random-weight
model's decoder layers (bf16, on the CPU, as the CPU benchmark) run a prompt at each schedule's token counts (tokens
sliced away before a layer, nothing scored, no cache), the two schedules interleaved in A-B-B-A rounds, and the
median ratio of a round's times comes with its 95 % interval (the sign test's, as the benchmark's). Usage::

    python scripts/bench_schedule.py --preset pdrop_25 --shape scaled --rounds 30
"""

from __future__ import annotations

import argparse
import time

import torch
from tqdm import tqdm

from himap_lmms.bench.settings import PAIR_PREFIX, bench_methods, method_configs, prompt_tokens_per_layer
from himap_lmms.bench.summary import paired_ratio
from himap_lmms.compat import call_decoder_layer, language_model_of
from himap_lmms.model_shapes import LLAVA_SHAPES, LlavaShape, build_random_llava


def schedules(preset: str, shape: LlavaShape) -> dict[str, list[int]]:
    """Tokens per decoder layer of ``preset`` and of its equal-FLOPs FastV partner on the benchmark's prompt."""
    methods = bench_methods((preset,), shape, fastv_pairs=True)
    if PAIR_PREFIX + preset not in methods:
        raise ValueError(f"preset {preset!r} has no equal-FLOPs FastV partner at the {shape.name} shape")
    return {name: prompt_tokens_per_layer(method.config, shape) for name, method in methods.items()}


@torch.inference_mode()
def decoder_seconds(language_model: torch.nn.Module, hidden: torch.Tensor, tokens_per_layer: list[int]) -> float:
    """Seconds for the decoder layers to run ``hidden`` keeping the last ``tokens_per_layer[i]`` tokens at layer i."""
    positions = torch.arange(hidden.shape[1], device=hidden.device)[None]
    started = time.perf_counter()
    for layer, n in zip(language_model.layers, tokens_per_layer):
        if hidden.shape[1] != n:
            hidden, positions = hidden[:, -n:].contiguous(), positions[:, -n:]
        rotary = language_model.rotary_emb(hidden, positions)
        hidden = call_decoder_layer(layer, hidden, position_ids=positions, position_embeddings=rotary)
    return time.perf_counter() - started


def compare(preset: str, shape: LlavaShape, rounds: int, progress: bool = True) -> dict:
    """``preset``'s decoder time over its partner's, per A-B-B-A round (the first round is a warm-up)."""
    counts = schedules(preset, shape)
    model = build_random_llava(shape, torch.bfloat16, torch.device("cpu"), "sdpa")
    language_model = language_model_of(model)
    hidden = torch.randn(1, max(max(c) for c in counts.values()), shape.hidden, dtype=torch.bfloat16)
    method, partner = counts[preset], counts[PAIR_PREFIX + preset]
    ratios = []
    for round_index in tqdm(range(rounds + 1), desc=f"{preset} against FastV", disable=not progress):
        a1, b1, b2, a2 = (
            decoder_seconds(language_model, hidden, tokens) for tokens in (method, partner, partner, method)
        )
        if round_index:
            ratios.append((a1 + a2) / (b1 + b2))
    return {"tokens_per_layer": counts, "decoder_time_ratio": paired_ratio(ratios)}


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", required=True, help="a method preset of configs/methods.yaml")
    parser.add_argument("--shape", choices=sorted(LLAVA_SHAPES), default="scaled")
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--threads", type=int, default=1, help="torch threads (default 1, as the benchmark's)")
    args = parser.parse_args(argv)
    if args.preset not in method_configs():
        parser.error(f"--preset {args.preset!r} is not a preset of configs/methods.yaml")
    if args.rounds < 6:
        parser.error(f"--rounds {args.rounds}: a 95 % interval of the median needs 6 rounds at least")
    torch.set_num_threads(args.threads)
    try:
        result = compare(args.preset, LLAVA_SHAPES[args.shape], args.rounds)
    except ValueError as error:
        parser.error(str(error))
    ratio = result["decoder_time_ratio"]
    print(
        f"{args.preset} / FastV at its FLOPs, decoder only ({args.shape}): {ratio['median']:.3f} "
        f"(95 % interval {ratio['low']:.3f}-{ratio['high']:.3f}, {ratio['rounds']} rounds)"
    )
    return result


if __name__ == "__main__":
    main()
