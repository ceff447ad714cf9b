"""Max abs difference of the logits files written by `soup inspect logits` (the first is the
reference). Reads safetensors by hand: the GPU machine need not have the package."""
import json, struct, sys
from array import array

def load(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        header = json.loads(f.read(n))
        meta = header["logits"]
        assert meta["dtype"] == "F32", meta
        f.seek(8 + n + meta["data_offsets"][0])
        a = array("f")
        a.frombytes(f.read(meta["data_offsets"][1] - meta["data_offsets"][0]))
        return meta["shape"], a

ref_shape, ref = load(sys.argv[1])
scale = max(abs(x) for x in ref)
for path in sys.argv[2:]:
    shape, got = load(path)
    assert shape == ref_shape, (shape, ref_shape)
    d = max(abs(a - b) for a, b in zip(ref, got))
    vocab = shape[-1]
    agree = sum(
        max(range(vocab), key=lambda j: ref[i * vocab + j]) == max(range(vocab), key=lambda j: got[i * vocab + j])
        for i in range(shape[0])
    )
    print(f"{path}: max abs diff {d:.3g} (logit scale {scale:.3g}), argmax agrees at {agree}/{shape[0]} positions")
