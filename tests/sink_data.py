"""Shared by the attention-sink tests: a batch of inputs for the tiny random decoder."""
import torch


def tiny_inputs(B=4, L=6, seed=0):
    """``B`` items: title ids [B, L], lengths, 3 image vectors of width 16 each and their mask."""
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 1000, (B, L), generator=g)
    lens = torch.tensor([6, 2, 4, 5][:B])
    vec = torch.randn(B, 3, 16, generator=g)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0], [1, 1, 1], [1, 0, 0]][:B], dtype=torch.bool)
    return {"title_ids": ids, "title_lens": lens, "image_vectors": vec, "image_mask": mask}
