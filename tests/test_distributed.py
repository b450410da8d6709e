"""Several processes, one run (torch.distributed, gloo on CPU): 2 ranks x B/2 == 1 process x B."""
import dataclasses
import json
import os
import socket

import numpy as np
import pytest
import torch
import torch.multiprocessing as mp
from train_data import tiny_config

from vixml_lib.training import train
from vixml_lib.training.distributed import World, gather, shard


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def no_dropout(monkeypatch=None):
    """Dropout masks depend on the batch shape, so the equivalence is tested without dropout
    (through ``monkeypatch`` in the test's process, so later tests get their dropout back)."""
    import vixml_lib.models as models

    real = models.load_backbone

    def load(config):
        model, tok = real(config)
        for m in model.modules():
            if isinstance(m, torch.nn.Dropout):
                m.p = 0.0
        return model, tok

    if monkeypatch is not None:
        monkeypatch.setattr(models, "load_backbone", load)
    else:  # a spawned worker: its own process
        models.load_backbone = load


def worker(rank: int, world: int, port: int, values: dict, result: str) -> None:
    os.environ.update(RANK=str(rank), WORLD_SIZE=str(world), LOCAL_RANK=str(rank), MASTER_ADDR="127.0.0.1",
                      MASTER_PORT=str(port))
    no_dropout()
    from vixml_lib.training import TrainConfig

    summary = train(TrainConfig(**values), progress=False)
    if rank == 0:
        with open(result, "w") as f:
            json.dump(summary["history"], f)
    torch.distributed.destroy_process_group()


def weights(folder):
    from safetensors.torch import load_file

    return load_file(str(folder / "checkpoint" / "model" / "trainable.safetensors"))


@pytest.mark.parametrize("method", ["ngame", "prime"])
def test_two_ranks_take_the_same_step_as_one_process(tiny_data, tmp_path, method, monkeypatch):
    kw = dict(epochs=1, max_steps_per_epoch=2, batch_size=30, eval_at_start=False, method=method,
              cluster_warmup_epochs=0, cluster_size=8,  # the step's batches are NGAME clusters
              model_overrides={"backbone": "random-tiny-bert", "kind": "encoder", "attention_dropout": 0.0},
              prime={"free_vectors": 8, "heads": 8, "feedforward": 32, "dropout": 0.0})
    no_dropout(monkeypatch)
    one = train(tiny_config(tiny_data, tmp_path / "one", **kw), progress=False)["history"]
    values = dataclasses.asdict(tiny_config(tiny_data, tmp_path / "two", **kw))
    result = str(tmp_path / "two.json")
    mp.spawn(worker, args=(2, free_port(), values, result), nprocs=2, join=True)
    two = json.load(open(result))
    assert two[-1]["loss"] == pytest.approx(one[-1]["loss"], rel=1e-5)
    assert two[-1]["P@1"] == pytest.approx(one[-1]["P@1"], abs=1e-6)
    a, b = weights(tmp_path / "one"), weights(tmp_path / "two")
    assert a.keys() == b.keys()
    for name in a:
        torch.testing.assert_close(b[name], a[name], rtol=1e-4, atol=1e-6, msg=name)


def test_shards_cover_the_batch_in_order_and_gather_drops_the_padding():
    rows = np.arange(7)
    shares = [shard(rows, World(r, 3)) for r in range(3)]
    assert [len(s) for s in shares] == [3, 3, 3]
    assert np.concatenate(shares)[:7].tolist() == rows.tolist()
    assert shares[2].tolist() == [6, 6, 6]  # the last rank is padded with copies of the last row
    x = torch.arange(5.0)
    assert gather(x, World(), 5) is x  # one process: nothing to do
