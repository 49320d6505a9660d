"""Embed a dataset's item texts with PyTorch exactly as `sidrec-trainer embed` does.

Same texts (`clean_text(title)` and `clean_text(description)` joined with one space, as
sidrec's `embed::item_text`), same tokenizer file and truncation (`--max-length`, special
tokens included), same batches (sorted by token length, longest first, at most `--batch-size`
texts and `--max-batch-tokens` padded tokens per batch, padded to the longest text of the
batch), same pooling (masked mean of the last hidden state, optionally L2-normalised). The model
is `transformers.AutoModel` on the CPU in float32 (its default attention implementation).

Prints items/s and tokens/s over the same span sidrec times (tokenising and encoding all
texts). With `--check sidrec.npy` it compares every row with sidrec's output by cosine
similarity and fails when the smallest is below `--min-cosine`.

Usage: python embed.py --data DIR --encoder DIR [--max-length 128] [--threads 2]
                       [--out torch.npy] [--check items.npy] [--json OUT]
"""
import argparse
import html
import json
import re
import sys
import time
from pathlib import Path

import numpy as np
import torch
from tokenizers import Tokenizer
from transformers import AutoModel

UNKNOWN_ITEM = "unknown item"
MAX_CLEAN_CHARS = 2000
TAG = re.compile(r"</?\w+[^>]*>")


def clean_text(raw):
    """sidrec's `embed::clean_text` (the reference's `clean_text` for a string)."""
    text = TAG.sub("", html.unescape(raw.strip()))
    text = text.replace('"', "").replace("\n", "").replace("\r", "")
    trailing = len(text) - len(text.rstrip("."))
    cut = min(trailing, max(len(text) - 1, 0))
    text = text[: len(text) - cut] + "."
    return "" if len(text) >= MAX_CLEAN_CHARS else text


def item_text(meta):
    parts = [clean_text(meta.get(k) or "").strip() for k in ("title", "description")]
    parts = [p for p in parts if p]
    return " ".join(parts) if parts else UNKNOWN_ITEM


def items_file(data):
    """The dataset's items file, found as sidrec's `DatasetDir::discover` does."""
    fixed = data / "items.json"
    if fixed.is_file():
        return fixed
    found = sorted(data.glob("*.item.json"))
    if len(found) != 1:
        sys.exit(f"{data}: expected one items.json or *.item.json, found {len(found)}")
    return found[0]


def batches(lengths, batch_size, max_batch_tokens):
    """sidrec's `encode_all` batching: longest first (stable), capped in texts and tokens."""
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    start = 0
    while start < len(order):
        end, longest = start, 0
        while end < len(order) and end - start < batch_size:
            l = max(longest, lengths[order[end]])
            if end > start and max_batch_tokens > 0 and l * (end - start + 1) > max_batch_tokens:
                break
            longest = l
            end += 1
        yield order[start:end]
        start = end


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--encoder", type=Path, required=True)
    ap.add_argument("--max-length", type=int, default=256)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--max-batch-tokens", type=int, default=4096)
    ap.add_argument("--normalize", action="store_true")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", type=Path, help="write the embeddings here (.npy)")
    ap.add_argument("--check", type=Path, help="sidrec's .npy of the same items to compare with")
    ap.add_argument("--min-cosine", type=float, default=0.9999)
    ap.add_argument("--json", type=Path, help="write the figures here")
    args = ap.parse_args()
    torch.set_num_threads(args.threads)

    raw = json.loads(items_file(args.data).read_text())
    ids = sorted(int(k) for k in raw)
    texts = [item_text(raw[str(i)]) for i in ids]

    tok = Tokenizer.from_file(str(args.encoder / "tokenizer.json"))
    pad = tok.padding or {}
    pad_id, pad_type_id = pad.get("pad_id", 0), pad.get("pad_type_id", 0)
    trunc = tok.truncation or {}
    tok.no_padding()
    tok.enable_truncation(
        args.max_length,
        stride=trunc.get("stride", 0),
        strategy=trunc.get("strategy", "longest_first"),
        direction=trunc.get("direction", "right"),
    )
    model = AutoModel.from_pretrained(args.encoder, torch_dtype=torch.float32).eval()
    dim = model.config.hidden_size
    print(
        f"torch {torch.__version__}, {args.threads} thread(s), attention "
        f"{getattr(model.config, '_attn_implementation', '?')}",
        file=sys.stderr,
    )

    out = np.zeros((len(texts), dim), dtype=np.float32)
    t0, c0 = time.perf_counter(), time.process_time()
    encodings = tok.encode_batch(texts, add_special_tokens=True)
    lengths = [len(e.ids) for e in encodings]
    with torch.inference_mode():
        for chunk in batches(lengths, args.batch_size, args.max_batch_tokens):
            n, L = len(chunk), max(lengths[i] for i in chunk)
            ids_b = np.full((n, L), pad_id, dtype=np.int64)
            types_b = np.full((n, L), pad_type_id, dtype=np.int64)
            mask_b = np.zeros((n, L), dtype=np.int64)
            for r, i in enumerate(chunk):
                e = encodings[i]
                ids_b[r, : len(e.ids)] = e.ids
                types_b[r, : len(e.ids)] = e.type_ids
                mask_b[r, : len(e.ids)] = e.attention_mask
            mask = torch.from_numpy(mask_b)
            hidden = model(
                input_ids=torch.from_numpy(ids_b),
                token_type_ids=torch.from_numpy(types_b),
                attention_mask=mask,
            ).last_hidden_state
            m = mask.unsqueeze(2).float()
            pooled = (hidden * m).sum(1) / m.sum(1).clamp(min=1e-9)
            if args.normalize:
                pooled = torch.nn.functional.normalize(pooled, dim=-1)
            out[chunk] = pooled.numpy()
    secs, cpu = time.perf_counter() - t0, time.process_time() - c0
    tokens = sum(lengths)
    fig = {
        "items": len(texts),
        "tokens": tokens,
        "seconds": secs,
        "cpu_seconds": cpu,
        "items_per_s": len(texts) / secs,
        "tokens_per_s": tokens / secs,
        "threads": args.threads,
        "max_length": args.max_length,
    }
    print(
        f"torch embedded {len(texts)} items ({tokens} tokens, {tokens / len(texts):.1f} per item) "
        f"in {secs:.1f} s ({fig['items_per_s']:.1f} items/s, {fig['tokens_per_s']:.0f} tokens/s; "
        f"CPU {cpu:.1f} s)"
    )
    if args.out:
        np.save(args.out, out)
    status = 0
    if args.check:
        theirs = np.load(args.check)
        if theirs.shape != out.shape:
            sys.exit(f"{args.check}: shape {theirs.shape}, expected {out.shape}")
        cos = (out * theirs).sum(1) / (
            np.linalg.norm(out, axis=1) * np.linalg.norm(theirs, axis=1) + 1e-30
        )
        worst = int(cos.argmin())
        fig.update(min_cosine=float(cos.min()), max_abs_diff=float(np.abs(out - theirs).max()))
        print(
            f"against {args.check}: cosine min {cos.min():.7f} (item {ids[worst]}), "
            f"mean {cos.mean():.7f}; largest |difference| {fig['max_abs_diff']:.2e}"
        )
        if cos.min() < args.min_cosine:
            print(f"error: cosine below {args.min_cosine}", file=sys.stderr)
            status = 1
    if args.json:
        args.json.write_text(json.dumps(fig, indent=1))
    sys.exit(status)


if __name__ == "__main__":
    main()
