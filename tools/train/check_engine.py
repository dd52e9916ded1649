#!/usr/bin/env python3
"""Compares the engine's logits with reference.json (the PyTorch fp32 forward of the bf16 checkpoint).

    /usr/bin/python3 tools/train/check_engine.py models/demo [path/to/minicpm4]

For every reference prompt it runs `minicpm4 logits` in prefill and in decode mode over the prompt and its greedy
continuation, and reports the largest absolute logit difference at the prompt's last position, the log-sum-exp
difference and whether the greedy continuation (argmax at each position) agrees. Exits 1 on a mismatch.
"""

import json
import os
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    model = os.path.abspath(sys.argv[1])
    cli = sys.argv[2] if len(sys.argv) > 2 else os.path.join(REPO, "src/MiniCPM4.Cli/bin/Release/net10.0/minicpm4")
    with open(os.path.join(model, "reference.json")) as f:
        ref = json.load(f)
    ok = True
    with tempfile.TemporaryDirectory() as tmp:
        npy = os.path.join(tmp, "logits.npy")
        for p in ref["prompts"]:
            ids = p["token_ids"] + p["greedy_continuation"]
            n = len(p["token_ids"])
            for mode in ("prefill", "decode"):
                subprocess.run([cli, "logits", "-m", model, "--tokens", ",".join(map(str, ids)), "--out", npy,
                                "--mode", mode], check=True)
                logits = np.load(npy).astype(np.float64)
                last = logits[n - 1]
                d64 = np.abs(last[:64] - np.array(p["last_logits_first64"])).max()
                lse = np.log(np.exp(last - last.max()).sum()) + last.max()
                dlse = abs(lse - p["last_logsumexp"])
                greedy = logits[n - 1:-1].argmax(-1).tolist()
                same = greedy == p["greedy_continuation"]
                good = d64 < 1e-3 and dlse < 1e-3 and int(last.argmax()) == p["last_argmax"] and same
                ok &= good
                print(f"{mode:7s} {p['text'][:40]!r:44s} max|dlogit| {d64:.2e}  |dlse| {dlse:.2e}  "
                      f"argmax {int(last.argmax())} (ref {p['last_argmax']})  greedy 24 {'same' if same else 'DIFFERENT'}"
                      f"{'' if good else '  <-- MISMATCH'}")
    print("all match" if ok else "MISMATCH")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
