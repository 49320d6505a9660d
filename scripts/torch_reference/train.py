"""Train a sidrec checkpoint with PyTorch on exactly the batches sidrec built.

Reads what `cargo bench -p sidrec-trainer --bench sft_throughput -- --export DIR` wrote for one
preset (DIR/<preset>/checkpoint, batches.jsonl, sidrec-losses.json), loads the checkpoint with
`AutoModelForCausalLM`, and runs the same step as sidrec: the final hidden states at the
supervised positions, projected on the vocabulary, cross-entropy summed and divided by the
number of supervised tokens, gradients clipped to global norm 1.0, AdamW (beta 0.9/0.999, eps
1e-8, no weight decay, constant learning rate). Prints tokens/s (two warm-up batches excluded,
as sidrec's bench does) and each step's loss beside sidrec's.

Usage: python train.py DIR/<preset> [--threads 2] [--lr 1e-3] [--json OUT]
"""
import argparse
import json
import time
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("export_dir", type=Path)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)

    model = AutoModelForCausalLM.from_pretrained(
        args.export_dir / "checkpoint", torch_dtype=torch.float32, attn_implementation="sdpa"
    )
    model.train()
    # Dropout stays at the config's 0; sidrec's bench trains without dropout too.
    opt = torch.optim.AdamW(
        model.parameters(), lr=args.lr, betas=(0.9, 0.999), eps=1e-8, weight_decay=0.0
    )
    batches = [json.loads(l) for l in (args.export_dir / "batches.jsonl").open()]
    ref_path = args.export_dir / "sidrec-losses.json"
    sidrec_losses = json.loads(ref_path.read_text()) if ref_path.exists() else []

    losses, wall, cpu, tokens = [], 0.0, 0.0, 0
    for i, b in enumerate(batches):
        ids = torch.tensor(b["ids"], dtype=torch.long)
        mask = torch.tensor(b["mask"], dtype=torch.long)
        positions = torch.tensor(b["positions"], dtype=torch.long)
        targets = torch.tensor(b["targets"], dtype=torch.long)
        t0, c0 = time.perf_counter(), time.process_time()
        hidden = model.model(input_ids=ids, attention_mask=mask).last_hidden_state
        picked = hidden.reshape(-1, hidden.shape[-1])[positions]
        logits = model.lm_head(picked)
        nll = torch.nn.functional.cross_entropy(logits.float(), targets, reduction="sum")
        loss = nll / max(b["supervised"], 1)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()
        losses.append(loss.item())
        dt, dc = time.perf_counter() - t0, time.process_time() - c0
        if i >= 2:
            wall += dt
            cpu += dc
            tokens += b["tokens"]

    steps = max(len(batches) - 2, 1)
    tok_s = tokens / wall if wall > 0 else 0.0
    diffs = [abs(a - b) for a, b in zip(losses, sidrec_losses)]
    out = {
        "preset": args.export_dir.name,
        "threads": args.threads,
        "torch": torch.__version__,
        "step_ms": wall / steps * 1e3,
        "cpu_ms_per_step": cpu / steps * 1e3,
        "tokens_per_s": tok_s,
        "losses": losses,
        "sidrec_losses": sidrec_losses,
        "max_abs_loss_diff_first5": max(diffs[:5]) if diffs else None,
    }
    print(
        f"torch {torch.__version__} {args.export_dir.name}: {out['step_ms']:.1f} ms/step, "
        f"{tok_s:.0f} tokens/s, {out['cpu_ms_per_step']:.0f} CPU ms/step ({args.threads} threads)"
    )
    for j, (a, b) in enumerate(zip(losses, sidrec_losses)):
        if j < 5:
            print(f"  step {j}: torch loss {a:.5f}  sidrec {b:.5f}  |diff| {abs(a - b):.2e}")
    if args.json:
        args.json.write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
