#!/usr/bin/env python3
"""Writes the FR-Spec fixtures in tests/MiniCPM4.Tests/TestData/FrSpec with real PyTorch and NumPy.

Run once with torch installed (made with Debian's python3-torch 1.13 and python3-numpy); the outputs are committed,
so the tests never need Python.

  freq_8.pt                 torch.save(list) with the default pickle protocol (2), as CPM.cu's gen_fr_index.py does
  freq_8.npy                the same ids as a NumPy int64 array
  ints_1500_protocol4.pt    1500 ids (values up to 100000), pickle_protocol=4: FRAME, MEMOIZE, several APPENDS batches
  tensor_not_list.pt        torch.save(a tensor): holds a storage entry, must be rejected
"""
import os
import random
import sys

import numpy as np
import torch

out = sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "..", "TestData", "FrSpec")
os.makedirs(out, exist_ok=True)

# Ids of the tiny test model's SentencePiece fixture (vocab 32002); 32001 is <|im_end|>, its EOS.
FREQ_8 = [29871, 13, 278, 29889, 29892, 310, 322, 32001]
torch.save(FREQ_8, os.path.join(out, "freq_8.pt"))
np.save(os.path.join(out, "freq_8.npy"), np.array(FREQ_8, dtype=np.int64))

rng = random.Random(7)
ids = rng.sample(range(100001), 1500)
torch.save(ids, os.path.join(out, "ints_1500_protocol4.pt"), pickle_protocol=4)
with open(os.path.join(out, "ints_1500_protocol4.txt"), "w") as f:
    f.write(",".join(map(str, ids)) + "\n")

torch.save(torch.tensor(FREQ_8, dtype=torch.int32), os.path.join(out, "tensor_not_list.pt"))

for name in ["freq_8.pt", "tensor_not_list.pt"]:
    print(name, type(torch.load(os.path.join(out, name), weights_only=True)).__name__)
# torch 1.13's weights_only unpickler does not know FRAME (protocol 4), so this one is checked the unsafe way.
print("ints_1500_protocol4.pt", torch.load(os.path.join(out, "ints_1500_protocol4.pt")) == ids)
