"""Shared by the training tests: a CPU-sized TrainConfig on a random tiny BERT."""
from vixml_lib.training import TrainConfig

TINY = {"backbone": "random-tiny-bert", "kind": "encoder"}


def tiny_config(data_dir, out_dir, **kw):
    values = dict(data_dir=str(data_dir), out_dir=str(out_dir), model="minilm", use_images=False,
                  model_overrides=dict(TINY), epochs=2, batch_size=64, warmup_steps=2, lr=1e-3,
                  save_embeddings=False, threads=1)
    values.update(kw)
    return TrainConfig(**values)


def die_after_checkpoints(monkeypatch, n: int) -> list:
    """Make the next ``train()`` raise KeyboardInterrupt (a kill) right after its ``n``-th
    checkpoint; returns the list of each checkpoint's ``epoch_step`` (None at an epoch end)."""
    from vixml_lib.training import loop

    real, calls = loop.save_checkpoint, []

    def save_then_die(*args, **kwargs):
        real(*args, **kwargs)
        calls.append(args[4].get("epoch_step"))
        if len(calls) == n:
            raise KeyboardInterrupt

    monkeypatch.setattr(loop, "save_checkpoint", save_then_die)
    return calls


def history_without_seconds(summary: dict) -> list[dict]:
    return [{k: v for k, v in h.items() if not k.endswith("seconds")} for h in summary["history"]]
