#!/usr/bin/env python3
"""Stand-in item embeddings until `trainer embed` lands: a random projection of each item's
title + description words (each lower-cased word a seeded uniform random vector, an item the mean
of its words), written as a float32 `.npy` `[items, dim]` with rows in item-id order.

Pure Python (no numpy). Usage: scripts/bow_embeddings.py DATASET_DIR OUT.npy [DIM]
"""
import glob
import hashlib
import json
import os
import random
import re
import struct
import sys


def main():
    data, out = sys.argv[1], sys.argv[2]
    dim = int(sys.argv[3]) if len(sys.argv) > 3 else 384
    path = os.path.join(data, "items.json")
    if not os.path.exists(path):
        path = glob.glob(os.path.join(data, "*.item.json"))[0]
    items = json.load(open(path))
    ids = sorted(items, key=int)
    cache = {}
    rows = []
    for i in ids:
        meta = items[i]
        text = f"{meta.get('title', '')} {meta.get('description', '')}"
        words = [w for w in re.split(r"[^0-9a-z]+", text.lower()) if w]
        v = [0.0] * dim
        for w in words:
            if w not in cache:
                seed = int.from_bytes(hashlib.sha256(w.encode()).digest()[:8], "little")
                r = random.Random(seed)
                cache[w] = [r.uniform(-1.0, 1.0) for _ in range(dim)]
            for j, x in enumerate(cache[w]):
                v[j] += x
        n = max(len(words), 1)
        rows.append([x / n for x in v])
    header = "{'descr': '<f4', 'fortran_order': False, 'shape': (%d, %d), }" % (len(rows), dim)
    pad = 64 - (10 + len(header) + 1) % 64
    header = header + " " * (pad % 64) + "\n"
    with open(out, "wb") as f:
        f.write(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
        for row in rows:
            f.write(struct.pack("<%df" % dim, *row))
    print(f"wrote {out}: {len(rows)} x {dim}")


if __name__ == "__main__":
    main()
