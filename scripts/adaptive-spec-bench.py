#!/usr/bin/env python3
"""Adaptive speculation vs plain decoding and fixed trees on the demo model (docs/benchmarks.md).

For each prompt: greedy, --max-tokens N, wall-time generate_tokens_per_s from `minicpm4 generate --json`, each
configuration run ROUNDS times interleaved (so machine load hits them alike), the median reported. Goal (issue 22):
auto >= 0.95x plain for every prompt, and >= 1.2x plain wherever some fixed tree beats plain by 1.3x.
Usage: scripts/adaptive-spec-bench.py [--rounds 5] [--tokens 200] [--threads 0]
"""
import argparse, json, statistics, subprocess, sys

CLI = "src/MiniCPM4.Cli/bin/Release/net10.0/minicpm4"
PROMPTS = [
    "Once upon a time",
    "The history of the town",
    "1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12,",
    "The president said that",
    "the the the the the the the the",
]
CONFIGS = {
    "plain": ["--no-speculative"],
    "auto": [],
    "tree 4": ["--spec-tree", "4", "--spec-iter", "1", "--spec-topk", "3"],
    "tree 8": ["--spec-tree", "8", "--spec-iter", "2", "--spec-topk", "6"],
    "tree 12": ["--spec-tree", "12", "--spec-iter", "2", "--spec-topk", "10"],
    "tree 16": ["--spec-tree", "16", "--spec-iter", "3", "--spec-topk", "8"],
    "tree 32": ["--spec-tree", "32", "--spec-iter", "4", "--spec-topk", "8"],
}


def run(prompt, extra, tokens, threads):
    out = subprocess.run([CLI, "generate", "-p", prompt, "--max-tokens", str(tokens), "--temperature", "0", "--json",
                          "--threads", str(threads), *extra], check=True, capture_output=True, text=True).stdout
    return json.loads(out)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=0)
    a = ap.parse_args()
    ok = True
    print(f"| prompt | {' | '.join(CONFIGS)} | auto/plain | best fixed/plain | auto's last choice |")
    print("|---|" + "---|" * (len(CONFIGS) + 3))
    for prompt in PROMPTS:
        rates = {name: [] for name in CONFIGS}
        last = None
        for _ in range(a.rounds):
            for name, extra in CONFIGS.items():
                d = run(prompt, extra, a.tokens, a.threads)
                rates[name].append(d["generate_tokens_per_s"])
                if name == "auto":
                    last = (d["spec_last_tree_size"], d["spec_plain_tokens"], d["speculative_steps"])
        med = {k: statistics.median(v) for k, v in rates.items()}
        best_fixed = max(v for k, v in med.items() if k.startswith("tree"))
        auto_ratio, fixed_ratio = med["auto"] / med["plain"], best_fixed / med["plain"]
        goal = auto_ratio >= 0.95 and (fixed_ratio < 1.3 or auto_ratio >= 1.2)
        ok &= goal
        choice = "plain" if last[0] == 0 else f"tree {last[0]}"
        print(f"| {prompt[:28]} | " + " | ".join(f"{med[k]:.0f}" for k in CONFIGS) +
              f" | {auto_ratio:.2f}{'' if goal else ' (goal missed)'} | {fixed_ratio:.2f} | {choice} "
              f"({last[1]} plain tokens, {last[2]} rounds) |", flush=True)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
