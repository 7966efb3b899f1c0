"""A tiny LISA checkpoint in LISA's real layout → load_lisa / `sim4seg convert lisa`, checked against LISA's own maths.

The fixture writes what a released LISA repo holds: LISA's config.json (LLaMA sizes + ``mm_*``
fields, ``mm_vision_tower`` naming a CLIP), a LLaMA-style tokenizer with ``[SEG]``,
``<im_start>``, ``<im_end>`` (no ``<image>``), and sharded weights with an index under LISA's
module names: a one-Linear ``mm_projector`` (LLaVA v1), SAM under ``model.visual_model.``
with the official names, ϕ as ``text_hidden_fcs``. The CLIP is a separate local repo, as
``openai/clip-vit-large-patch14`` is for LISA. Expected values are computed here the way LISA
computes them (plain LLaMA, CLIP layer -2 without CLS through one Linear), not through our code.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from sim4seg.errors import InputError
from sim4seg.model import checkpoint, lisa
from sim4seg.model.config import TinySpec
from sim4seg.model.tiny import tiny_sam

HIDDEN, VISION, OUT_DIM, LAYERS = 64, 32, 32, 2


def _tokenizer():
    """A LLaMA-like tokenizer (<unk>, <s>, </s>) with LISA's added tokens; trained here, no download."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=300,
        special_tokens=["<unk>", "<s>", "</s>"],
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(["USER: Segment the polyp. ASSISTANT: It is [SEG]. A chat between a human"], trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, bos_token="<s>", eos_token="</s>", unk_token="<unk>", pad_token="<unk>"
    )
    fast.add_tokens(["[SEG]"])
    fast.add_tokens(["<im_start>", "<im_end>"], special_tokens=True)
    return fast


def _clip_repo(path):
    """A tiny CLIP (vision config, weights, image processor) saved the way a hub CLIP repo is."""
    from transformers import CLIPVisionConfig, CLIPVisionModel

    try:
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor
    torch.manual_seed(1)
    clip = CLIPVisionModel(
        CLIPVisionConfig(
            hidden_size=VISION,
            intermediate_size=2 * VISION,
            num_hidden_layers=3,
            num_attention_heads=2,
            image_size=32,
            patch_size=8,
            projection_dim=VISION,
        )
    )
    clip.save_pretrained(path)
    CLIPImageProcessor(size={"shortest_edge": 32}, crop_size={"height": 32, "width": 32}).save_pretrained(path)
    return clip


def _lisa_weights(vocab, sam_official, clip, with_tower):
    g = torch.Generator().manual_seed(2)

    def rnd(*shape):
        return torch.randn(*shape, generator=g) * 0.1

    sd = {
        "model.embed_tokens.weight": rnd(vocab, HIDDEN),
        "lm_head.weight": rnd(vocab, HIDDEN),
        "model.norm.weight": 1 + rnd(HIDDEN),
        "model.mm_projector.weight": rnd(HIDDEN, VISION),
        "model.mm_projector.bias": rnd(HIDDEN),
        "model.text_hidden_fcs.0.0.weight": rnd(HIDDEN, HIDDEN),
        "model.text_hidden_fcs.0.0.bias": rnd(HIDDEN),
        "model.text_hidden_fcs.0.2.weight": rnd(OUT_DIM, HIDDEN),
        "model.text_hidden_fcs.0.2.bias": rnd(OUT_DIM),
    }
    for i in range(LAYERS):
        p = f"model.layers.{i}."
        for proj in ("q", "k", "v", "o"):
            sd[f"{p}self_attn.{proj}_proj.weight"] = rnd(HIDDEN, HIDDEN)
        sd[p + "mlp.gate_proj.weight"], sd[p + "mlp.up_proj.weight"] = rnd(2 * HIDDEN, HIDDEN), rnd(2 * HIDDEN, HIDDEN)
        sd[p + "mlp.down_proj.weight"] = rnd(HIDDEN, 2 * HIDDEN)
        sd[p + "input_layernorm.weight"], sd[p + "post_attention_layernorm.weight"] = 1 + rnd(HIDDEN), 1 + rnd(HIDDEN)
    sd.update({"model.visual_model." + k: v for k, v in sam_official.items()})
    if with_tower:  # LISA's names (transformers 4 CLIPVisionModel: vision_model.*); differs from the CLIP repo
        sd.update({"model.vision_tower.vision_tower.vision_model." + k: v + 0.01 for k, v in clip.state_dict().items()})
    return sd


def _peft_wrap(sd):
    """LISA's training-time layout: base_model.model. prefixes, LoRA pairs on the LLM's q/v (not CLIP's)."""
    out = {}
    for k, v in sd.items():
        if k.startswith("model.layers.") and k.endswith(("self_attn.q_proj.weight", "self_attn.v_proj.weight")):
            stem = "base_model.model." + k[: -len(".weight")]
            out[stem + ".base_layer.weight"] = v
            out[stem + ".lora_A.default.weight"] = torch.full((8, v.shape[1]), 0.01)
            out[stem + ".lora_B.default.weight"] = torch.full((v.shape[0], 8), 0.02)
        else:
            out["base_model.model." + k] = v
    return out


def write_lisa(root, official_sam_state_dict, *, with_tower=False, peft=False):
    """Write a LISA repo, a CLIP repo and a SAM config under ``root``; return (lisa_dir, sam_dir, lisa state dict)."""
    from safetensors.torch import save_file

    clip = _clip_repo(root / "clip")
    sam = tiny_sam(TinySpec(sam_hidden=OUT_DIM))
    sam.config.save_pretrained(root / "sam")
    tok = _tokenizer()
    d = root / "lisa"
    tok.save_pretrained(d)
    sd = _lisa_weights(len(tok), {k: v - 0.5 for k, v in official_sam_state_dict(sam).items()}, clip, with_tower)
    stored = _peft_wrap(sd) if peft else sd
    keys = sorted(stored)
    shards = {
        "model-00001-of-00002.safetensors": keys[: len(keys) // 2],
        "model-00002-of-00002.safetensors": keys[len(keys) // 2 :],
    }
    for name, part in shards.items():
        save_file({k: stored[k].contiguous() for k in part}, d / name)
    (d / "model.safetensors.index.json").write_text(
        json.dumps({"metadata": {}, "weight_map": {k: name for name, part in shards.items() for k in part}})
    )
    torch.save({"not": "weights"}, d / "training_args.bin")  # must not be read as weights
    (d / "config.json").write_text(
        json.dumps(
            {
                "architectures": ["LISAForCausalLM"],
                "model_type": "llava",
                "hidden_size": HIDDEN,
                "intermediate_size": 2 * HIDDEN,
                "num_hidden_layers": LAYERS,
                "num_attention_heads": 4,
                "num_key_value_heads": 4,
                "vocab_size": len(tok),
                "max_position_embeddings": 512,
                "rms_norm_eps": 1e-6,
                "hidden_act": "silu",
                "mm_vision_tower": str(root / "clip"),
                "vision_tower": str(root / "clip"),
                "mm_vision_select_layer": -2,
                "mm_vision_select_feature": "patch",
                "mm_hidden_size": VISION,
                "mm_use_im_start_end": True,
                "use_mm_proj": True,
                "out_dim": OUT_DIM,
                "train_mask_decoder": True,
                "bos_token_id": 1,
                "eos_token_id": 2,
                "pad_token_id": 0,
            }
        )
    )
    return d, root / "sam", sd, tok


def _merged(sd, key):
    w = sd[key]
    return w + (torch.full((w.shape[0], 8), 0.02) @ torch.full((8, w.shape[1]), 0.01)) * (16 / 8)


@pytest.mark.parametrize("with_tower,peft", [(False, False), (True, True)])
def test_load_lisa_computes_what_lisa_computes(tmp_path, official_sam_state_dict, with_tower, peft):
    from transformers import CLIPVisionModel, LlamaConfig, LlamaForCausalLM

    d, sam_dir, sd, tok = write_lisa(tmp_path, official_sam_state_dict, with_tower=with_tower, peft=peft)
    model, processor = lisa.load_lisa(d, sam=sam_dir, trainable=False)
    if peft:  # LISA's LoRA (alpha 16, r 8) folded into q/v
        for i in range(LAYERS):
            for proj in ("q", "v"):
                sd[f"model.layers.{i}.self_attn.{proj}_proj.weight"] = _merged(
                    sd, f"model.layers.{i}.self_attn.{proj}_proj.weight"
                )

    # the language model: a plain LLaMA with LISA's weights gives the same logits on the same ids
    llama = LlamaForCausalLM(
        LlamaConfig(
            vocab_size=len(tok),
            hidden_size=HIDDEN,
            intermediate_size=2 * HIDDEN,
            num_hidden_layers=LAYERS,
            num_attention_heads=4,
            num_key_value_heads=4,
            rms_norm_eps=1e-6,
            max_position_embeddings=512,
            tie_word_embeddings=False,
        )
    )
    llama.load_state_dict(
        {
            k: v
            for k, v in sd.items()
            if not k.startswith(("model.mm_", "model.visual_model.", "model.text_hidden", "model.vision_tower."))
        }
    )
    ids = torch.tensor([tok("USER: Segment the polyp. ASSISTANT: It is [SEG].")["input_ids"]])
    assert processor.tokenizer.convert_tokens_to_ids("[SEG]") == tok.convert_tokens_to_ids("[SEG]")
    with torch.no_grad():
        ours = model.lvlm(input_ids=ids).logits[..., : len(tok)]
        torch.testing.assert_close(ours, llama(input_ids=ids).logits, atol=1e-5, rtol=1e-5)

    # the image features: CLIP hidden state -2 without CLS, through LISA's one Linear
    clip = CLIPVisionModel.from_pretrained(tmp_path / "clip")
    if with_tower:
        prefix = "model.vision_tower.vision_tower.vision_model."
        clip.load_state_dict({k[len(prefix) :]: v for k, v in sd.items() if k.startswith(prefix)})
    pixels = torch.randn(1, 3, 32, 32)
    with torch.no_grad():
        want = F.linear(
            clip(pixels, output_hidden_states=True).hidden_states[-2][:, 1:],
            sd["model.mm_projector.weight"],
            sd["model.mm_projector.bias"],
        )
        got = model.lvlm.model.get_image_features(pixel_values=pixels)
        got = got.pooler_output if hasattr(got, "pooler_output") else got
        got = torch.cat(list(got)) if isinstance(got, (list, tuple)) else got
        torch.testing.assert_close(got.reshape(want.shape), want, atol=1e-5, rtol=1e-5)

    # ϕ and SAM's decoder carry LISA's weights; the token grid is CLIP's
    torch.testing.assert_close(model.phi[2].weight, sd["model.text_hidden_fcs.0.2.weight"])
    torch.testing.assert_close(
        model.sam.mask_decoder.iou_token.weight, sd["model.visual_model.mask_decoder.iou_token.weight"]
    )
    assert model.config.token_grid == [4, 4]


def test_lisa_prompt_format_and_a_forward_pass(tmp_path, official_sam_state_dict):
    from sim4seg.data.dataset import Collator, ExampleEncoder

    d, sam_dir, _, _ = write_lisa(tmp_path, official_sam_state_dict)
    model, processor = lisa.load_lisa(d, sam=sam_dir, trainable=True)
    text = processor.apply_chat_template(
        [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": "Q?"}]}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert text == lisa.SYSTEM + " USER: <im_start><image><im_end>\nQ? ASSISTANT:"
    enc = ExampleEncoder.for_model(model, processor)
    rng = np.random.default_rng(0)
    item = enc.encode(
        rng.integers(0, 256, (40, 64, 3), dtype=np.uint8),
        "Segment the polyp.",
        "It is [SEG].",
        rng.random((40, 64)) > 0.5,
    )
    assert int((item["input_ids"] == processor.tokenizer.convert_tokens_to_ids("<image>")).sum()) == 16
    out = model(**Collator(processor.tokenizer.pad_token_id)([item]))
    assert torch.isfinite(out.loss) and out.masks[0].shape == (1, 40, 64)
    out.loss.backward()
    lora = [p for n, p in model.named_parameters() if "lora_B" in n]
    assert lora and all(p.grad is not None for p in lora)
    assert all(p.grad is None for p in model.lvlm.model.vision_tower.parameters())  # frozen, as in LISA


def test_convert_lisa_cli_then_load_reproduces(tmp_path, official_sam_state_dict, monkeypatch):
    from sim4seg.apps.cli import main

    d, sam_dir, _, _ = write_lisa(tmp_path, official_sam_state_dict)
    assert main(["convert", "lisa", str(d), str(tmp_path / "ours"), "--sam", str(sam_dir)]) == 0
    direct, _ = lisa.load_lisa(d, sam=sam_dir, trainable=False)
    loaded, _ = checkpoint.load(tmp_path / "ours")
    for (k, a), (k2, b) in zip(direct.state_dict().items(), loaded.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k


def test_lisa_from_a_hub_id_offline(tmp_path, official_sam_state_dict, monkeypatch):
    """A hub id resolves through the Hugging Face cache (here pre-filled, offline) like a downloaded repo."""
    d, sam_dir, _, _ = write_lisa(tmp_path / "src", official_sam_state_dict)
    cache = tmp_path / "hub"
    snap = cache / "models--tiny--lisa" / "snapshots" / ("0" * 40)
    shutil.copytree(d, snap)
    (cache / "models--tiny--lisa" / "refs").mkdir(parents=True)
    (cache / "models--tiny--lisa" / "refs" / "main").write_text("0" * 40)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_CACHE", str(cache))
    import huggingface_hub.constants as hc

    monkeypatch.setattr(hc, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(hc, "HF_HUB_CACHE", str(cache))
    model, _ = lisa.load_lisa("tiny/lisa", sam=sam_dir, trainable=False)
    assert model.config.token_grid == [4, 4]
    with pytest.raises(InputError, match="hub could not provide it") as e:
        lisa.load_lisa("tiny/absent", sam=sam_dir)
    assert "tiny/absent" in str(e.value)


def test_lisa_bad_inputs_name_the_cause(tmp_path, official_sam_state_dict):
    d, sam_dir, _, _ = write_lisa(tmp_path, official_sam_state_dict)
    with pytest.raises(InputError, match="not a hub id"):
        lisa.load_lisa(str(tmp_path / "no" / "such" / "dir"), sam=sam_dir)
    cfg = json.loads((d / "config.json").read_text())
    (d / "config.json").write_text(json.dumps({k: v for k, v in cfg.items() if "vision_tower" not in k}))
    with pytest.raises(InputError, match="not a LISA config") as e:
        lisa.load_lisa(d, sam=sam_dir)
    assert "config.json" in str(e.value)
    (d / "config.json").write_text(json.dumps(cfg | {"hidden_size": 48}))  # weights are 64 wide
    with pytest.raises(InputError, match="mis-shaped key lvlm.model.language_model"):
        lisa.load_lisa(d, sam=sam_dir)
    (d / "config.json").write_text(json.dumps(cfg))
    (d / "model-00002-of-00002.safetensors").unlink()
    with pytest.raises(InputError, match="shards listed in model.safetensors.index.json are missing"):
        lisa.load_lisa(d, sam=sam_dir)


def test_lisa_with_a_base_llava_repo_gives_the_same_model(tmp_path, official_sam_state_dict):
    """``base=``: config + processor (+ CLIP weights) from an HF LLaVA repo instead of LISA's config.json."""
    d, sam_dir, _, _ = write_lisa(tmp_path, official_sam_state_dict)
    derived, processor = lisa.load_lisa(d, sam=sam_dir, trainable=False)
    derived.lvlm.save_pretrained(tmp_path / "base")
    processor.save_pretrained(tmp_path / "base")
    based, _ = lisa.load_lisa(d, sam=sam_dir, base=str(tmp_path / "base"), trainable=False)
    for (k, a), (k2, b) in zip(derived.state_dict().items(), based.state_dict().items()):
        assert k == k2 and torch.equal(a, b), k
