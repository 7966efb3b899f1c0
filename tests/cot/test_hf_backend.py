"""The in-process backend with a tiny randomly initialised LLaVA and a tokenizer built here."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cot_helpers import generate_args
from sim4seg.apps.cli import main
from sim4seg.cot.backends.hf import HFBackend
from sim4seg.cot.images import ImageInput
from sim4seg.cot.store import read_records

WORDS = (
    "the a an image is of this x-ray ultrasound endoscopy dermoscopy shows lesion polyp benign malignant "
    "diagnosis : . , modality findings verdict accept reject reasons none normal fracture"
).split()
TEMPLATE = (
    "{% for m in messages %}{{ m['role'] }}: {% if m['content'] is string %}{{ m['content'] }}"
    "{% else %}{% for c in m['content'] %}{% if c['type'] == 'image' %}<image> {% else %}{{ c['text'] }}"
    "{% endif %}{% endfor %}{% endif %}\n{% endfor %}{% if add_generation_prompt %}assistant: {% endif %}"
)


@pytest.fixture(scope="module")
def tiny_llava(tmp_path_factory):
    """Save a 2-layer LLaVA (CLIP vision 28 px / patch 14, Llama text) and its processor; return the dir."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import (
        CLIPVisionConfig,
        LlamaConfig,
        LlavaConfig,
        LlavaForConditionalGeneration,
        LlavaProcessor,
        PreTrainedTokenizerFast,
    )
    from transformers.models.clip.image_processing_pil_clip import CLIPImageProcessorPil

    vocab = {"<pad>": 0, "<s>": 1, "</s>": 2, "<unk>": 3, "<image>": 4}
    for w in WORDS + list("abcdefghijklmnopqrstuvwxyz0123456789"):
        vocab.setdefault(w, len(vocab))
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    tok.decoder = decoders.WordPiece(prefix="##")
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        bos_token="<s>",
        eos_token="</s>",
        unk_token="<unk>",
        pad_token="<pad>",
        extra_special_tokens={"image_token": "<image>"},
    )
    images = CLIPImageProcessorPil(size={"shortest_edge": 28}, crop_size={"height": 28, "width": 28})
    processor = LlavaProcessor(
        image_processor=images,
        tokenizer=tokenizer,
        patch_size=14,
        vision_feature_select_strategy="default",
        chat_template=TEMPLATE,
        num_additional_image_tokens=1,
    )
    config = LlavaConfig(
        vision_config=CLIPVisionConfig(
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            image_size=28,
            patch_size=14,
            projection_dim=32,
        ),
        text_config=LlamaConfig(
            vocab_size=len(vocab),
            hidden_size=32,
            intermediate_size=64,
            num_hidden_layers=2,
            num_attention_heads=2,
            num_key_value_heads=2,
            max_position_embeddings=1024,
            pad_token_id=0,
            bos_token_id=1,
            eos_token_id=2,
        ),
        image_token_index=4,
        vision_feature_select_strategy="default",
        vision_feature_layer=-2,
    )
    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("tiny-llava")
    LlavaForConditionalGeneration(config).save_pretrained(path)
    processor.save_pretrained(path)
    return path


def test_generate_decodes_new_tokens_deterministically(tiny_llava):
    backend = HFBackend.from_pretrained(tiny_llava, device="cpu", dtype="float32")
    backend.preflight()
    image = ImageInput(np.random.default_rng(0).integers(0, 255, (40, 52, 3), dtype=np.uint8))
    a = backend.generate(
        "You are a medical assistant.", "this image shows a lesion", image, max_tokens=6, temperature=0.0
    )
    b = backend.generate(
        "You are a medical assistant.", "this image shows a lesion", image, max_tokens=6, temperature=0.0
    )
    assert isinstance(a, str) and a == b and a
    assert "medical assistant" not in a and "assistant:" not in a  # only the new tokens
    assert 1 <= len(a.split()) <= 6
    sampled = backend.generate("s", "t", image, max_tokens=6, temperature=1.0)
    assert isinstance(sampled, str)


def test_generate_command_with_the_in_process_backend(tiny_llava, manifest, train, tmp_path):
    out = tmp_path / "out"
    assert (
        main(
            generate_args(
                str(manifest),
                str(out),
                "--backend",
                "hf",
                "--model",
                str(tiny_llava),
                "--dtype",
                "float32",
                "--max-rounds",
                "2",
                "--max-tokens",
                "8",
                "--critic-max-tokens",
                "4",
                "--limit",
                "3",
                "--concurrency",
                "2",
                "--no-progress",
            )
        )
        == 0
    )
    recs = list(read_records(out / "results.jsonl"))
    assert [r["id"] for r in recs] and sorted(r["id"] for r in recs) == sorted(s.id for s in train[:3])
    for r in recs:
        # A random model never writes "Diagnosis: <label>.", so the format check rejects every round.
        assert r["status"] == "queued" and r["rounds"] == 2 and r["model"] == str(tiny_llava)
        assert [h["by"] for h in r["history"]] == ["check", "check"]
        assert "must end with a final line 'Diagnosis:" in r["critic_notes"][0]


def test_missing_model_dir_is_a_preflight_error(tmp_path, capsys, manifest):
    assert (
        main(generate_args(manifest, str(tmp_path / "o"), "--backend", "hf", "--model", str(tmp_path / "nothing"))) == 2
    )
    assert "model directory not found" in capsys.readouterr().err
