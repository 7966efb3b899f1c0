"""The composed model: losses, gradients, [SEG] counts, RVLS2M switches, cached encodings, generation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from sim4seg.errors import InputError
from sim4seg.model import compose
from sim4seg.model.sim4seg import Sim4SegModel


def test_forward_losses_and_gradients_reach_only_trainable_parts(tiny, batch_of):
    model, processor = tiny
    model.train()
    model.zero_grad(set_to_none=True)
    batch = batch_of(model, processor, ["It is [SEG]. Diagnosis: polyp.", "It is [SEG]."], sizes=[(48, 72), (80, 40)])
    out = model(**batch)
    for name in ("loss", "loss_txt", "loss_bce", "loss_dice"):
        assert torch.isfinite(getattr(out, name)), name
    w = model.config.loss
    torch.testing.assert_close(
        out.loss, w.txt * out.loss_txt + w.mask * (w.bce * out.loss_bce + w.dice * out.loss_dice)
    )
    assert [tuple(m.shape) for m in out.masks] == [(1, 48, 72), (1, 80, 40)]
    out.loss.backward()
    grads = {n: p.grad for n, p in model.named_parameters()}

    def reached(prefix):
        return any(g is not None and g.abs().sum() > 0 for n, g in grads.items() if prefix in n)

    # LoRA starts with B = 0, so only B gets a non-zero gradient on the first step; A's is computed
    assert reached("lora_B") and all(g is not None for n, g in grads.items() if "lora_A" in n)
    assert reached("phi.") and reached("sam.mask_decoder.transformer") and reached("lm_head")
    frozen = ("lvlm.model.vision_tower", "lvlm.model.multi_modal_projector", "sam.vision_encoder", "sam.prompt_encoder")
    for n, p in model.named_parameters():
        if n.startswith(frozen) or (".language_model." in n and "lora_" not in n and "embed_tokens" not in n):
            assert not p.requires_grad and p.grad is None, n


def test_trainable_flags_choose_what_trains(tiny):
    model, _ = tiny
    t = model.config.trainable
    compose.apply_trainable(
        model,
        type(t)(lora=False, lm_head=False, embed_tokens=False, mask_decoder=False, projection=True, sam_encoder=True),
    )
    names = {n for n, p in model.named_parameters() if p.requires_grad}
    assert any(n.startswith("sam.vision_encoder") for n in names) and any(n.startswith("phi.") for n in names)
    assert not any("lora_" in n or n.startswith(("sam.mask_decoder", "lvlm.lm_head")) for n in names)


@pytest.mark.parametrize(
    "answer,k", [("There is nothing to segment.", 0), ("It is [SEG].", 1), ("Left is [SEG] and right is [SEG].", 2)]
)
def test_zero_one_two_seg_tokens(tiny, batch_of, answer, k):
    model, processor = tiny
    model.train()
    out = model(**batch_of(model, processor, [answer], sizes=[(40, 56)]))
    assert out.seg_counts.tolist() == [k]
    assert out.masks[0].shape == (k, 40, 56) and out.iou[0].shape == (k,)
    assert out.region[0].shape == (k, 16, 16)
    assert torch.isfinite(out.loss)
    if k == 0:
        assert out.loss_bce.item() == 0.0 and out.loss_dice.item() == 0.0


def test_rvls2m_switches_for_training_and_inference(tiny, batch_of):
    model, processor = tiny
    batch = batch_of(model, processor, ["It is [SEG]."])
    cfg = model.config.rvls2m
    cfg.train, cfg.infer = False, True
    model.train()
    assert model(**batch).region[0] is None
    model.eval()
    with torch.no_grad():
        on = model(**batch)
        off = model(**batch, use_rvls2m=False)
    assert on.region[0] is not None and on.region[0].sum() == cfg.k
    assert not torch.allclose(on.masks[0], off.masks[0])  # the dense prompt changes SAM's output


def test_cached_encoding_gives_the_same_result(tiny, batch_of):
    model, processor = tiny
    model.eval()
    batch = batch_of(model, processor, ["It is [SEG]."], sizes=[(60, 30)])
    with torch.no_grad():
        direct = model(**batch)
        enc = model.encode_image(
            batch["pixel_values"], batch["sam_pixel_values"], batch["image_sizes"], batch["token_boxes"]
        )
        cached = model(batch["input_ids"], batch["attention_mask"], encoding=enc)
    torch.testing.assert_close(direct.masks[0], cached.masks[0])
    torch.testing.assert_close(direct.logits, cached.logits)


class ForceTokens:
    """A logits processor that forces a fixed answer (to make a random tiny model say [SEG])."""

    def __init__(self, prompt_len, tokens):
        self.prompt_len, self.tokens = prompt_len, tokens

    def __call__(self, input_ids, scores):
        step = input_ids.shape[1] - self.prompt_len if input_ids.shape[1] >= self.prompt_len else input_ids.shape[1]
        step = min(step, len(self.tokens) - 1)
        forced = torch.full_like(scores, -1e9)
        forced[:, self.tokens[step]] = 0.0
        return forced


def test_generation_seg_states_match_teacher_forcing(tiny, batch_of):
    from transformers import LogitsProcessorList

    model, processor = tiny
    model.eval()
    tok = processor.tokenizer
    answer = tok(" It is [SEG].", add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
    prompt = batch_of(model, processor, [None, None], sizes=[(48, 72), (30, 30)], padding_side="left")
    enc = model.encode_image(
        prompt["pixel_values"], prompt["sam_pixel_values"], prompt["image_sizes"], prompt["token_boxes"]
    )
    # generate() with inputs_embeds sees only the new tokens
    gen = model.generate(
        prompt["input_ids"],
        prompt["attention_mask"],
        enc,
        max_new_tokens=len(answer) + 2,
        logits_processor=LogitsProcessorList([ForceTokens(0, answer)]),
    )
    assert [h.shape[0] for h in gen.seg_hidden] == [1, 1] and not gen.truncated.any()
    segs = model.segment_generation(gen, enc)
    for i in range(2):
        full = torch.cat([prompt["input_ids"][i][prompt["attention_mask"][i].bool()], torch.tensor(answer)])
        with torch.no_grad():
            tf = model(full[None], torch.ones_like(full)[None], encoding=enc.index(torch.tensor([i])))
        torch.testing.assert_close(segs[i].masks[0], tf.masks[0][0], atol=1e-4, rtol=1e-4)


def test_answers_without_seg_give_no_mask(tiny, batch_of):
    from transformers import LogitsProcessorList

    model, processor = tiny
    model.eval()
    tok = processor.tokenizer
    prompt = batch_of(model, processor, [None], padding_side="left")
    enc = model.encode_image(
        prompt["pixel_values"], prompt["sam_pixel_values"], prompt["image_sizes"], prompt["token_boxes"]
    )
    words = tok(" no", add_special_tokens=False)["input_ids"]
    gen = model.generate(
        prompt["input_ids"],
        prompt["attention_mask"],
        enc,
        max_new_tokens=3,
        logits_processor=LogitsProcessorList([ForceTokens(0, words)]),
    )
    assert gen.truncated.all() and model.segment_generation(gen, enc) == [None]


def test_many_prompts_against_one_cached_sam_embedding(tiny, batch_of):
    model, processor = tiny
    model.eval()
    b = batch_of(model, processor, [None])
    enc = model.encode_image(b["pixel_values"], b["sam_pixel_values"], b["image_sizes"], b["token_boxes"])
    n = 5
    seg_phi = torch.randn(n, model.sam.config.prompt_encoder_config.hidden_size)
    region = torch.rand(n, 16, 16) > 0.8
    prompt = model.prompt(region, enc.image_sizes.expand(n, -1), enc.token_boxes.expand(n, -1))
    with torch.no_grad():
        low, iou = model.decode(enc.sam_embeddings.expand(n, -1, -1, -1), seg_phi, prompt)
        one_low, _ = model.decode(enc.sam_embeddings, seg_phi[2:3], prompt[2:3])
    assert low.shape[0] == n and iou.shape == (n,)
    torch.testing.assert_close(low[2:3], one_low, atol=1e-5, rtol=1e-5)


def test_bad_inputs_have_clear_errors(tiny, batch_of):
    model, processor = tiny
    batch = batch_of(model, processor, ["It is [SEG]."])
    no_image = batch["input_ids"].clone()
    no_image[no_image == model.image_token_id] = processor.tokenizer.pad_token_id
    with pytest.raises(ValueError, match="no image token"):
        model(
            no_image,
            batch["attention_mask"],
            batch["pixel_values"],
            batch["sam_pixel_values"],
            batch["image_sizes"],
            batch["token_boxes"],
        )
    with pytest.raises(ValueError, match="truncated before \\[SEG\\]"):
        cut = {**batch, "seg_counts": torch.tensor([2])}
        model(**cut)
    with pytest.raises(ValueError, match="mismatched dimensions"):
        Sim4SegModel(
            model.lvlm,
            model.sam,
            model.config,
            seg_token_id=model.seg_token_id,
            phi=nn.Sequential(nn.Linear(64, 64), nn.ReLU(), nn.Linear(64, 7)),
        )
    with pytest.raises(InputError, match="unsupported LVLM 'sam'; supported: LLaVA-family"):
        compose.check_architecture(model.sam, model.sam)


def test_encoder_refuses_truncation_before_seg(tiny):
    import numpy as np

    from sim4seg.data.dataset import ExampleEncoder

    model, processor = tiny
    enc = ExampleEncoder(processor, sam_size=model.sam_size, max_length=model.lvlm.config.image_seq_length + 30)
    with pytest.raises(InputError, match="truncated before \\[SEG\\]"):
        enc.encode(np.zeros((32, 32, 3), np.uint8), "Segment it.", "word " * 40 + "It is [SEG].", name="x.png")


def test_dtype_comes_from_the_caller_bf16(batch_of):
    """The same weights in bfloat16 (the GPU setting, run here on the CPU): close losses and masks, gradients flow."""
    from sim4seg.model.tiny import build_tiny

    model, processor = build_tiny(seed=0)
    batch = batch_of(
        model, processor, ["It is [SEG].", "No mask here.", "[SEG] and [SEG]."], sizes=[(40, 64), (50, 50), (30, 70)]
    )
    model.eval()
    with torch.no_grad():
        full = model(**batch)
        half = model.to(torch.bfloat16)(**batch)
    assert half.logits.dtype == torch.bfloat16
    assert abs(float(half.loss) - float(full.loss)) < 0.05 * float(full.loss)
    for a, b in zip(full.masks, half.masks):
        assert a.shape == b.shape and b.dtype == torch.float32  # masks at the original size, fp32 logits
        if a.numel():
            assert float(((a > 0) == (b > 0)).float().mean()) > 0.95
    model.train()
    model(**batch).loss.backward()
    assert all(p.grad.dtype == torch.bfloat16 for p in model.parameters() if p.requires_grad and p.grad is not None)
    assert any(p.grad is not None for n, p in model.named_parameters() if "lora_B" in n)
