"""An in-process Hugging Face ``AutoModelForImageTextToText`` (LLaVA family, HuatuoGPT-Vision in HF format, ...).

For a single machine without a server. Generation holds a lock, so the pipeline's
worker threads take turns on the model; throughput comes from a server (vLLM, SGLang)
and the OpenAI-compatible backend, not from this one. Device and dtype come from the
caller.
"""

from __future__ import annotations

import logging
import os
import threading
from pathlib import Path

from sim4seg.cot.backends.base import BackendError, PreflightError
from sim4seg.cot.images import ImageInput

log = logging.getLogger(__name__)


class HFBackend:
    """Wraps a loaded model and its processor; ``generate`` decodes only the new tokens."""

    def __init__(self, model, processor, *, name: str = "hf-model", device=None, seed: int | None = 0):
        self.model = model.eval()
        self.processor = processor
        self.name = name
        self.device = device if device is not None else next(model.parameters()).device
        self.seed = seed
        self._lock = threading.Lock()

    @classmethod
    def from_pretrained(cls, path: str | os.PathLike, *, device: str = "cpu", dtype: str = "auto") -> HFBackend:
        """Load a model and processor from a local directory or a hub id."""
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        torch_dtype = "auto" if dtype == "auto" else getattr(torch, dtype, None)
        if torch_dtype is None:
            raise PreflightError(f"unknown dtype {dtype!r} (use auto, float32, bfloat16 or float16)")
        local = Path(path)
        if (local.is_absolute() or str(path).startswith(".")) and not local.is_dir():
            raise PreflightError(f"{path}: model directory not found")
        from sim4seg._device import check_device
        from sim4seg.errors import InputError

        try:
            check_device(device)
        except InputError as e:
            raise PreflightError(str(e)) from None
        try:
            processor = AutoProcessor.from_pretrained(path)
            model = AutoModelForImageTextToText.from_pretrained(path, dtype=torch_dtype)
        except (OSError, ValueError) as e:
            raise PreflightError(f"cannot load an image-text-to-text model from {path}: {e}") from None
        return cls(model.to(device), processor, name=str(path), device=torch.device(device))

    def preflight(self) -> None:
        if getattr(self.processor, "apply_chat_template", None) is None or self.processor.chat_template is None:
            raise PreflightError(f"{self.name}: the processor has no chat template")

    def _prompt(self, system: str, text: str) -> str:
        messages = [
            {"role": "system", "content": [{"type": "text", "text": system}]},
            {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": text}]},
        ]
        try:
            return self.processor.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        except Exception as e:  # templates without a system role raise jinja errors of their own
            log.debug("chat template refused a system message (%s); merging it into the user turn", e)
        merged = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": f"{system}\n\n{text}"}]}]
        return self.processor.apply_chat_template(merged, add_generation_prompt=True, tokenize=False)

    def generate(self, system: str, text: str, image: ImageInput, *, max_tokens: int, temperature: float) -> str:
        import torch

        prompt = self._prompt(system, text)
        with self._lock:
            try:
                inputs = self.processor(images=image.pil(), text=prompt, return_tensors="pt").to(self.device)
                if "pixel_values" in inputs:
                    inputs["pixel_values"] = inputs["pixel_values"].to(self.model.dtype)
                sample = temperature > 0
                if sample and self.seed is not None:
                    torch.manual_seed(self.seed)
                with torch.inference_mode():
                    out = self.model.generate(
                        **inputs,
                        max_new_tokens=max_tokens,
                        do_sample=sample,
                        **({"temperature": temperature} if sample else {}),
                    )
            except (RuntimeError, ValueError) as e:
                raise BackendError(f"{self.name}: generation failed: {e}") from None
            new = out[:, inputs["input_ids"].shape[1] :]  # (1, T_new)
        return self.processor.batch_decode(new, skip_special_tokens=True)[0].strip()
