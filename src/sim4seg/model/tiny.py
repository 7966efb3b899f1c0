"""Tiny randomly initialised Sim4Seg models for the CPU: a tokenizer trained here, a tiny LLaVA and SAM.

Nothing is downloaded: the byte-level BPE tokenizer is trained on the prompt templates, the
LVLM is a tiny ``LlavaForConditionalGeneration`` (CLIP + Llama) and the segmenter a tiny
``SamModel``. ``build_tiny`` composes them (``sim4seg.model.compose``).
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

from sim4seg.data.transforms import SegmenterFrame
from sim4seg.model.backbones.llava import CHAT_TEMPLATE, IMAGE_TOKEN
from sim4seg.model.compose import compose
from sim4seg.model.config import Sim4SegConfig, TinySpec

SPECIAL_TOKENS = ("<pad>", "<s>", "</s>", "<unk>", IMAGE_TOKEN)


def default_corpus() -> list[str]:
    """Text the tiny tokenizer is trained on: every query/answer template over the paper's subsets."""
    from sim4seg.data import prompts
    from sim4seg.data.subsets import MODALITY_NAMES, SUBSETS

    texts = ["USER: ASSISTANT:"]
    for info in SUBSETS.values():
        for t in prompts.QUERY_TEMPLATES:
            texts.append(t.format(target=info.target, modality=MODALITY_NAMES[info.modality]))
        for label in info.labels:
            texts += [d.format(label=label) for d in prompts.DIAGNOSIS_TEMPLATES]
            texts.append(prompts.diagnosis_line(label))
    return texts + [prompts.PLAIN_ANSWER]


def build_tiny_tokenizer(
    texts: Iterable[str] | None = None,
    vocab_size: int = 600,
    *,
    extra_special: Iterable[str] = (),
    chat_template: str = CHAT_TEMPLATE,
    image_token: str = IMAGE_TOKEN,
    eos_token: str = "</s>",
    pad_token: str = "<pad>",
):
    """A byte-level BPE tokenizer trained here on ``texts`` (default: ``default_corpus()``); no download.

    Byte-level: any text round-trips; the corpus only decides which words are one token.
    ``extra_special``: a family's own special tokens (e.g. LISA's ``<im_start>``, ``<im_end>``, ``[SEG]``),
    each one token; ``chat_template``, ``image_token``, ``eos_token`` and ``pad_token``: the family's prompt
    format (Qwen: ``<|image_pad|>``, ``<|im_end|>``, ``<|endoftext|>``, given among ``extra_special``).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    tok = Tokenizer(models.BPE(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    special = list(dict.fromkeys([*SPECIAL_TOKENS[:4], image_token, *extra_special]))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=special,
        show_progress=False,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
    )
    tok.train_from_iterator(list(texts if texts is not None else default_corpus()), trainer)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok,
        pad_token=pad_token,
        bos_token="<s>",
        eos_token=eos_token,
        unk_token="<unk>",
        extra_special_tokens={"image_token": image_token},
    )
    fast.chat_template = chat_template
    return fast


def tiny_processor(tokenizer, spec: TinySpec):
    from transformers import LlavaProcessor

    try:  # the PIL backend needs no torchvision
        from transformers import CLIPImageProcessorPil as CLIPImageProcessor
    except ImportError:
        from transformers import CLIPImageProcessor
    image_processor = CLIPImageProcessor(
        size={"shortest_edge": spec.image_size}, crop_size={"height": spec.image_size, "width": spec.image_size}
    )
    return LlavaProcessor(
        image_processor=image_processor,
        tokenizer=tokenizer,
        patch_size=spec.patch,
        vision_feature_select_strategy="default",
        num_additional_image_tokens=1,
        chat_template=CHAT_TEMPLATE,
    )


def tiny_lvlm(tokenizer, spec: TinySpec):
    from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

    vision = CLIPVisionConfig(
        hidden_size=spec.vision_hidden,
        intermediate_size=2 * spec.vision_hidden,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=spec.image_size,
        patch_size=spec.patch,
        projection_dim=spec.vision_hidden,
    )
    text = LlamaConfig(
        vocab_size=len(tokenizer),
        hidden_size=spec.llm_hidden,
        intermediate_size=2 * spec.llm_hidden,
        num_hidden_layers=spec.llm_layers,
        num_attention_heads=spec.heads,
        num_key_value_heads=spec.heads,
        max_position_embeddings=1024,
        tie_word_embeddings=False,
        pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
    )
    n = (spec.image_size // spec.patch) ** 2
    config = LlavaConfig(
        vision_config=vision,
        text_config=text,
        image_token_index=tokenizer.convert_tokens_to_ids(IMAGE_TOKEN),
        image_seq_length=n,
        vision_feature_layer=-1,
        vision_feature_select_strategy="default",
    )
    lvlm = LlavaForConditionalGeneration(config)
    lvlm.generation_config.eos_token_id = tokenizer.eos_token_id
    lvlm.generation_config.pad_token_id = tokenizer.pad_token_id
    return lvlm


def tiny_sam(spec: TinySpec):
    from transformers import SamConfig, SamMaskDecoderConfig, SamModel, SamPromptEncoderConfig, SamVisionConfig

    d = spec.sam_hidden
    vision = SamVisionConfig(
        hidden_size=d,
        output_channels=d,
        num_hidden_layers=2,
        num_attention_heads=2,
        image_size=spec.sam_image_size,
        patch_size=spec.sam_patch,
        mlp_dim=2 * d,
        global_attn_indexes=[1],
        window_size=4,
        num_pos_feats=d // 2,
    )
    # SAM's 16: the mask embedding's first LayerNorm spans 16 // 4 = 4 channels; with 8 it spans 2, whose
    # normalised values are always ±1 — the region-mask prompt would reach the decoder as a constant.
    prompt = SamPromptEncoderConfig(
        hidden_size=d, image_size=spec.sam_image_size, patch_size=spec.sam_patch, mask_input_channels=16
    )
    decoder = SamMaskDecoderConfig(
        hidden_size=d, num_hidden_layers=2, num_attention_heads=2, mlp_dim=2 * d, iou_head_hidden_dim=d
    )
    return SamModel(SamConfig(vision_config=vision, prompt_encoder_config=prompt, mask_decoder_config=decoder))


def build_tiny(
    config: Sim4SegConfig | None = None,
    *,
    spec: TinySpec | None = None,
    texts: Iterable[str] | None = None,
    seed: int = 0,
    trainable: bool = True,
):
    """A tiny randomly initialised Sim4Seg and its processor: ``(model, processor)`` (fp32, CPU)."""
    spec = spec or TinySpec()
    config = config or Sim4SegConfig(max_length=256)
    torch.manual_seed(seed)
    tokenizer = build_tiny_tokenizer(texts, spec.vocab_size)
    processor = tiny_processor(tokenizer, spec)
    return compose(
        tiny_lvlm(tokenizer, spec),
        tiny_sam(spec),
        processor,
        config,
        trainable=trainable,
        sam_frame=SegmenterFrame(size=spec.sam_image_size),
    ), processor
