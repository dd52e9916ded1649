"""A small reader/writer for the safetensors format (no dependency beyond PyTorch).

File layout: an 8-byte little-endian header length N, N bytes of JSON {name: {dtype, shape, data_offsets}} (plus
an optional "__metadata__" map of strings), padded with spaces to a multiple of 8, then the raw little-endian tensor
data back to back.
"""

import json
import struct
import sys

import torch

_DTYPES = {torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.int32: "I32", torch.int64: "I64"}
_FROM_NAME = {v: k for k, v in _DTYPES.items()}
# Same-sized integer types used to get at the bytes (numpy has no bfloat16).
_AS_INT = {torch.float32: torch.int32, torch.float16: torch.int16, torch.bfloat16: torch.int16,
           torch.int32: torch.int32, torch.int64: torch.int64}


def _tensor_bytes(t):
    if sys.byteorder != "little":
        raise RuntimeError("safetensors data is little-endian; this writer only runs on little-endian hosts")
    t = t.detach().contiguous().cpu()
    return t.view(_AS_INT[t.dtype]).numpy().tobytes()


def save(path, tensors, metadata=None):
    """tensors: ordered mapping name -> tensor; written in that order."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs = []
    offset = 0
    for name, t in tensors.items():
        if t.dtype not in _DTYPES:
            raise ValueError(f"{name}: unsupported dtype {t.dtype}")
        data = _tensor_bytes(t)
        header[name] = {"dtype": _DTYPES[t.dtype], "shape": list(t.shape), "data_offsets": [offset, offset + len(data)]}
        offset += len(data)
        blobs.append(data)
    js = json.dumps(header, separators=(",", ":")).encode("utf-8")
    js += b" " * ((8 - len(js) % 8) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(js)))
        f.write(js)
        for b in blobs:
            f.write(b)


def load(path):
    """Returns an ordered dict name -> tensor (in file order)."""
    with open(path, "rb") as f:
        raw = f.read()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8:8 + n].decode("utf-8"))
    base = 8 + n
    out = {}
    items = [(k, v) for k, v in header.items() if k != "__metadata__"]
    items.sort(key=lambda kv: kv[1]["data_offsets"][0])
    for name, info in items:
        dtype = _FROM_NAME[info["dtype"]]
        a, b = info["data_offsets"]
        buf = bytearray(raw[base + a:base + b])
        t = torch.frombuffer(buf, dtype=_AS_INT[dtype]).view(dtype) if b > a else torch.empty(0, dtype=dtype)
        out[name] = t.reshape(info["shape"]).clone()
    return out
