"""Caption generation speed: images/s for greedy and beam search at batch 1 and 8, with the
encoder's features cached (read from ``feature_cache``) and not cached (encoded on the fly).

A captioner (ViT-Tiny/14 encoder at random init, SmolLM2-135M-Instruct with fresh LoRA) is built
once; the images are the bundled PH2 sample, nothing is downloaded. The LM decodes exactly
``--new-tokens`` tokens per caption (EOS is ignored for timing, so greedy and beam do the same
amount of decoding). Writes benchmarks/results/bench_caption_speed.json.

    python benchmarks/bench_caption_speed.py --threads 2
"""

from __future__ import annotations

import tempfile
import time

import torch
from _common import benchmark_parser, report, start

from dermino.caption.generate import encode_paths
from dermino.caption.lm import load_lm
from dermino.caption.model import CaptionerSpec, build_captioner
from dermino.data.sample import sample_root
from dermino.models import create

TINY = {"depth": 4, "embed_dim": 192, "num_heads": 3, "img_size": 98}


def main() -> None:
    ap = benchmark_parser(__doc__)
    ap.add_argument("--images", type=int, default=16, help="images per measurement")
    ap.add_argument("--new-tokens", type=int, default=32)
    ap.add_argument("--size", type=int, default=98)
    args = ap.parse_args()
    start(args)
    lm, tok = load_lm()
    spec = CaptionerSpec(encoder="dermino_vit_tiny_14", encoder_overrides=dict(TINY), patch_grid=2)
    torch.manual_seed(0)
    cap = build_captioner(spec, lm=lm, tokenizer=tok, encoder=create("dermino_vit_tiny_14", **TINY)).eval()
    cap.lm.generation_config.min_new_tokens = args.new_tokens  # fixed decoding length
    paths = sorted((sample_root() / "ph2" / "images").glob("*.jpg"))[: args.images]
    rows = []
    with tempfile.TemporaryDirectory() as cache:
        warm = encode_paths(cap, paths, args.size, progress=False, cache_dir=cache)  # fill the cache once
        for beams in (1, 4):  # the first calls allocate: untimed, so the first row is not slower for it
            cap.generate(warm[:2], max_new_tokens=4, num_beams=beams)
        for cached in (True, False):
            for beams in (1, 4):
                for batch in (1, 8):
                    t0 = time.perf_counter()
                    feats = encode_paths(cap, paths, args.size, progress=False, cache_dir=cache if cached else "")
                    for lo in range(0, len(paths), batch):
                        cap.generate(feats[lo: lo + batch], max_new_tokens=args.new_tokens, num_beams=beams)
                    sec = time.perf_counter() - t0
                    rows.append({"features": "cached" if cached else "encoded", "search": "greedy" if beams == 1
                                 else f"beam {beams}", "batch": batch, "seconds": sec,
                                 "images_per_s": len(paths) / sec})
                    print(rows[-1], flush=True)
    report(__file__, args, f"caption generation, {len(paths)} PH2 images, {args.new_tokens} new tokens each "
           f"(SmolLM2-135M + LoRA, ViT-Tiny/14 at {args.size} px)", rows,
           [("features", "features", "s"), ("search", "search", "s"), ("batch", "batch", "d"),
            ("seconds", "s", ".1f"), ("images_per_s", "images/s", ".2f")])


if __name__ == "__main__":
    main()
