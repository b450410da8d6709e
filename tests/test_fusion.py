"""Late fusion (MUFIN-style): masks respected, no NaN without images, save and load."""
import torch

from vixml_lib.fusion import LateFusion
from vixml_lib.models import create_model, load_model
from vixml_lib.prompt import KIND_CODES
from vixml_lib.testing import tiny_model_config


def test_late_fusion_respects_the_image_mask():
    torch.manual_seed(0)
    fuse = LateFusion(16, heads=8, feedforward=32).eval()
    text = torch.randn(2, 16)
    imgs = torch.randn(2, 3, 16)
    with torch.no_grad():
        alone = fuse(text)  # no image at all
        none = fuse(text, imgs, torch.zeros(2, 3, dtype=torch.bool))  # three slots, all padding
        one = fuse(text, imgs[:, :1], torch.ones(2, 1, dtype=torch.bool))
        one_padded = fuse(text, torch.cat([imgs[:, :1], 1e3 * torch.randn(2, 2, 16)], 1),
                          torch.tensor([[1, 0, 0], [1, 0, 0]], dtype=torch.bool))
        three = fuse(text, imgs, torch.ones(2, 3, dtype=torch.bool))
    assert torch.isfinite(none).all() and torch.allclose(none, alone, atol=1e-5)  # text through the same path
    assert torch.allclose(one_padded, one, atol=1e-5)  # padding images change nothing
    assert not torch.allclose(three, one, atol=1e-3) and not torch.allclose(one, alone, atol=1e-3)
    assert torch.allclose(three.norm(dim=-1), torch.ones(2), atol=1e-5)


def test_late_fusion_model_reads_text_only_and_round_trips(tmp_path):
    m = create_model(tiny_model_config("decoder", use_images=True, fusion="late")).eval()
    assert not m.template.has_images and m.full_template.has_images and m.fusion is not None
    ids = torch.randint(8, 1000, (3, 5))
    lens = torch.tensor([5, 2, 4])
    vec, mask = torch.randn(3, 2, 16), torch.tensor([[1, 1], [0, 0], [1, 0]], dtype=torch.bool)
    with torch.no_grad():
        out = m.forward_details(ids, lens, vec, mask)
        emb = out.embeddings
    assert (out.batch.kinds == KIND_CODES["images"]).sum() == 0  # no image slot in the backbone input
    assert torch.isfinite(emb).all() and torch.allclose(emb.norm(dim=-1), torch.ones(3), atol=1e-5)
    m.save(tmp_path / "m")
    again = load_model(tmp_path / "m").eval()
    with torch.no_grad():
        assert torch.allclose(again(ids, lens, vec, mask), emb, atol=1e-6)
