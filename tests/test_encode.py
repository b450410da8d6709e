"""encode: one preallocated output (RAM or an atomic memory-mapped .npy), float16 on request."""
import tracemalloc

import numpy as np
import pytest
import torch

from vixml_lib.data.inputs import SplitInputs
from vixml_lib.models import create_model
from vixml_lib.testing import tiny_model_config
from vixml_lib.training.evaluation import encode


def split(n=300, max_len=12, seed=0):
    rng = np.random.default_rng(seed)
    lens = rng.integers(1, max_len + 1, n).astype(np.int32)
    ids = rng.integers(8, 1000, (n, max_len)).astype(np.int32)
    ids[np.arange(max_len) >= lens[:, None]] = 0
    return SplitInputs(ids, lens)


def old_encode(model, inputs, batch_size, rows):
    """The encode of HEAD before this change: a list of batches, concatenated, copied."""
    model.eval()
    order = np.argsort(inputs.lengths(rows), kind="stable")
    with torch.inference_mode():
        out = [model(**inputs.batch(rows[order[s:s + batch_size]])).float().cpu().numpy()
               for s in range(0, len(rows), batch_size)]
    emb = np.empty((len(rows), out[0].shape[1]), np.float32)
    emb[order] = np.concatenate(out)
    return emb


class TableModel(torch.nn.Module):
    """A stand-in encoder: the normalised sum of token vectors (wide, so arrays dominate)."""

    def __init__(self, dim=512):
        super().__init__()
        self.table = torch.nn.Parameter(torch.randn(1000, dim, generator=torch.Generator().manual_seed(0)))

    def forward(self, title_ids, title_lens, image_vectors=None, image_mask=None):
        keep = torch.arange(title_ids.shape[1]) < title_lens[:, None]
        return torch.nn.functional.normalize((self.table[title_ids] * keep[..., None]).sum(1), dim=1)


@pytest.fixture(scope="module")
def tiny():
    torch.manual_seed(0)
    return create_model(tiny_model_config("encoder", use_images=False))


def test_encode_equals_the_list_and_concatenate_path(tiny):
    inputs = split()
    rows = np.random.default_rng(1).permutation(300)[:250]
    ref = old_encode(tiny, inputs, 32, rows)
    tiny.train()
    emb = encode(tiny, inputs, 32, rows=rows)
    assert tiny.training  # the mode is restored
    assert emb.dtype == np.float32 and emb.shape == ref.shape
    assert np.array_equal(emb, ref)  # bit for bit
    half = encode(tiny, inputs, 32, rows=rows, dtype=np.float16)
    assert half.dtype == np.float16 and np.array_equal(half, ref.astype(np.float16))
    # every row once, in the order of `rows` (other batches pad differently: float noise only)
    assert np.allclose(encode(tiny, inputs, 7, rows=rows[::-1]), ref[::-1], atol=1e-5)
    assert encode(tiny, inputs, 32, rows=np.array([], dtype=np.int64)).shape[0] == 0
    with pytest.raises(ValueError, match="float32 or float16"):
        encode(tiny, inputs, rows=rows, dtype=np.int32)


def test_encode_to_a_memory_mapped_file_is_atomic(tiny, tmp_path):
    inputs = split()
    ref = encode(tiny, inputs, 64)
    out = tmp_path / "emb" / "lbl.npy"
    emb = encode(tiny, inputs, 64, path=out, dtype=np.float16)
    assert isinstance(emb, np.memmap) and not emb.flags.writeable
    assert np.array_equal(emb, ref.astype(np.float16))
    assert np.array_equal(np.load(out), ref.astype(np.float16))
    assert sorted(p.name for p in out.parent.iterdir()) == ["lbl.npy"]  # no temp file left

    class Broken(TableModel):
        calls = 0

        def forward(self, *a, **kw):
            Broken.calls += 1
            if Broken.calls == 3:
                raise RuntimeError("killed")
            return super().forward(*a, **kw)

    with pytest.raises(RuntimeError, match="killed"):
        encode(Broken(), inputs, 64, path=tmp_path / "x.npy")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["emb"]  # nothing half-written
    # the file of an interrupted encode keeps its old content
    with pytest.raises(RuntimeError, match="killed"):
        Broken.calls = 0
        encode(Broken(), inputs, 64, path=out)
    assert np.array_equal(np.load(out), ref.astype(np.float16))


@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_encode_peak_memory_is_one_output(dtype):
    inputs = split(n=4000, seed=2)
    model = TableModel(512)
    rows = np.arange(4000)
    out_bytes = 4000 * 512 * np.dtype(dtype).itemsize

    def peak(fn):
        tracemalloc.start()
        try:
            fn()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    old = peak(lambda: old_encode(model, inputs, 256, rows))
    new = peak(lambda: encode(model, inputs, 256, rows=rows, dtype=dtype))
    # the old path held the concatenation and the output (2 x float32): the measure sees it
    assert old > 1.9 * 4000 * 512 * 4
    # the new one: the output plus one batch (256 rows of float32, ~0.5 MB) and small change
    assert new < out_bytes + 2 * 256 * 512 * 4, (new, out_bytes)
