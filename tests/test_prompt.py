import pytest
import torch

from vixml_lib.prompt import (
    IMAGE_TOKEN_ID,
    KIND_CODES,
    PAD_KIND,
    TEMPLATES,
    PromptAssembler,
    PromptTemplate,
    get_template,
    make_template,
)

# ---------------------------------------------------------------------------------------
# a stand-in tokenizer: one id per word from a fixed vocabulary


class WordTokenizer:
    pad_token_id = 0
    bos_token_id = 1
    eos_token_id = 2
    cls_token_id = 3
    sep_token_id = 4
    vocab = {"This": 10, "product": 11, "text": 12, "and": 13, "its": 14, "image": 15, "a": 16, "<|endoftext|>": 9}

    def __init__(self, add_bos=False):
        self.add_bos = add_bos

    def convert_tokens_to_ids(self, token):
        return self.vocab[token]

    def __call__(self, text, add_special_tokens=True):
        ids = [self.vocab[w] for w in text.split()]
        if add_special_tokens and self.add_bos:
            ids = [self.bos_token_id] + ids
        return {"input_ids": ids}


def embed(ids):
    """Embedding stand-in: feature 0 = the token id, feature 1 = 0."""
    ids = ids.float()
    return torch.stack([ids, torch.zeros_like(ids)], -1)


# three rows: titles of different lengths; 2 images, none, and one image in the last slot
TITLES = [[100, 101, 102], [103], [104, 105]]
MASK = torch.tensor([[1, 1, 0], [0, 0, 0], [0, 0, 1]], dtype=torch.bool)


def batch_inputs():
    L = 4
    ids = torch.zeros(3, L, dtype=torch.int32)
    for r, t in enumerate(TITLES):
        ids[r, : len(t)] = torch.tensor(t)
    lens = torch.tensor([len(t) for t in TITLES])
    img = torch.zeros(3, 3, 2)
    for r in range(3):
        for m in range(3):
            img[r, m] = torch.tensor([1000 + 10 * r + m, 1.0])  # distinctive; feature 1 marks images
    return ids, lens, img, MASK


def I(r, m):  # noqa: E743 - an image slot in the expected sequences
    return ("img", 1000 + 10 * r + m)


TP = [10, 11, 12]  # "This product text"
IP = [13, 14, 15]  # "and its image"
# the authors' wording when the image comes first
IP_FIRST = [10, 11, 15]  # "This product image"
TP_AFTER = [13, 14, 12]  # "and its text"
EXPECTED = {
    "text_image": [
        TP + [100, 101, 102] + IP + [I(0, 0), I(0, 1)] + [2],
        TP + [103] + [2],
        TP + [104, 105] + IP + [I(2, 2)] + [2],
    ],
    "image_text": [
        IP_FIRST + [I(0, 0), I(0, 1)] + TP_AFTER + [100, 101, 102] + [2],
        TP_AFTER + [103] + [2],
        IP_FIRST + [I(2, 2)] + TP_AFTER + [104, 105] + [2],
    ],
    "image_after_prefix": [
        TP + [I(0, 0), I(0, 1)] + [100, 101, 102] + [2],
        TP + [103] + [2],
        TP + [I(2, 2)] + [104, 105] + [2],
    ],
    "text_only": [TP + [100, 101, 102] + [2], TP + [103] + [2], TP + [104, 105] + [2]],
    "encoder": [
        [I(0, 0), I(0, 1)] + [3, 100, 101, 102, 4],
        [3, 103, 4],
        [I(2, 2)] + [3, 104, 105, 4],
    ],
}

KIND_OF = {**{i: "text_prefix" for i in TP}, **{i: "image_prefix" for i in IP}, 1: "bos", 2: "eos", 3: "cls", 4: "sep"}
KIND_OF_IMAGE_FIRST = {**KIND_OF, **{i: "text_prefix" for i in TP_AFTER}, **{i: "image_prefix" for i in IP_FIRST}}


def expected_kinds(seq, kind_of=KIND_OF):
    out = []
    for x in seq:
        if isinstance(x, tuple):
            out.append(KIND_CODES["images"])
        elif x >= 100:
            out.append(KIND_CODES["title"])
        else:
            out.append(KIND_CODES[kind_of[x]])
    return out


def check_rows(b, expected, kind_of=KIND_OF):
    B, T = b.attention_mask.shape
    assert T == max(len(e) for e in expected)
    for r, seq in enumerate(expected):
        n = len(seq)
        real, pad = slice(0, n), slice(n, T)
        emb = b.inputs_embeds[r, real]
        want = torch.tensor([[x[1], 1.0] if isinstance(x, tuple) else [x, 0.0] for x in seq])
        assert torch.equal(emb, want), (r, emb[:, 0].tolist(), seq)
        assert b.attention_mask[r, real].eq(1).all() and b.attention_mask[r, pad].eq(0).all()
        assert b.inputs_embeds[r, pad].eq(0).all()
        ids = [IMAGE_TOKEN_ID if isinstance(x, tuple) else x for x in seq]
        assert b.token_ids[r, real].tolist() == ids
        assert b.token_ids[r, pad].eq(0).all()  # pad id
        assert b.kinds[r, real].tolist() == expected_kinds(seq, kind_of)
        assert b.kinds[r, pad].eq(PAD_KIND).all()
        assert int(b.lengths[r]) == n
        assert int(b.last_positions[r]) == n - 1
        # image positions point at the image slots, -1 for masked images
        for m in range(b.image_positions.shape[1]):
            pos = int(b.image_positions[r, m])
            if I(r, m) in seq:
                assert pos == real.start + seq.index(I(r, m))
            else:
                assert pos == -1


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_named_templates_assemble_the_hand_written_sequences(name):
    asm = PromptAssembler(get_template(name), WordTokenizer())
    ids, lens, img, mask = batch_inputs()
    b = asm.assemble(ids, lens, embed, img, mask)
    check_rows(b, EXPECTED[name], KIND_OF_IMAGE_FIRST if name == "image_text" else KIND_OF)
    closing = 4 if name == "encoder" else 2
    for r in range(len(EXPECTED[name])):
        assert int(b.token_ids[r, b.eos_positions[r]]) == closing


def test_named_template_segments():
    assert TEMPLATES["encoder"].segments == ("images", "cls", "title", "sep")
    assert TEMPLATES["text_image"].segments == ("bos", "text_prefix", "title", "image_prefix", "images", "eos")
    assert TEMPLATES["image_text"].segments == ("bos", "image_prefix", "images", "text_prefix", "title", "eos")
    assert TEMPLATES["image_after_prefix"].segments == ("bos", "text_prefix", "images", "title", "eos")
    assert TEMPLATES["text_only"].segments == ("bos", "text_prefix", "title", "eos")


def test_bos_only_for_tokenizers_that_use_one():
    ids, lens, img, mask = batch_inputs()
    b = PromptAssembler(get_template("text_image"), WordTokenizer(add_bos=True)).assemble(ids, lens, embed, img, mask)
    check_rows(b, [[1] + e for e in EXPECTED["text_image"]])
    b = PromptAssembler(get_template("text_image", bos_policy="always"), WordTokenizer()).assemble(ids, lens, embed)
    assert b.token_ids[:, 0].tolist() == [1, 1, 1]


def test_image_text_and_text_image_differ_only_in_order_with_the_same_wording():
    ids, lens, img, mask = batch_inputs()
    # the named image_text takes the authors' image-first wording ...
    named = get_template("image_text")
    assert (named.image_prefix, named.text_prefix) == ("This product image", "and its text")
    # ... with the text_image strings the two differ only in order
    same = make_template("image_text", text_prefix="This product text", image_prefix="and its image")
    a = PromptAssembler(get_template("text_image"), WordTokenizer()).assemble(ids, lens, embed, img, mask)
    b = PromptAssembler(same, WordTokenizer()).assemble(ids, lens, embed, img, mask)
    assert torch.equal(a.lengths, b.lengths) and torch.equal(a.attention_mask, b.attention_mask)
    for r in range(3):
        n = int(a.lengths[r])
        ea, eb = a.inputs_embeds[r, :n].tolist(), b.inputs_embeds[r, :n].tolist()
        assert sorted(ea) == sorted(eb)
        if MASK[r].any():
            assert ea != eb


def test_items_without_images_have_no_image_slot():
    ids, lens, img, mask = batch_inputs()
    asm = PromptAssembler(get_template("text_image"), WordTokenizer())
    b = asm.assemble(ids, lens, embed, img, mask)
    assert not (b.kinds[1] == KIND_CODES["images"]).any()
    assert b.image_positions[1].tolist() == [-1, -1, -1]
    # no images at all: same as text_only; M = 0 as well
    none = asm.assemble(ids, lens, embed)
    check_rows(none, EXPECTED["text_only"])
    empty = asm.assemble(ids, lens, embed, img[:, :0], mask[:, :0])
    assert torch.equal(empty.inputs_embeds, none.inputs_embeds)
    # image prefix kept without images when asked
    keep = PromptAssembler(get_template("text_image", image_prefix_needs_images=False), WordTokenizer())
    b = keep.assemble(ids, lens, embed)
    assert b.token_ids[1, : int(b.lengths[1])].tolist() == TP + [103] + IP + [2]


def test_make_template_ablations():
    assert make_template("text_image", text_prefix=False).segments == ("bos", "title", "image_prefix", "images", "eos")
    segments = make_template("text_image", image_prefix=False, eos=False).segments
    assert segments == ("bos", "text_prefix", "title", "images")
    assert make_template("text_image", bos=False).segments[0] == "text_prefix"
    assert make_template("text_image", images=False).segments == TEMPLATES["text_only"].segments
    assert make_template("text_image", kind="encoder").segments == ("cls", "title", "images", "sep")
    t = make_template("text_image", text_prefix="Item")
    assert t.text_prefix == "Item" and "text_prefix" in t.segments
    segments = get_template({"order": "image_text", "eos": False}).segments
    assert segments == ("bos", "image_prefix", "images", "text_prefix", "title")
    assert get_template("text_image", eos_token="<|endoftext|>").eos_token == "<|endoftext|>"
    with pytest.raises(ValueError):
        get_template("nope")
    with pytest.raises(ValueError):
        PromptTemplate(segments=("title", "title"))
    with pytest.raises(ValueError):
        PromptTemplate(segments=("images", "eos"))


def test_eos_token_override_and_fixed_ids():
    ids, lens, img, mask = batch_inputs()
    asm = PromptAssembler(get_template("text_only", eos_token="<|endoftext|>"), WordTokenizer())
    b = asm.assemble(ids, lens, embed)
    assert b.token_ids[0, int(b.last_positions[0])] == 9
    asm = PromptAssembler("text_only", fixed_ids={"bos": [], "text_prefix": [7], "eos": [8]}, pad_id=5)
    b = asm.assemble(ids, lens, embed)
    assert b.token_ids.tolist() == [[7, 100, 101, 102, 8], [7, 103, 8, 5, 5], [7, 104, 105, 8, 5]]


def reference_assemble(asm, ids, lens, img, mask):
    """A slow per-row reference: the list of (embedding row, kind) of each row."""
    rows = []
    for r in range(ids.shape[0]):
        seq = []
        n_img = int(mask[r].sum()) if img is not None else 0
        for s, kind in enumerate(asm.template.segments):
            if kind == "title":
                seq += [(embed(ids[r, j : j + 1])[0], KIND_CODES["title"]) for j in range(int(lens[r]))]
            elif kind == "images":
                if img is not None:
                    seq += [(img[r, m], KIND_CODES["images"]) for m in range(img.shape[1]) if mask[r, m]]
            else:
                if kind == "image_prefix" and n_img == 0:
                    continue
                seq += [(embed(torch.tensor([i]))[0], KIND_CODES[kind]) for i in asm.segment_ids[s]]
        rows.append(seq)
    return rows


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_vectorised_assembly_matches_a_per_row_reference(name):
    g = torch.Generator().manual_seed(0)
    B, L, M = 17, 6, 3
    ids = torch.randint(100, 200, (B, L), generator=g)
    lens = torch.randint(0, L + 1, (B,), generator=g)
    img = torch.randn(B, M, 2, generator=g) + 500
    mask = torch.rand(B, M, generator=g) < 0.5
    asm = PromptAssembler(get_template(name), WordTokenizer(add_bos=True))
    b = asm.assemble(ids, lens, embed, img, mask)
    ref = reference_assemble(asm, ids, lens, img, mask)
    T = b.inputs_embeds.shape[1]
    assert T == max(len(x) for x in ref)
    for r, seq in enumerate(ref):
        n = len(seq)
        assert torch.equal(b.inputs_embeds[r, :n], torch.stack([e for e, _ in seq]))
        assert b.kinds[r, :n].tolist() == [k for _, k in seq]
        assert int(b.attention_mask[r].sum()) == n


def test_gradients_flow_to_image_embeddings():
    ids, lens, img, mask = batch_inputs()
    img = img.clone().requires_grad_(True)
    b = PromptAssembler(get_template("text_image"), WordTokenizer()).assemble(ids, lens, embed, img, mask)
    b.inputs_embeds.sum().backward()
    assert torch.equal(img.grad[..., 0], mask.float())


def test_real_bert_tokenizer_gives_cls_and_sep():
    from vixml_lib.backbones import get_tokenizer

    tok = get_tokenizer("offline-minilm")
    titles = ["red cotton shirt", "mug"]
    enc = tok(titles, add_special_tokens=False)["input_ids"]
    L = max(map(len, enc))
    ids = torch.tensor([e + [0] * (L - len(e)) for e in enc])
    lens = torch.tensor([len(e) for e in enc])
    emb = torch.nn.Embedding(tok.vocab_size, 4)
    img = torch.randn(2, 3, 4)
    mask = torch.tensor([[1, 0, 0], [0, 0, 0]])
    b = PromptAssembler(get_template("encoder"), tok).assemble(ids, lens, emb, img, mask)
    assert b.token_ids[0].tolist() == [IMAGE_TOKEN_ID, 101] + enc[0] + [102]
    assert b.token_ids[1, : int(b.lengths[1])].tolist() == [101] + enc[1] + [102]
    assert b.token_ids[1, int(b.lengths[1]) :].eq(tok.pad_token_id).all()
    # matches the tokenizer's own special tokens
    assert b.token_ids[1, : int(b.lengths[1])].tolist() == tok("mug")["input_ids"]


def test_real_smollm2_tokenizer_ends_with_eos():
    from vixml_lib.backbones import get_tokenizer

    tok = get_tokenizer("offline-smollm2")
    enc = tok(["Blue ceramic mug", "Lamp"], add_special_tokens=False)["input_ids"]
    L = max(map(len, enc))
    ids = torch.tensor([e + [tok.pad_token_id] * (L - len(e)) for e in enc])
    lens = torch.tensor([len(e) for e in enc])
    emb = torch.nn.Embedding(len(tok), 4)
    asm = PromptAssembler(get_template("text_image"), tok)
    b = asm.assemble(ids, lens, emb, torch.randn(2, 1, 4), torch.tensor([[1], [0]]))
    prefix = tok("This product text", add_special_tokens=False)["input_ids"]
    img_prefix = tok(" and its image", add_special_tokens=False)["input_ids"]
    n0 = int(b.lengths[0])
    assert b.token_ids[0, :n0].tolist() == prefix + enc[0] + img_prefix + [IMAGE_TOKEN_ID, tok.eos_token_id]
    n1 = int(b.lengths[1])
    assert b.token_ids[1, :n1].tolist() == prefix + enc[1] + [tok.eos_token_id]
    assert (b.token_ids[:, :][b.attention_mask.bool()] != tok.bos_token_id).all()  # SmolLM2 adds no BOS
