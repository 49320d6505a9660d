#!/usr/bin/env python3
"""Check sidrec's `exact` beam search against HuggingFace transformers.

Loads a sidrec checkpoint with `AutoModelForCausalLM` / `PreTrainedTokenizerFast` (so it also
checks that the files load in transformers unchanged), runs HF beam search with a constrained
logits processor written from the reference's description (MINIONEREC.md §5.1-5.3: full-vocab
log-softmax, -1e6 on disallowed tokens, a lookup miss leaves the row unconstrained, length
penalty 0, num_return_sequences = num_beams), and compares the ranked SIDs and scores with the
`predictions.json` that `sidrec-trainer eval --mode exact` wrote for the same checkpoint.

    python3 scripts/hf_parity.py --checkpoint CKPT --predictions EVAL/predictions.json [--limit N]
        [--threads 2] [--batch-size 1] [--json OUT]

It is also the timing harness of the decode speed comparison: it times HF `generate` on
`--batch-size` prompts at a time (left-padded with EOS, attention 0 on the pads, as the
reference's evaluate.py, which uses 8) and prints its rows/s beside the
`rows_per_second` of the `report.json` next to the predictions (sidrec's decode of the same
rows), and the ratio. Run sidrec's eval and this script one after the other on a quiet machine
with the same thread count.

Exit status 0 when every compared row has the same SIDs in the same order (up to swaps of
neighbours whose scores tie within --tol) and scores within --tol.

A checkpoint with item-ID input embeddings (`init --item-embeddings`, `sidrec_item_embeddings`
in config.json) or a copy gate (`init --copy-gate`, `sidrec_copy_levels`) is a sidrec extension
that transformers' Qwen2 does not implement (it loads the model and ignores the extra weights),
so its rankings cannot agree: such a checkpoint is timed only, with a note, and the exit status
is 0.
"""

import argparse
import json
import os
import sys
import time

import torch
from transformers import (
    AutoModelForCausalLM,
    LogitsProcessor,
    LogitsProcessorList,
    PreTrainedTokenizerFast,
)


class ConstrainedProcessor(LogitsProcessor):
    """Allowed next tokens from a dict keyed by the tokens generated so far."""

    def __init__(self, allowed, prompt_len):
        self.allowed = allowed
        self.prompt_len = prompt_len

    def __call__(self, input_ids, scores):
        scores = torch.log_softmax(scores.float(), dim=-1)
        mask = torch.full_like(scores, -1e6)
        gen = input_ids[:, self.prompt_len :]
        for row in range(input_ids.shape[0]):
            ok = self.allowed.get(tuple(gen[row].tolist()))
            if ok:
                mask[row, list(ok)] = 0.0
            else:
                mask[row] = 0.0  # the reference applies no mask on a lookup miss
        return scores + mask


def build_allowed(tokenizer, sids, eos_id):
    allowed = {}
    for sid in sids:
        ids = tokenizer(sid + "\n", add_special_tokens=False).input_ids + [eos_id]
        for i in range(len(ids)):
            allowed.setdefault(tuple(ids[:i]), set()).add(ids[i])
    return allowed


def same_ranking(ours, theirs, ours_scores, theirs_scores, tol):
    if len(ours) != len(theirs):
        return False
    for i, (a, b) in enumerate(zip(ours, theirs)):
        if a != b:
            # A swap is acceptable only between SIDs whose scores tie within tol.
            j = theirs.index(a) if a in theirs else None
            if j is None or abs(theirs_scores[j] - ours_scores[i]) > tol:
                return False
    return True


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--checkpoint", required=True)
    ap.add_argument("--predictions", required=True)
    ap.add_argument("--limit", type=int, default=20)
    ap.add_argument("--tol", type=float, default=2e-3)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument(
        "--batch-size",
        type=int,
        default=1,
        help="prompts per generate call, left-padded as the reference's evaluate.py (its default is 8)",
    )
    ap.add_argument("--json", help="write the comparison and timing here")
    args = ap.parse_args()

    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    tok = PreTrainedTokenizerFast.from_pretrained(args.checkpoint)
    model = AutoModelForCausalLM.from_pretrained(args.checkpoint, torch_dtype=torch.float32)
    model.eval()
    with open(f"{args.checkpoint}/sidrec.json") as f:
        meta = json.load(f)
    with open(f"{args.checkpoint}/sid_index.json") as f:
        index = json.load(f)
    sids = sorted({"".join(v) for v in index.values()})
    eos_id = tok.convert_tokens_to_ids(meta["eos_token"])
    allowed = build_allowed(tok, sids, eos_id)
    levels = max(len(v) for v in index.values())
    with open(args.predictions) as f:
        rows = json.load(f)[: args.limit]
    with open(f"{args.checkpoint}/config.json") as f:
        config = json.load(f)
    timing_only = bool(config.get("sidrec_item_embeddings") or config.get("sidrec_copy_levels"))
    if timing_only:
        print(
            "note: this checkpoint has sidrec extensions (item-ID embeddings, a copy gate) that "
            "transformers' Qwen2 ignores; rankings are not compared, HF generate is timed only"
        )

    exact, max_diff, hf_seconds = 0, 0.0, 0.0
    for start in range(0, len(rows), args.batch_size):
        group = rows[start : start + args.batch_size]
        nb = len(group[0]["predict"])
        # Left padding with EOS and attention 0 on the pads, as the reference's evaluate.py.
        width = max(len(r["prompt_ids"]) for r in group)
        ids = torch.tensor([[eos_id] * (width - len(r["prompt_ids"])) + r["prompt_ids"] for r in group])
        attn = torch.tensor(
            [[0] * (width - len(r["prompt_ids"])) + [1] * len(r["prompt_ids"]) for r in group]
        )
        proc = ConstrainedProcessor(allowed, width)
        t0 = time.perf_counter()
        with torch.no_grad():
            out = model.generate(
                ids,
                attention_mask=attn,
                num_beams=nb,
                num_return_sequences=nb,
                max_new_tokens=levels + 2,
                length_penalty=0.0,
                do_sample=False,
                logits_processor=LogitsProcessorList([proc]),
                pad_token_id=eos_id,
                eos_token_id=eos_id,
                return_dict_in_generate=True,
                output_scores=True,
            )
        hf_seconds += time.perf_counter() - t0
        if timing_only:
            continue
        for k, row in enumerate(group):
            n = start + k
            gen = out.sequences[k * nb : (k + 1) * nb, width:]
            theirs = [tok.decode(g, skip_special_tokens=True).strip() for g in gen]
            theirs_scores = out.sequences_scores[k * nb : (k + 1) * nb].tolist()
            ours, ours_scores = row["predict"], row["scores"]
            diff = max(abs(a - b) for a, b in zip(ours_scores, theirs_scores))
            max_diff = max(max_diff, diff)
            ok = same_ranking(ours, theirs, ours_scores, theirs_scores, args.tol) and diff <= args.tol
            exact += ok
            if not ok:
                print(f"row {n}: mismatch (max score diff {diff:.2e})")
                for i, (a, b, sa, sb) in enumerate(zip(ours, theirs, ours_scores, theirs_scores)):
                    if a != b or abs(sa - sb) > args.tol:
                        print(f"  rank {i}: sidrec {a} {sa:.5f} | hf {b} {sb:.5f}")
                        break
    if not timing_only:
        print(
            f"{exact}/{len(rows)} rows identical to HF beam search "
            f"(top-{len(rows[0]['predict']) if rows else 0}, max |score diff| {max_diff:.2e})"
        )
    hf_rate = len(rows) / hf_seconds if hf_seconds > 0 else 0.0
    report_path = os.path.join(os.path.dirname(args.predictions), "report.json")
    ours_rate = None
    if os.path.exists(report_path):
        with open(report_path) as f:
            ours_rate = json.load(f).get("rows_per_second")
    line = f"HF generate: {hf_rate:.2f} rows/s ({args.threads} threads, batch {args.batch_size})"
    if ours_rate:
        line += f"; sidrec eval: {ours_rate:.2f} rows/s ({ours_rate / hf_rate:.1f}x HF)"
    print(line)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(
                {
                    "rows": len(rows),
                    "identical": None if timing_only else exact,
                    "max_score_diff": max_diff,
                    "hf_rows_per_second": hf_rate,
                    "sidrec_rows_per_second": ours_rate,
                    "threads": args.threads,
                    "batch_size": args.batch_size,
                    "torch": torch.__version__,
                },
                f,
                indent=1,
            )
    return 0 if timing_only or exact == len(rows) else 1


if __name__ == "__main__":
    sys.exit(main())
