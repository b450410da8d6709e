import dataclasses
import json

import pytest
import torch

from vixml_lib.models import (
    MODEL_PRESETS,
    DualEncoder,
    ModelConfig,
    create_model,
    load_model,
)
from vixml_lib.prompt import KIND_CODES
from vixml_lib.testing import tiny_model_config
from vixml_lib.training.optim import param_groups

KINDS = ["encoder", "decoder"]


def tiny(kind, /, **kw):
    m = create_model(tiny_model_config(kind, **kw))
    m.eval()  # no dropout: comparisons are exact
    return m


def inputs(B=4, L=6, M=3, vision_dim=16, seed=0):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(8, 1000, (B, L), generator=g)
    lens = torch.tensor([L, 1, 3, 5][:B] + [L] * max(0, B - 4))
    for r in range(B):
        ids[r, lens[r] :] = 0
    vec = torch.randn(B, M, vision_dim, generator=g)
    mask = torch.tensor([[1, 1, 0], [0, 0, 0], [1, 0, 0], [1, 1, 1]][:B], dtype=torch.bool)[:, :M]
    return ids, lens, vec, mask


@pytest.mark.parametrize("kind", KINDS)
def test_shapes_and_normalisation(kind):
    m = tiny(kind, use_images=True)
    assert isinstance(m, DualEncoder) and m.kind == kind
    ids, lens, vec, mask = inputs()
    e = m(ids, lens, vec, mask)
    assert e.shape == (4, 32) and e.dtype == torch.float32
    assert torch.allclose(e.norm(dim=-1), torch.ones(4), atol=1e-5)
    raw = tiny(kind, use_images=True, normalize=False)(ids, lens, vec, mask)
    assert not torch.allclose(raw.norm(dim=-1), torch.ones(4), atol=1e-3)
    # numpy inputs (the token cache is int32) work as well
    e2 = m(ids.numpy().astype("int32"), lens.numpy(), vec.numpy(), mask.numpy())
    assert torch.allclose(e, e2)


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pooling", ["mean", "last"])
def test_embedding_ignores_padding(kind, pooling):
    m = tiny(kind, use_images=True, pooling=pooling)
    ids, lens, vec, mask = inputs()
    with torch.no_grad():
        alone = m(ids[1:2, :1], lens[1:2], vec[1:2], mask[1:2])  # shortest row, no padding at all
        batched = m(ids, lens, vec, mask)  # same row padded to the longest one
        wider = torch.cat([ids, torch.zeros(4, 5, dtype=ids.dtype)], 1)  # more title padding
        batched_wide = m(wider, lens, vec, mask)
    assert torch.allclose(alone[0], batched[1], atol=1e-5)
    assert torch.allclose(batched, batched_wide, atol=1e-5)


@pytest.mark.parametrize("kind", KINDS)
def test_last_pooling_picks_the_last_real_token(kind):
    m = tiny(kind, use_images=True, pooling="last", normalize=False)
    ids, lens, vec, mask = inputs()
    with torch.no_grad():
        out = m.forward_details(ids, lens, vec, mask)
    b = out.batch
    for r in range(4):
        last = int(b.lengths[r]) - 1
        assert int(b.last_positions[r]) == last
        assert torch.allclose(out.embeddings[r], out.last_hidden_state[r, last].float())
        closing = KIND_CODES["sep"] if kind == "encoder" else KIND_CODES["eos"]
        assert int(b.kinds[r, last]) == closing
        assert b.attention_mask[r, last + 1 :].eq(0).all()


@pytest.mark.parametrize("kind", KINDS)
def test_images_change_the_embedding_only_when_used_and_present(kind):
    ids, lens, vec, mask = inputs()
    text_model = tiny(kind, use_images=False)
    with torch.no_grad():
        assert torch.equal(text_model(ids, lens), text_model(ids, lens, vec, mask))
    m = tiny(kind, use_images=True)
    with torch.no_grad():
        none = m(ids, lens)
        masked_out = m(ids, lens, vec, torch.zeros_like(mask))
        with_img = m(ids, lens, vec, mask)
    assert torch.allclose(none, masked_out, atol=1e-6)
    has = mask.any(1)
    assert not torch.allclose(with_img[has], none[has], atol=1e-4)
    assert torch.allclose(with_img[~has], none[~has], atol=1e-5)  # row without images unchanged


def test_lora_trains_only_adapters_and_projection():
    m = tiny("decoder", use_images=True)
    m.train()
    trainable = {n for n, p in m.named_parameters() if p.requires_grad}
    assert trainable and all("lora_" in n or n.startswith("image_proj.") for n in trainable)
    assert any(n.startswith("image_proj.") for n in trainable)
    targets = {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"}
    assert {t for t in targets if any(f".{t}.lora_A" in n for n in trainable)} == targets
    ids, lens, vec, mask = inputs()
    e = m(ids, lens, vec, mask)
    (e[:, 0] - e[:, 1]).pow(2).sum().backward()
    for n, p in m.named_parameters():
        if p.requires_grad:
            assert p.grad is not None, n
        else:
            assert p.grad is None, n
    assert any(p.grad.abs().sum() > 0 for n, p in m.named_parameters() if "lora_B" in n)
    assert m.image_proj.weight.grad.abs().sum() > 0
    s = m.trainable_parameters()
    assert s["lora"] and s["trainable"] < s["total"] and s["image_proj"] == 16 * 32 + 32


def test_full_finetuning_and_frozen_backbone():
    full = tiny("decoder", lora_r=0)
    assert all(p.requires_grad for p in full.parameters()) and not full.uses_lora
    enc = tiny("encoder")
    assert all(p.requires_grad for p in enc.parameters())
    frozen = tiny("encoder", use_images=True, train_backbone=False)
    assert {n for n, p in frozen.named_parameters() if p.requires_grad} == {"image_proj.weight", "image_proj.bias"}


def test_param_groups_have_the_two_learning_rates():
    m = tiny("decoder", use_images=True)
    groups = param_groups(m, lr_backbone=5e-5, lr_image_proj=5e-4, weight_decay=0.01)
    lrs = {g["name"]: g["lr"] for g in groups}
    assert lrs["backbone"] == 5e-5 and lrs["image_proj"] == 5e-4 and lrs["image_proj_no_decay"] == 5e-4
    in_groups = [id(p) for g in groups for p in g["params"]]
    assert sorted(in_groups) == sorted(id(p) for p in m.parameters() if p.requires_grad)
    assert all(g["weight_decay"] == 0.0 for g in groups if g["name"].endswith("no_decay"))
    torch.optim.AdamW(groups)  # accepted as is


def _one_step(m, seed=0):
    m.train()
    ids, lens, vec, mask = inputs(seed=seed)
    opt = torch.optim.AdamW(param_groups(m, 1e-2, 1e-2))
    e = m(ids, lens, vec, mask)
    (e @ e.T).sum().backward()
    opt.step()
    m.eval()


@pytest.mark.parametrize("kind", KINDS)
def test_save_load_round_trip(kind, tmp_path):
    m = tiny(kind, use_images=True)
    _one_step(m)
    m.save(tmp_path / "model")
    meta = json.loads((tmp_path / "model" / "model_config.json").read_text())
    assert meta["config"]["kind"] == kind
    saved = set(meta["trainable"])
    assert saved == {n for n, p in m.named_parameters() if p.requires_grad}
    if kind == "decoder":
        assert all("lora_" in n or n.startswith("image_proj.") for n in saved)
    for loaded in (load_model(tmp_path / "model"), create_model(str(tmp_path / "model"))):
        loaded.eval()
        ids, lens, vec, mask = inputs(seed=1)
        with torch.no_grad():
            assert torch.equal(m(ids, lens, vec, mask), loaded(ids, lens, vec, mask))


def test_decoder_order_of_image_and_text_matters():
    ids, lens, vec, mask = inputs()
    a = tiny("decoder", use_images=True, template="text_image")
    b = tiny("decoder", use_images=True, template="image_text")
    assert a.template.segments != b.template.segments
    with torch.no_grad():
        ea, eb = a(ids, lens, vec, mask), b(ids, lens, vec, mask)
    assert not torch.allclose(ea[0], eb[0], atol=1e-4)


def test_templates_and_overrides():
    assert tiny("encoder").template.segments == ("images", "cls", "title", "sep")
    assert tiny("decoder", use_images=True).template.name == "text_image"
    assert tiny("decoder").template.name == "text_only"
    m = tiny("decoder", use_images=True, template={"order": "text_image", "eos": False},
             template_overrides={"text_prefix": "Item"})
    assert "eos" not in m.template.segments and m.template.text_prefix == "Item"
    auto = tiny("decoder", kind="auto")
    assert auto.kind == "decoder" and tiny("encoder", kind="auto").kind == "encoder"
    with pytest.raises(ValueError, match="unknown setting"):
        ModelConfig.from_dict({"bogus": 1})
    with pytest.raises(ValueError, match="unknown setting"):
        create_model("minilm", bogus=1)
    with pytest.raises(ValueError):
        ModelConfig(pooling="max")


def test_presets():
    assert MODEL_PRESETS["minilm"].backbone == "offline-minilm" and not MODEL_PRESETS["minilm"].use_images
    assert MODEL_PRESETS["minilm-vixml"].use_images
    q = MODEL_PRESETS["qwen2.5-3b-vixml"]
    assert (q.lora_r, q.lora_alpha, q.lora_rslora, q.lora_dropout) == (256, 256, True, 0.0)
    assert q.lora_target_modules is None  # -> q,k,v,o,gate,up,down
    assert MODEL_PRESETS["smollm2-vixml"].lora_r == 16
    assert MODEL_PRESETS["distilbert-vixml"].backbone == "distilbert-base-uncased"
    cfg = dataclasses.replace(MODEL_PRESETS["smollm2-vixml"], lora_r=8)
    assert ModelConfig.from_dict(cfg.to_dict()) == cfg


def test_tokenize_helper():
    m = tiny("decoder")
    ids, lens = m.tokenize(["a b c", "d"], max_len=2)
    assert ids.shape == (2, 2) and lens.tolist() == [2, 1] and ids[1, 1] == m.assembler.pad_id


def test_gradient_checkpointing_gives_the_same_gradients():
    grads = []
    for ckpt in (False, True):
        m = create_model(tiny_model_config("decoder", use_images=True, gradient_checkpointing=ckpt))
        m.train()
        ids, lens, vec, mask = inputs()
        m(ids, lens, vec, mask).sum().backward()
        grads.append({n: p.grad.clone() for n, p in m.named_parameters() if p.requires_grad})
    assert grads[0].keys() == grads[1].keys()
    for n in grads[0]:
        assert torch.allclose(grads[0][n], grads[1][n], atol=1e-6), n


def _real_batch(m, titles):
    ids, lens = m.tokenize(titles)
    enc = m.tokenizer(titles, add_special_tokens=False)["input_ids"]
    assert lens.tolist() == [len(e) for e in enc] and ids[0, : len(enc[0])].tolist() == enc[0]
    return ids, lens


@pytest.mark.slow
def test_real_minilm():
    m = create_model("minilm-vixml", vision_dim=8).eval()
    ids, lens = _real_batch(m, ["red cotton shirt for men", "ceramic coffee mug", "usb cable"])
    vec = torch.randn(3, 2, 8)
    mask = torch.tensor([[1, 1], [1, 0], [0, 0]])
    with torch.no_grad():
        out = m.forward_details(ids, lens, vec, mask)
    assert out.embeddings.shape == (3, 384)
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(3), atol=1e-5)
    assert out.batch.token_ids[2, : int(out.batch.lengths[2])].tolist() == m.tokenizer("usb cable")["input_ids"]
    # related titles are closer than unrelated ones, even with the untrained projection masked out
    with torch.no_grad():
        e = m(*_real_batch(m, ["red cotton shirt", "red cotton t-shirt", "usb charging cable"]))
    assert e[0] @ e[1] > e[0] @ e[2]


@pytest.mark.slow
def test_real_smollm2_with_lora():
    m = create_model("smollm2-vixml", vision_dim=8, lora_r=4, lora_alpha=4)
    assert m.kind == "decoder" and m.uses_lora
    m.train()
    ids, lens = _real_batch(m, ["red cotton shirt for men", "ceramic coffee mug"])
    vec = torch.randn(2, 1, 8)
    mask = torch.tensor([[1], [0]])
    out = m.forward_details(ids, lens, vec, mask)
    assert out.embeddings.shape == (2, 576)
    assert torch.allclose(out.embeddings.norm(dim=-1), torch.ones(2), atol=1e-5)
    last = out.batch.token_ids[0, int(out.batch.last_positions[0])]
    assert int(last) == m.tokenizer.eos_token_id
    out.embeddings[0].dot(out.embeddings[1]).backward()
    assert m.image_proj.weight.grad.abs().sum() > 0
    assert all(p.grad is not None for n, p in m.named_parameters() if p.requires_grad)


def test_attention_dropout_override_reaches_every_attention_module():
    from vixml_lib.models import create_model
    from vixml_lib.testing import tiny_model_config

    for kind in ("encoder", "decoder"):
        m = create_model(tiny_model_config(kind, attention_dropout=0.0))
        ps = [mod.dropout.p for mod in m.modules() if type(mod).__name__.endswith("SelfAttention")]
        ps += [mod.attention_dropout for mod in m.modules()
               if isinstance(getattr(mod, "attention_dropout", None), float)]
        assert ps and all(p == 0.0 for p in ps)
    default = create_model(tiny_model_config("encoder"))
    assert any(mod.dropout.p > 0 for mod in default.modules() if type(mod).__name__.endswith("SelfAttention"))


def test_num_layers_keeps_the_first_layers():
    full = tiny("encoder")
    cut = tiny("encoder", num_layers=1)
    ids, lens, _, _ = inputs()
    with torch.no_grad():
        ref = full.forward_details(ids, lens, output_hidden_states=True)
        out = cut.forward_details(ids, lens)
    # BERT has no final norm: the first layer's output of the full model is the cut model's output
    assert torch.allclose(out.last_hidden_state, ref.hidden_states[1], atol=1e-5)
    dec = tiny("decoder", num_layers=1)
    assert dec.base_model.config.num_hidden_layers == 1 and len(dec.base_model.layers) == 1
    with pytest.raises(ValueError, match="only 2 layers"):
        tiny("decoder", num_layers=3)
    with pytest.raises(ValueError, match="num_layers must be >= 1"):
        ModelConfig(num_layers=0)


@pytest.mark.parametrize("kind", KINDS)
def test_template_mapping_takes_the_model_kind(kind):
    m = tiny(kind, use_images=True, template={"order": "image_text", "text_prefix": False, "eos": False})
    segs = m.template.segments
    assert segs.index("images") < segs.index("title") and "text_prefix" not in segs
    closing = "sep" if kind == "encoder" else "eos"
    assert closing not in m.template.segments


def test_bfloat16_decoder_weights_train_with_float32_adapters():
    m = create_model(tiny_model_config("decoder", use_images=True, dtype="bfloat16"))
    base = [p for n, p in m.named_parameters() if not p.requires_grad]
    lora = [p for n, p in m.named_parameters() if p.requires_grad and "lora_" in n]
    assert base and all(p.dtype == torch.bfloat16 for p in base)
    assert lora and all(p.dtype == torch.float32 for p in lora) and m.image_proj.weight.dtype == torch.float32
    ids, lens, vec, mask = inputs()
    opt = torch.optim.AdamW(param_groups(m, 1e-2, 1e-2))
    emb = m(ids, lens, vec, mask)
    assert emb.dtype == torch.float32 and torch.isfinite(emb).all()
    (emb @ emb.T).triu(1).sum().backward()
    before = [p.detach().clone() for p in lora]
    opt.step()
    assert any(not torch.equal(a, p) for a, p in zip(before, lora))
