"""What is specific to the LLaVA family of LVLMs (transformers' ``LlavaForConditionalGeneration``).

The image placeholder token, LLaVA-1.5's conversation format as a chat template, the model
types this toolkit loads, and the vision tower's patch grid.
"""

from __future__ import annotations

IMAGE_TOKEN = "<image>"
"""The placeholder the processor expands to one token per image feature."""
LLAVA_TYPES = ("llava", "llava_next", "vipllava")
"""``model_type`` values of the LVLM configs a checkpoint may hold."""
# LLaVA-1.5's conversation format: "USER: <image>\n{query} ASSISTANT: {answer}</s>"
CHAT_TEMPLATE = (
    "{% for m in messages %}{% if m['role'] == 'user' %}USER: "
    "{% for c in m['content'] %}{% if c['type'] == 'image' %}<image>\n{% else %}{{ c['text'] }}{% endif %}{% endfor %}"
    " {% else %}ASSISTANT: {% for c in m['content'] %}{{ c['text'] }}{% endfor %}</s>{% endif %}{% endfor %}"
    "{% if add_generation_prompt %}ASSISTANT:{% endif %}"
)


def token_grid(lvlm) -> list[int]:
    """The vision tower's patch grid ``[h_p, w_p]`` (square CLIP input: ``image_size / patch_size`` each)."""
    v = lvlm.config.vision_config
    size = v.image_size if isinstance(v.image_size, int) else v.image_size[0]
    return [size // v.patch_size, size // v.patch_size]
