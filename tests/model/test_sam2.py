"""SAM2 (``Sam2Model``): the adapter against Sam2Model's own path, its square frame end to end, its published
configs and the inputs it refuses. The full preset path (encoding, forward/backward, a 400-token CoT, m×n TTS,
save → load) runs in test_presets_shrunk.py."""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from sim4seg.data.transforms import SegmenterFrame
from sim4seg.errors import InputError
from sim4seg.model import checkpoint, rvls2m
from sim4seg.model.backbones import SEGMENTER_ADAPTERS, segmenter_adapter
from sim4seg.model.backbones import sam2 as sam2_module
from sim4seg.model.backbones.sam2 import SAM2_FRAME, VARIANTS, Sam2Embeddings

PRESET = "llava-1.5-7b+sam2.1-hiera-large"
REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def segmenter():
    torch.manual_seed(0)
    torch.set_num_threads(1)
    sam = sam2_module.shrunk(VARIANTS["sam2.1-hiera-tiny"]).eval()
    return sam, segmenter_adapter(sam)


@pytest.fixture(scope="module")
def shrunk():
    from sim4seg.model.shrink import build_shrunk

    torch.set_num_threads(1)
    model, processor = build_shrunk(PRESET, seed=0)
    return model.eval(), processor


def test_decode_is_sam2models_own_mask_path(segmenter):
    """Our decode with the prompt encoder's sparse tokens and a dense mask equals ``Sam2Model.forward``: the high-
    resolution features, the no-memory embedding and the positional embedding are all where Sam2Model puts them."""
    sam, a = segmenter
    pixels = torch.randn(2, 3, 1024, 1024)
    points = torch.tensor([[[[300.0, 500.0]]], [[[800.0, 100.0]]]])
    labels = torch.ones(2, 1, 1, dtype=torch.int32)
    mask = torch.randn(2, 1, 256, 256)
    sam.mask_decoder.dynamic_multimask_via_stability = False  # what decode sets: token 0 in every mode
    with torch.no_grad():
        ref = sam(
            pixel_values=pixels, input_points=points, input_labels=labels, input_masks=mask, multimask_output=False
        )
        emb = a.encode(sam, pixels)
        sparse, _ = sam.prompt_encoder(input_points=points, input_labels=labels, input_boxes=None, input_masks=None)
        low, iou = a.decode(sam, emb, sparse, mask)
    torch.testing.assert_close(low, ref.pred_masks[:, 0, 0], atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(iou, ref.iou_scores[:, 0, 0], atol=1e-5, rtol=1e-5)
    assert emb.image.shape == (2, 32, 64, 64)
    assert [tuple(f.shape) for f in emb.high_res] == [(2, 4, 256, 256), (2, 8, 128, 128)]


def test_decode_reads_the_trained_mask_token_in_eval_mode_too(segmenter):
    """Sam2MaskDecoder's eval-mode default may swap token 0 for a multimask output ϕ(E_seg) never trained."""
    sam, a = segmenter
    torch.manual_seed(3)
    emb = a.encode(sam, torch.randn(2, 3, 1024, 1024))
    sparse, mask = torch.randn(2, 1, 1, 32), torch.randn(2, 1, 256, 256)
    sam.mask_decoder.dynamic_multimask_via_stability = True  # transformers' default
    with torch.no_grad():
        sam.eval()
        low_eval, iou_eval = a.decode(sam, emb, sparse, mask)
        sam.train()
        low_train, iou_train = a.decode(sam, emb, sparse, mask)
        sam.eval()
    torch.testing.assert_close(low_eval, low_train)
    torch.testing.assert_close(iou_eval, iou_train)
    assert sam.mask_decoder.dynamic_multimask_via_stability is False


def test_select_and_expand_keep_the_high_resolution_features_with_their_image(segmenter):
    sam, a = segmenter
    pixels = torch.randn(3, 3, 1024, 1024)
    with torch.no_grad():
        emb = a.encode(sam, pixels)
        one = a.encode(sam, pixels[2:3])
        sparse = torch.randn(4, 1, 1, 32)
        picked = a.select(emb, torch.tensor([2, 0, 2]))
        assert isinstance(picked, Sam2Embeddings) and picked.shape[0] == 3
        for got, want in zip((picked.image, *picked.high_res), (emb.image, *emb.high_res)):
            assert torch.equal(got, want[[2, 0, 2]])
        many, _ = a.decode(sam, a.expand(one, 4), sparse, None)  # one image against four prompts
        single = [a.decode(sam, one, sparse[i : i + 1], None)[0] for i in range(4)]
    torch.testing.assert_close(many, torch.cat(single), atol=1e-5, rtol=1e-5)
    torch.testing.assert_close(picked.image[0], one.image[0], atol=1e-4, rtol=1e-4)  # batch of 3 = batch of 1


def test_a_sam2_video_checkpoint_loads_as_the_image_segmenter(tmp_path):
    """Hub repos serve Sam2Model and Sam2VideoModel from one checkpoint: a ``sam2_video`` one is found by the SAM2
    adapter and loads with every image-model weight as saved."""
    from transformers import AutoConfig, Sam2VideoConfig, Sam2VideoModel

    cfg = sam2_module.shrunk(VARIANTS["sam2.1-hiera-tiny"]).config
    subs = {k: getattr(cfg, k).to_dict() for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
    torch.manual_seed(3)
    video = Sam2VideoModel(Sam2VideoConfig(**subs))
    video.save_pretrained(tmp_path / "v")
    a = segmenter_adapter(AutoConfig.from_pretrained(tmp_path / "v"))
    sam = a.from_pretrained(tmp_path / "v")
    a.check(sam)
    assert a.name == "SAM2" and type(sam).__name__ == "Sam2Model"
    saved = video.state_dict()
    for k, v in sam.state_dict().items():
        assert torch.equal(v, saved[k]), k


def test_the_square_frame_is_sam2s_image_processor():
    """The installed ``Sam2ImageProcessor`` (it needs torchvision, so its class attributes are read from its source)
    stretches to {height, width} 1024 without padding, with ImageNet mean / std, bilinear: ``SAM2_FRAME``."""
    from transformers import image_utils

    source = importlib.util.find_spec("transformers.models.sam2.image_processing_sam2").origin
    tree = ast.parse(Path(source).read_text(encoding="utf-8"))
    cls = next(n for n in tree.body if isinstance(n, ast.ClassDef) and n.name == "Sam2ImageProcessor")
    attrs = {}
    for node in cls.body:
        name = node.targets[0].id if isinstance(node, ast.Assign) and isinstance(node.targets[0], ast.Name) else ""
        if name in ("size", "resample", "image_mean", "image_std", "do_rescale", "do_normalize", "do_pad", "pad_size"):
            value = node.value
            if isinstance(value, ast.Name):  # IMAGENET_DEFAULT_MEAN …
                attrs[node.targets[0].id] = getattr(image_utils, value.id)
            elif isinstance(value, ast.Attribute):  # PILImageResampling.BILINEAR
                attrs[node.targets[0].id] = int(getattr(image_utils.PILImageResampling, value.attr))
            else:
                attrs[node.targets[0].id] = ast.literal_eval(value)
    assert len(attrs) == 8 and attrs["size"] == {"height": 1024, "width": 1024} and attrs["do_pad"] is None
    frame = SegmenterFrame.from_processor_config(attrs)
    assert frame == SAM2_FRAME and frame.resize == "square"
    # written back with SAM2's keys, read back the same
    d = frame.to_processor_config()
    assert d["image_processor_type"] == "Sam2ImageProcessor" and d["size"] == {"height": 1024, "width": 1024}
    assert "pad_size" not in d and "do_pad" not in d and SegmenterFrame.from_processor_config(d) == frame
    # the pixels: the whole image stretched over the square, normalised
    image = np.random.default_rng(0).integers(0, 256, (300, 800, 3), dtype=np.uint8)
    want = np.asarray(Image.fromarray(image).resize((1024, 1024), Image.BILINEAR), np.float32) / 255
    want = (want - np.array(frame.image_mean, np.float32)) / np.array(frame.image_std, np.float32)
    torch.testing.assert_close(frame(image), torch.from_numpy(want).permute(2, 0, 1))
    assert frame.resized_size((300, 800)) == (1024, 1024)
    # a hub-style file (the fast processor, unset keys as null) and an early one stating a longest edge: SAM2's
    # processors stretch either way
    hub = {**d, "image_processor_type": "Sam2ImageProcessorFast", "do_pad": None, "pad_size": None}
    assert SegmenterFrame.from_processor_config(hub) == frame
    early = {"image_processor_type": "Sam2ImageProcessorFast", "size": {"longest_edge": 1024}}
    assert SegmenterFrame.from_processor_config(early) == frame
    assert SegmenterFrame().resized_size((300, 800)) == (384, 1024)


@pytest.mark.parametrize("size", [(300, 800), (800, 320), (2304, 2880)])
def test_a_rectangle_region_round_trips_through_the_square_frame(shrunk, size):
    """RVLS2M cells → SAM2's dense prompt (square frame) → read as mask logits → ``postprocess`` at the original
    size gives back exactly the rectangle the cells cover; SAM's padded frame would put it elsewhere."""
    model, _ = shrunk
    h, w = size
    cells = torch.zeros(1, 16, 16, dtype=torch.bool)
    cells[0, 4:12, 2:10] = True
    prompt = model.prompt(cells, torch.tensor([[h, w]]), torch.tensor([[0.0, 0.0, w, h]]), pool="image")
    assert prompt.shape == (1, 1, 256, 256)
    assert torch.equal(prompt[0, 0] > 0, cells[0].repeat_interleave(16, 0).repeat_interleave(16, 1))
    mask = model.postprocess(prompt[:, 0] * 2 - 1, torch.tensor([[h, w]]))[0] > 0
    y0, y1, x0, x1 = 4 * h // 16, 12 * h // 16, 2 * w // 16, 10 * w // 16
    want = torch.zeros(h, w, dtype=torch.bool)
    want[y0:y1, x0:x1] = True
    rows, cols = mask.any(1).nonzero().flatten(), mask.any(0).nonzero().flatten()
    assert (int(rows[0]), int(rows[-1]) + 1, int(cols[0]), int(cols[-1]) + 1) == (y0, y1, x0, x1)  # exact edges
    assert not bool((mask & ~want).any())  # nothing outside the rectangle
    assert int((want & ~mask).sum()) < 1e-3 * int(want.sum())  # inside: all but the bilinear-rounded corners
    padded = rvls2m.to_sam_prompt(cells, (h, w), resize="longest")  # SAM's frame for the same cells
    assert not torch.equal(padded, prompt)
    with pytest.raises(ValueError, match="resize must be 'longest' or 'square', got 'pad'"):
        rvls2m.to_sam_prompt(cells, (h, w), resize="pad")
    with pytest.raises(ValueError, match="resize must be one of"):
        SegmenterFrame(resize="pad")


def test_segment_through_the_model_uses_the_adapters_selection(shrunk):
    """Two images encoded together; segmenting image 1 alone and through a batch index gives the same mask."""
    from sim4seg.data.dataset import ExampleEncoder

    model, processor = shrunk
    enc = ExampleEncoder.for_model(model, processor)
    rng = np.random.default_rng(0)
    xs = [enc.image_inputs(rng.integers(0, 256, s + (3,), dtype=np.uint8)) for s in [(200, 330), (310, 150)]]
    stack = {
        k: torch.stack([x[k] for x in xs]) for k in ("pixel_values", "sam_pixel_values", "image_size", "token_box")
    }
    with torch.no_grad():
        both = model.encode_image(
            stack["pixel_values"], stack["sam_pixel_values"], stack["image_size"], stack["token_box"]
        )
        seg_hidden = torch.randn(2, model.lvlm_adapter.hidden_size(model.lvlm))
        a = model.segment(both, seg_hidden, torch.tensor([1, 1]), use_rvls2m=False)
        alone = both.index(torch.tensor([1]))
        assert isinstance(alone.sam_embeddings, Sam2Embeddings)
        b = model.segment(alone, seg_hidden, torch.tensor([0, 0]), use_rvls2m=False)
    assert [tuple(m.shape) for m in a.masks] == [(310, 150)] * 2
    torch.testing.assert_close(torch.stack(a.masks), torch.stack(b.masks), atol=0, rtol=0)


def _copy(tmp_path, model, processor):
    c = tmp_path / "c"
    checkpoint.save(model, processor, c)
    return c


def test_bad_segmenter_inputs_are_refused(shrunk, tmp_path):
    model, processor = shrunk
    c = _copy(tmp_path, model, processor)
    pre = c / "sam" / "preprocessor_config.json"
    pre.unlink()
    with pytest.raises(InputError, match=r"sam: the segmenter's processor config is missing \(preprocessor_config"):
        checkpoint.load(c)
    json.dump(SegmenterFrame().to_processor_config(), pre.open("w"))  # SAM's padded frame on a SAM2 model
    with pytest.raises(
        InputError,
        match=r"preprocessor_config.json: the segmenter's processor config is 'longest'-resize preprocessing but a "
        r"SAM2 model needs 'square' \(Sam2ImageProcessor",
    ):
        checkpoint.load(c)
    json.dump(SegmenterFrame(size=512, resize="square").to_processor_config(), pre.open("w"))
    with pytest.raises(InputError, match="resizes to 512 px but its model takes 1024 px"):
        checkpoint.load(c)
    bad = {**SAM2_FRAME.to_processor_config(), "size": {"height": 1024, "width": 768}}
    json.dump(bad, pre.open("w"))
    with pytest.raises(InputError, match=r"preprocessor_config.json: segmenter preprocessing: size .* is not square"):
        checkpoint.load(c)
    json.dump({**SAM2_FRAME.to_processor_config(), "do_pad": True}, pre.open("w"))
    with pytest.raises(InputError, match="with do_pad: true is inconsistent"):
        checkpoint.load(c)
    json.dump(SAM2_FRAME.to_processor_config(), pre.open("w"))
    cfg = json.loads((c / "sam" / "config.json").read_text())
    cfg["model_type"] = "sam3_tracker"
    (c / "sam" / "config.json").write_text(json.dumps(cfg))
    with pytest.raises(
        InputError,
        match=r"sam: unsupported segmenter 'sam3_tracker'; supported: SAM \(sam\); SAM2 \(sam2, sam2_video\)",
    ):
        checkpoint.load(c)
    shutil.rmtree(c)


def test_a_sam2_model_refuses_sams_frame_and_a_sam_model_sam2s(shrunk):
    from sim4seg.model.sim4seg import Sim4SegModel

    model, _ = shrunk
    with pytest.raises(InputError, match="needs 'square'"):
        Sim4SegModel(model.lvlm, model.sam, model.config, seg_token_id=model.seg_token_id, sam_frame=SegmenterFrame())
    default = Sim4SegModel(model.lvlm, model.sam, model.config, seg_token_id=model.seg_token_id)
    assert default.sam_frame == SAM2_FRAME  # without a processor config: the family's own frame
    assert [a.name for a in SEGMENTER_ADAPTERS] == ["SAM", "SAM2"]


def test_published_sam2_variants_build_with_their_geometry():
    """The four SAM 2.1 configs instantiate (meta device) with the real geometry, and with SAM2's video memory
    added (transformers' ``Sam2VideoModel`` on the same sub-configs) they have the parameter counts the official
    SAM 2.1 release publishes: 38.9 M, 46 M, 80.8 M, 224.4 M (facebookresearch/sam2 README, one decimal)."""
    from transformers import Sam2Model, Sam2VideoConfig, Sam2VideoModel

    from sim4seg.model import published

    published_m = {
        "sam2.1-hiera-tiny": "38.9",
        "sam2.1-hiera-small": "46.0",
        "sam2.1-hiera-base-plus": "80.8",
        "sam2.1-hiera-large": "224.4",
    }
    for name, v in VARIANTS.items():
        cfg = sam2_module.config(v)
        subs = {k: getattr(cfg, k).to_dict() for k in ("vision_config", "prompt_encoder_config", "mask_decoder_config")}
        with torch.device("meta"):
            sam, video = Sam2Model(cfg), Sam2VideoModel(Sam2VideoConfig(**subs))
        total = sum(p.numel() for p in video.parameters())
        assert f"{total // 100_000 / 10:.1f}" == published_m[name], (name, total)
        bb = cfg.vision_config.backbone_config
        assert bb.embed_dim_per_stage == v.widths and cfg.vision_config.backbone_channel_list == v.widths[::-1]
        a = segmenter_adapter(sam)
        assert (a.image_size(sam), a.prompt_size(sam), a.prompt_dim(sam)) == (1024, 256, 256)
    assert published.sam2_1_hiera_large().to_dict() == sam2_module.config(VARIANTS["sam2.1-hiera-large"]).to_dict()


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``sim4seg model build llava-1.5-7b+sam2.1-hiera-large --shrink --out DIR`` run once."""
    from sim4seg.apps.cli import main

    out = tmp_path_factory.mktemp("shrunk2") / "ckpt"
    torch.set_num_threads(1)
    assert main(["model", "build", PRESET, "--shrink", "--out", str(out)]) == 0
    return out


def test_shrunk_sam2_build_loads_as_a_checkpoint_and_as_a_preset(built):
    from sim4seg.model.presets import from_preset

    model, processor = checkpoint.load(built)
    assert type(model.sam).__name__ == "Sam2Model" and model.sam_frame == SAM2_FRAME
    hub_frame = json.loads((built / "hub" / "sam" / "preprocessor_config.json").read_text())
    assert hub_frame["image_processor_type"] == "Sam2ImageProcessor" and hub_frame["size"]["height"] == 1024
    again, _ = from_preset(PRESET, lvlm=str(built / "hub" / "lvlm"), sam=str(built / "hub" / "sam"))
    assert again.sam_frame == SAM2_FRAME
    sd, sd2 = model.state_dict(), again.state_dict()
    for k in ("sam.vision_encoder.backbone.patch_embed.projection.weight", "sam.mask_decoder.conv_s0.weight"):
        assert torch.equal(sd[k], sd2[k]), k
    from sim4seg.model.info import checkpoint_info

    info = checkpoint_info(built)["sam"]  # `model info`: Hiera's 4 stages of 1 block, last width 64, stride 4
    assert (info["type"], info["image_size"], info["patch"], info["layers"], info["hidden"]) == ("sam2", 1024, 4, 4, 64)


def test_predict_serve_and_train_on_the_shrunk_sam2_build(built, synth_m3ds, tmp_path, capsys):
    from sim4seg.apps.cli import main
    from sim4seg.data.io import write_image

    image = tmp_path / "x.png"
    write_image(image, np.random.default_rng(0).integers(0, 256, (230, 370, 3), dtype=np.uint8))
    args = ["predict", "--checkpoint", str(built), "--out", str(tmp_path / "out"), "--image", str(image)]
    args += ["--query", "Segment the polyp.", "--max-new-tokens", "4", "--m", "2", "--n", "2"]
    assert main(args) == 0
    rec = json.loads(next((tmp_path / "out").glob("*.json")).read_text())
    assert "answer" in rec
    from sim4seg.serve.engine import Engine, result_json  # `sim4seg serve`'s engine on the same checkpoint

    engine = Engine.from_checkpoint(built, max_new_tokens=4)
    res = engine.segment(np.zeros((120, 90, 3), np.uint8), "Segment the polyp.", tts=engine.tts_config(m=2, n=2))
    assert "answer" in result_json(res) and engine.info()["name"] == "sim4seg"
    run = tmp_path / "run"
    sets = [
        f"model.preset={PRESET}",
        f"model.lvlm={built / 'hub' / 'lvlm'}",
        f"model.sam={built / 'hub' / 'sam'}",
        "model.max_length=null",
        "model.trainable.llm=false",
        "model.trainable.vision_tower=false",
        "model.trainable.sam_encoder=false",
        f"data.manifest={synth_m3ds}",
        f"train.output_dir={run}",
        "optim.batch_size=1",
        "train.max_steps=1",
        "train.progress=false",
        "data.val_split=null",
    ]
    assert main(["train", "--config", str(REPO / "configs" / "tiny-cpu.yaml"), "--set", *sets]) == 0
    assert "trained 1 step(s)" in capsys.readouterr().out
    trained, _ = checkpoint.load(run / "final")
    assert type(trained.sam).__name__ == "Sam2Model" and trained.sam_frame == SAM2_FRAME
    before = checkpoint.load(built)[0].state_dict()["sam.mask_decoder.conv_s0.weight"]
    assert not torch.equal(trained.state_dict()["sam.mask_decoder.conv_s0.weight"], before)  # it trained


# ---------------------------------------------------------------------------- official SAM 2 checkpoints


def _official_sam2_name(hf: str) -> str:
    """HF Sam2Model key → the official facebookresearch/sam2 key (written out here, independently of keymaps)."""
    if hf == "no_memory_embedding":
        return "no_mem_embed"
    prefixes = [
        ("vision_encoder.backbone.", "image_encoder.trunk."),
        ("vision_encoder.neck.", "image_encoder.neck."),
        ("prompt_encoder.", "sam_prompt_encoder."),
        ("mask_decoder.", "sam_mask_decoder."),
    ]
    a, b = next((a, b) for a, b in prefixes if hf.startswith(a))
    key = b + hf[len(a) :]
    key = re.sub(r"^image_encoder\.neck\.convs\.(\d+)\.", r"image_encoder.neck.convs.\1.conv.", key)
    words = {
        "patch_embed.projection.": "patch_embed.proj.",
        "shared_embedding.positional_embedding": "pe_layer.positional_encoding_gaussian_matrix",
        "mask_embed.conv1.": "mask_downscaling.0.",
        "mask_embed.layer_norm1.": "mask_downscaling.1.",
        "mask_embed.conv2.": "mask_downscaling.3.",
        "mask_embed.layer_norm2.": "mask_downscaling.4.",
        "mask_embed.conv3.": "mask_downscaling.6.",
        "upscale_conv1.": "output_upscaling.0.",
        "upscale_layer_norm.": "output_upscaling.1.",
        "upscale_conv2.": "output_upscaling.3.",
        "layer_norm_final_attn.": "norm_final_attn.",
        ".o_proj.": ".out_proj.",
    }
    for a, b in words.items():
        key = key.replace(a, b)
    key = re.sub(r"\.layer_norm(\d)\.", r".norm\1.", key)
    key = re.sub(r"\.mlp\.proj_in\.", ".mlp.layers.0.", key)  # 2-layer MLPs (Hiera blocks, two-way transformer)
    key = re.sub(r"\.mlp\.proj_out\.", ".mlp.layers.1.", key)
    m = re.match(r"^(.*(?:output_hypernetworks_mlps\.\d+|iou_prediction_head|pred_obj_score_head))\.(.*?)\.(\w+)$", key)
    if m:  # 3-layer MLPs
        layer = {"proj_in": "layers.0", "layers.0": "layers.1", "proj_out": "layers.2"}[m.group(2)]
        key = f"{m.group(1)}.{layer}.{m.group(3)}"
    return key


VIDEO_ONLY = {  # a few of SAM2's video-memory tensors, which the conversion must drop
    "memory_attention.layers.0.self_attn.q_proj.weight": (8, 8),
    "memory_encoder.fuser.layers.0.gamma": (8,),
    "obj_ptr_proj.layers.0.weight": (8, 8),
    "obj_ptr_tpos_proj.weight": (4, 8),
    "mask_downsample.weight": (1, 1, 4, 4),
    "maskmem_tpos_enc": (7, 1, 1, 4),
    "no_mem_pos_enc": (1, 1, 8),
    "no_obj_ptr": (1, 8),
    "no_obj_embed_spatial": (1, 4),
}


def _official_sam2_file(sam, path, gen: torch.Generator) -> dict[str, torch.Tensor]:
    """``sam``'s state dict with fresh random values under the official names, saved as ``{"model": ...}`` (the
    official .pt layout); returns the values by HF name, to compare after conversion."""
    by_hf, official = {}, {}
    for k, v in sam.state_dict().items():
        if k.startswith("shared_image_embedding."):
            continue  # tied to the prompt encoder's matrix; not in official files
        by_hf[k] = torch.randn(v.shape, generator=gen)
        if k == "prompt_encoder.point_embed.weight":
            for i in range(v.shape[0]):
                official[f"sam_prompt_encoder.point_embeddings.{i}.weight"] = by_hf[k][i : i + 1].clone()
        else:
            official[_official_sam2_name(k)] = by_hf[k].clone()
    official.update({k: torch.randn(s, generator=gen) for k, s in VIDEO_ONLY.items()})
    torch.save({"model": official}, path)
    return by_hf


def test_official_sam2_checkpoints_convert_to_sam2model(tmp_path, capsys):
    from transformers import Sam2Model

    from sim4seg.apps.cli import main

    torch.manual_seed(1)
    sam = sam2_module.shrunk(VARIANTS["sam2.1-hiera-small"], layers=2)  # two blocks a stage: q-pool + plain blocks
    sam.save_pretrained(tmp_path / "base")
    want = _official_sam2_file(sam, tmp_path / "sam2.pt", torch.Generator().manual_seed(0))
    assert (
        main(["convert", "sam2", str(tmp_path / "sam2.pt"), str(tmp_path / "hf"), "--base", str(tmp_path / "base")])
        == 0
    )
    assert "wrote Sam2Model" in capsys.readouterr().out
    got = Sam2Model.from_pretrained(tmp_path / "hf").state_dict()
    for k, v in want.items():
        assert torch.equal(got[k], v), k  # every tensor in its own place (same-shaped ones included)
    assert torch.equal(
        got["shared_image_embedding.positional_embedding"], want["prompt_encoder.shared_embedding.positional_embedding"]
    )
    frame = checkpoint.read_frame(tmp_path / "hf")
    assert frame == SAM2_FRAME
    # a tensor that fits nowhere, and a checkpoint of another size, are refused by name
    bad = torch.load(tmp_path / "sam2.pt", weights_only=True)["model"]
    bad["sam_mask_decoder.extra_head.weight"] = torch.zeros(2)
    torch.save({"model": bad}, tmp_path / "bad.pt")
    with pytest.raises(
        InputError, match=r"bad.pt: SAM2 weights do not fit: unexpected key sam_mask_decoder.extra_head"
    ):
        checkpoint.convert_sam2_file(tmp_path / "bad.pt", tmp_path / "hf2", base=tmp_path / "base")
    with pytest.raises(
        InputError, match=r"sam2.pt: SAM2 weights do not fit: .*missing key vision_encoder.backbone.blocks.8"
    ):
        checkpoint.convert_sam2_file(tmp_path / "sam2.pt", tmp_path / "hf3", variant="sam2.1-hiera-tiny")
    with pytest.raises(InputError, match="unknown SAM2 variant 'hiera-xl'; known: sam2.1-hiera-tiny"):
        checkpoint.convert_sam2_file(tmp_path / "sam2.pt", tmp_path / "hf4", variant="hiera-xl")
    with pytest.raises(InputError, match="give exactly one of --base"):
        checkpoint.convert_sam2_file(tmp_path / "sam2.pt", tmp_path / "hf5")
    with pytest.raises(InputError, match="--image-size goes with --variant"):  # else dropped without a word
        checkpoint.convert_sam2_file(tmp_path / "sam2.pt", tmp_path / "hf6", base=tmp_path / "hf", image_size=512)


def test_a_512_px_medsam2_style_checkpoint_segments_in_its_own_frame(built, tmp_path):
    """MedSAM2 is SAM 2.1 Hiera-T at 512 px: converted, it composes with an LVLM, its frame and prompt follow its
    size (512 px, 32 × 32 embedding, 128-px prompt) and masks come back at the image's size."""
    from sim4seg.data.dataset import ExampleEncoder
    from sim4seg.model.presets import from_pretrained

    torch.manual_seed(2)
    sam = sam2_module.shrunk(VARIANTS["sam2.1-hiera-tiny"], image_size=512)
    sam.save_pretrained(tmp_path / "base")
    _official_sam2_file(sam, tmp_path / "medsam2.pt", torch.Generator().manual_seed(1))
    checkpoint.convert_sam2_file(tmp_path / "medsam2.pt", tmp_path / "hf", base=tmp_path / "base")
    model, processor = from_pretrained(built / "hub" / "lvlm", tmp_path / "hf")
    model.eval()
    assert (model.sam_size, model.prompt_size) == (512, 128) and model.sam_frame == SegmenterFrame(
        size=512, resize="square"
    )
    enc = ExampleEncoder.for_model(model, processor)
    x = enc.image_inputs(np.random.default_rng(0).integers(0, 256, (250, 410, 3), dtype=np.uint8))
    assert x["sam_pixel_values"].shape == (3, 512, 512)
    with torch.no_grad():
        encoding = model.encode_image(
            x["pixel_values"][None], x["sam_pixel_values"][None], x["image_size"][None], x["token_box"][None]
        )
        assert encoding.sam_embeddings.image.shape[-2:] == (32, 32)
        n = model.image_tokens
        hidden = torch.randn(1, n, model.lvlm_adapter.hidden_size(model.lvlm))
        seg = model.segment(encoding, hidden[:, 0], torch.tensor([0]), hidden, use_rvls2m=True)
    assert tuple(seg.masks[0].shape) == (250, 410) and seg.low_res.shape[-2:] == (128, 128)
