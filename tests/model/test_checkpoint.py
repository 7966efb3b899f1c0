"""Checkpoint round trips, LoRA merge, and the LISA / official-SAM key maps on tiny state dicts."""

from __future__ import annotations

import json
import re

import pytest
import torch

from sim4seg.errors import InputError
from sim4seg.model import checkpoint, keymaps


def test_official_sam_keys_round_trip(tiny, official_sam_state_dict):
    model, _ = tiny
    official = official_sam_state_dict(model.sam)
    # spot-check that these are the official names
    for key in (
        "image_encoder.blocks.0.norm1.weight",
        "image_encoder.blocks.1.attn.rel_pos_h",
        "image_encoder.neck.0.weight",
        "prompt_encoder.mask_downscaling.6.bias",
        "prompt_encoder.point_embeddings.3.weight",
        "prompt_encoder.pe_layer.positional_encoding_gaussian_matrix",
        "mask_decoder.output_upscaling.3.weight",
        "mask_decoder.iou_prediction_head.layers.2.bias",
        "mask_decoder.transformer.layers.1.norm4.weight",
        "mask_decoder.transformer.norm_final_attn.weight",
        "mask_decoder.output_hypernetworks_mlps.3.layers.1.weight",
    ):
        assert key in official, key
    converted, unexpected = keymaps.convert_sam(official)
    target = model.sam.state_dict()
    assert unexpected == [] and keymaps.check_against(converted, target, []) == []
    for k, v in target.items():
        torch.testing.assert_close(converted[k], v + 0.5)


def test_sam_file_conversion_and_problem_report(tiny, tmp_path, official_sam_state_dict):
    model, _ = tiny
    official = official_sam_state_dict(model.sam)
    torch.save(official, tmp_path / "sam_tiny.pth")
    model.sam.config.save_pretrained(tmp_path / "base")
    out = checkpoint.convert_sam_file(tmp_path / "sam_tiny.pth", tmp_path / "hf", base=tmp_path / "base")
    from transformers import SamModel

    loaded = SamModel.from_pretrained(out)
    torch.testing.assert_close(loaded.mask_decoder.iou_token.weight, model.sam.mask_decoder.iou_token.weight + 0.5)
    bad = dict(official)
    bad["image_encoder.neck.0.weight"] = torch.zeros(3, 3)
    bad["image_encoder.extra.weight"] = torch.zeros(1)
    del bad["mask_decoder.iou_token.weight"]
    torch.save(bad, tmp_path / "bad.pth")
    with pytest.raises(InputError) as e:
        checkpoint.convert_sam_file(tmp_path / "bad.pth", tmp_path / "hf2", base=tmp_path / "base")
    msg = str(e.value)
    assert "mis-shaped key vision_encoder.neck.conv1.weight" in msg and "image_encoder.extra.weight" in msg
    assert "missing key mask_decoder.iou_token.weight" in msg


def lisa_state_dict(model, peft: bool, official_sam_state_dict) -> dict[str, torch.Tensor]:
    """Our tiny model's weights under LISA's real key names (optionally PEFT-wrapped with LoRA pairs)."""
    sd = {k.replace(".base_layer.", "."): v.clone() for k, v in model.state_dict().items() if "lora_" not in k}
    out = {}
    for k, v in sd.items():
        if k.startswith("lvlm.model.language_model."):
            out["model." + k[len("lvlm.model.language_model.") :]] = v
        elif k == "lvlm.lm_head.weight":
            out["lm_head.weight"] = v
        elif k.startswith("lvlm.model.multi_modal_projector.linear_"):
            i = {"1": 0, "2": 2}[k.split("linear_")[1][0]]
            out[f"model.mm_projector.{i}.{k.rsplit('.', 1)[1]}"] = v
        elif k.startswith("lvlm.model.vision_tower."):
            out["model.vision_tower.vision_tower." + k[len("lvlm.model.vision_tower.") :]] = v
        elif k.startswith("phi."):
            out["model.text_hidden_fcs.0." + k[len("phi.") :]] = v
    for k, v in official_sam_state_dict(model.sam).items():
        out["model.visual_model." + k] = v - 0.5
    if peft:
        wrapped = {}
        for k, v in out.items():
            if re.search(r"self_attn\.(q|v)_proj\.weight$", k):
                stem = k[: -len(".weight")]
                wrapped[f"base_model.model.{stem}.base_layer.weight"] = v
                wrapped[f"base_model.model.{stem}.lora_A.weight"] = torch.ones(8, v.shape[1]) * 0.01
                wrapped[f"base_model.model.{stem}.lora_B.weight"] = torch.ones(v.shape[0], 8) * 0.02
            else:
                wrapped["base_model.model." + k] = v
        out = wrapped
    return out


@pytest.mark.parametrize("peft", [False, True])
def test_lisa_keys_round_trip(tiny, peft, official_sam_state_dict):
    model, _ = tiny
    lisa = lisa_state_dict(model, peft, official_sam_state_dict)
    converted, unexpected = keymaps.convert_lisa(lisa, lora_alpha=16, lora_r=8)
    target = {k: v for k, v in model.state_dict().items() if "lora_" not in k}
    target = {k.replace(".base_layer.", "."): v for k, v in target.items()}
    assert unexpected == [] and keymaps.check_against(converted, target, []) == []
    q = "lvlm.model.language_model.layers.0.self_attn.q_proj.weight"
    base = model.lvlm.model.language_model.layers[0].self_attn.q_proj.base_layer.weight
    delta = (torch.ones(base.shape[0], 8) * 0.02) @ (torch.ones(8, base.shape[1]) * 0.01) * 2.0 if peft else 0.0
    torch.testing.assert_close(converted[q], base + delta)
    torch.testing.assert_close(converted["phi.2.bias"], model.phi[2].bias)
    torch.testing.assert_close(converted["sam.mask_decoder.iou_token.weight"], model.sam.mask_decoder.iou_token.weight)


def test_vocab_rows_are_matched_by_token():
    w = torch.arange(6.0).reshape(3, 2)
    out = keymaps.remap_vocab_rows(w, {"a": 0, "[SEG]": 2}, {"a": 1, "[SEG]": 0, "new": 2}, torch.full((3, 2), -1.0))
    assert out.tolist() == [[4.0, 5.0], [0.0, 1.0], [-1.0, -1.0]]


def test_save_load_reproduces_outputs_and_merge_keeps_them(tiny, batch_of, tmp_path):
    model, processor = tiny
    with torch.no_grad():  # make LoRA matter
        for n, p in model.named_parameters():
            if "lora_B" in n:
                p.normal_(0, 0.05)
    model.eval()
    batch = batch_of(model, processor, ["It is [SEG]."], sizes=[(40, 64)])
    with torch.no_grad():
        before = model(**batch)
    checkpoint.save(model, processor, tmp_path / "ckpt")
    assert (tmp_path / "ckpt" / "adapter" / "adapter_model.safetensors").is_file()
    loaded, proc2 = checkpoint.load(tmp_path / "ckpt")
    assert proc2.tokenizer.convert_tokens_to_ids("[SEG]") == model.seg_token_id
    with torch.no_grad():
        after = loaded(**batch)
    assert torch.equal(before.logits, after.logits) and torch.equal(before.masks[0], after.masks[0])
    checkpoint.merge(tmp_path / "ckpt", tmp_path / "merged")
    merged, _ = checkpoint.load(tmp_path / "merged")
    assert not any("lora_" in n for n, _ in merged.named_parameters())
    with torch.no_grad():
        m = merged(**batch)
    torch.testing.assert_close(m.logits, before.logits, atol=1e-4, rtol=1e-4)


def test_load_refuses_other_architectures(tiny, tmp_path):
    model, processor = tiny
    with pytest.raises(InputError, match="not a Sim4Seg checkpoint"):
        checkpoint.load(tmp_path)
    checkpoint.save(model, processor, tmp_path / "c")
    cfg = json.loads((tmp_path / "c" / "sim4seg_config.json").read_text())
    cfg["model_type"] = "lisa"
    (tmp_path / "c" / "sim4seg_config.json").write_text(json.dumps(cfg))
    with pytest.raises(InputError, match="model_type"):
        checkpoint.load(tmp_path / "c")
    cfg["model_type"] = "sim4seg"
    (tmp_path / "c" / "sim4seg_config.json").write_text(json.dumps(cfg))
    lv = json.loads((tmp_path / "c" / "lvlm" / "config.json").read_text())
    (tmp_path / "c" / "lvlm" / "config.json").write_text(json.dumps(lv["text_config"] | {"model_type": "llama"}))
    with pytest.raises(InputError, match=r"lvlm: unsupported LVLM 'llama'; supported: LLaVA-family \(llava"):
        checkpoint.load(tmp_path / "c")
    (tmp_path / "c" / "lvlm" / "config.json").write_text(json.dumps(lv))
    sam_cfg = json.loads((tmp_path / "c" / "sam" / "config.json").read_text())
    (tmp_path / "c" / "sam" / "config.json").write_text(json.dumps(sam_cfg | {"model_type": "detr"}))
    with pytest.raises(InputError, match=r"sam: unsupported segmenter 'detr'; supported: SAM \(sam\)"):
        checkpoint.load(tmp_path / "c")
