"""The composed Sim4Seg model (paper §3.1–3.2): LVLM + ϕ + RVLS2M + SAM, on transformers classes.

``lvlm``  an image-text-to-text model of a supported family (vision tower, projector, LLM),
          driven through its ``LVLMAdapter`` (``sim4seg.model.backbones``)
``phi``   ϕ: Linear–ReLU–Linear from the LLM's hidden size to SAM's prompt dimension (Eq. 2)
``sam``   a SAM-family segmenter, driven through its ``SegmenterAdapter``: its prompt encoder and
          mask decoder are called directly so that ϕ(E_seg) is the sparse prompt token and the
          RVLS2M region mask the dense prompt (Eq. 9)

The ``[SEG]`` embedding follows LISA (so LISA weights work unchanged): the last-layer hidden
state of the position that *predicts* ``[SEG]`` (the token before it). That state exists during
generation without feeding ``[SEG]`` back. The image-token hidden states used by RVLS2M are
the last-layer states at the image-token positions, passed through ϕ like E_seg (Eq. 4).

Images are encoded once (``encode_image``) and the encoding reused for any number of
queries, sampled answers and region-mask perturbations (``segment`` / ``decode``).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from sim4seg.data.transforms import SegmenterFrame
from sim4seg.model import losses, rvls2m
from sim4seg.model.backbones import lvlm_adapter, segmenter_adapter
from sim4seg.model.backbones.base import SegmenterAdapter
from sim4seg.model.config import Sim4SegConfig

log = logging.getLogger(__name__)


@dataclass
class ImageEncoding:
    """What the image costs, computed once: reuse it across queries (B images)."""

    lvlm_features: torch.Tensor
    """(B, n, d_llm) projected image features: the LLM's input embeddings at the image tokens (zero-padded
    after each image's ``token_grids`` product when the grid differs per image)."""
    sam_embeddings: object
    """The segmenter's image encoding for B images (``SegmenterAdapter.encode``): SAM's (B, C, h, w) tensor,
    SAM2's embedding with its high-resolution features. Index it only through ``segmenter.select`` /
    ``segmenter.expand``."""
    image_sizes: torch.Tensor
    """(B, 2) long: original (H, W)."""
    token_boxes: torch.Tensor
    """(B, 4) float: where the LVLM token grid lies in original-image pixels (x0, y0, x1, y1)."""
    token_grids: torch.Tensor | None = None
    """(B, 2) long: each image's token grid (h_p, w_p); ``None``: the model's fixed grid."""
    deepstack: torch.Tensor | None = None
    """(B, L, n, d_llm): features of L vision layers added to the first L LLM layers' states at the image
    tokens (Qwen3-VL's "deepstack"), padded like ``lvlm_features``; ``None`` for LVLMs without them."""
    segmenter: SegmenterAdapter = field(kw_only=True)
    """The adapter that made ``sam_embeddings`` (it knows their structure): required, so that no encoding
    silently takes SAM2's three maps for SAM's one tensor."""

    def index(self, idx: torch.Tensor) -> ImageEncoding:
        """Select / repeat images: ``idx`` (N,) long → an encoding of N images."""
        return ImageEncoding(
            self.lvlm_features[idx],
            self.segmenter.select(self.sam_embeddings, idx),
            self.image_sizes[idx],
            self.token_boxes[idx],
            None if self.token_grids is None else self.token_grids[idx],
            None if self.deepstack is None else self.deepstack[idx],
            segmenter=self.segmenter,
        )

    def segmenter_embeddings(self, idx: torch.Tensor):
        """The segmenter's encoding of images ``idx`` (N,) (what ``Sim4SegModel.decode`` takes)."""
        return self.segmenter.select(self.sam_embeddings, idx)


@dataclass
class Segmentation:
    """Masks for N (E_seg, image) pairs."""

    masks: list[torch.Tensor]
    """N mask-logit maps, each (H_i, W_i) at the original image size (``> 0`` is foreground)."""
    iou: torch.Tensor
    """(N,) SAM's predicted IoU."""
    low_res: torch.Tensor
    """(N, 4h, 4w) SAM's low-res mask logits in its padded square frame."""
    scores: torch.Tensor | None
    """(N, g, g) RVLS2M region scores, or ``None`` with RVLS2M off."""
    region: torch.Tensor | None
    """(N, g, g) bool selected cells, or ``None`` with RVLS2M off."""


@dataclass
class Sim4SegOutput:
    """Teacher-forced forward. Per-sample lists hold one entry per ``[SEG]`` (zero: no mask)."""

    loss: torch.Tensor | None
    loss_txt: torch.Tensor | None
    loss_bce: torch.Tensor | None
    loss_dice: torch.Tensor | None
    logits: torch.Tensor
    """(B, T, V)"""
    masks: list[torch.Tensor]
    """B tensors (k_i, H_i, W_i) of mask logits at original size; k_i = 0 means "no mask"."""
    iou: list[torch.Tensor]
    """B tensors (k_i,)"""
    region: list[torch.Tensor | None]
    """B tensors (k_i, g, g) bool, or ``None`` with RVLS2M off."""
    seg_counts: torch.Tensor
    """(B,) number of [SEG] in each sequence."""


@dataclass
class Generation:
    """Sampled / greedy answers with what segmentation needs (N = B · num_return_sequences)."""

    sequences: torch.Tensor
    """(N, L) generated token ids (no prompt), padded after EOS."""
    image_index: torch.Tensor
    """(N,) which image of the encoding each answer belongs to."""
    seg_hidden: list[torch.Tensor]
    """N tensors (k_i, d_llm): last-layer states that predicted each [SEG] (k_i = 0: no [SEG])."""
    image_hidden: torch.Tensor
    """(B, n, d_llm) last-layer states at the image tokens (from the prefill)."""
    truncated: torch.Tensor
    """(N,) bool: the answer hit ``max_new_tokens`` without EOS."""


class Sim4SegModel(nn.Module):
    """LVLM ⊕ SAM with ϕ and RVLS2M. Build with ``sim4seg.model.compose`` (or ``tiny`` / ``presets``); device/dtype via ``.to()``."""

    def __init__(
        self,
        lvlm: nn.Module,
        sam: nn.Module,
        config: Sim4SegConfig,
        *,
        seg_token_id: int,
        phi: nn.Module | None = None,
        sam_frame: SegmenterFrame | None = None,
        image_tokens: int | None = None,
    ):
        """``image_tokens``: the most image tokens one prompt holds (dynamic resolution: from the processor's
        ``max_pixels``, ``LVLMAdapter.image_tokens(lvlm, processor)``); default the adapter's fixed count."""
        super().__init__()
        self.lvlm, self.sam, self.config = lvlm, sam, config
        self.lvlm_adapter, self.seg_adapter = lvlm_adapter(lvlm), segmenter_adapter(sam)
        self.seg_token_id = int(seg_token_id)
        self.image_token_id = self.lvlm_adapter.image_token_id(lvlm)
        d_llm = self.lvlm_adapter.hidden_size(lvlm)
        d_sam = self.seg_adapter.prompt_dim(sam)
        self.phi = (
            phi if phi is not None else nn.Sequential(nn.Linear(d_llm, d_llm), nn.ReLU(), nn.Linear(d_llm, d_sam))
        )
        first, last = self.phi[0], self.phi[-1]
        if first.in_features != d_llm or last.out_features != d_sam:
            raise ValueError(
                f"mismatched dimensions: ϕ maps {first.in_features} → {last.out_features}, but the "
                f"LVLM's hidden size is {d_llm} and SAM's prompt dimension is {d_sam}"
            )
        vocab = self.lvlm.get_input_embeddings().num_embeddings
        if not 0 <= self.seg_token_id < vocab:
            raise ValueError(
                f"[SEG] id {self.seg_token_id} is outside the LVLM's vocabulary of {vocab}; "
                "add it to the tokenizer and resize the embeddings (compose.add_seg_token)"
            )
        self.sam_size = self.seg_adapter.image_size(sam)
        self.prompt_size = self.seg_adapter.prompt_size(sam)
        self.sam_frame = sam_frame or self.seg_adapter.default_frame(sam)
        """The segmenter's preprocessing (its checkpoint's ``preprocessor_config.json``; default: the family's)."""
        self.seg_adapter.check_frame(sam, self.sam_frame)
        self.token_grid_fixed = self.lvlm_adapter.token_grid(lvlm)
        self.image_tokens = image_tokens if image_tokens is not None else self.lvlm_adapter.image_tokens(lvlm)
        """Image tokens in one prompt (dynamic resolution: the most one image can take)."""

    @property
    def max_length(self) -> int:
        """Longest sequence the data pipeline builds: ``config.max_length`` if set, else the image tokens plus
        ``config.text_budget`` (chat template, query and a chain-of-thought answer)."""
        return self.config.max_length or self.image_tokens + self.config.text_budget

    # ------------------------------------------------------------------ image side

    @property
    def dtype(self) -> torch.dtype:
        return self.phi[0].weight.dtype

    @property
    def device(self) -> torch.device:
        return self.phi[0].weight.device

    def encode_image(
        self,
        pixel_values: torch.Tensor,
        sam_pixel_values: torch.Tensor,
        image_sizes: torch.Tensor,
        token_boxes: torch.Tensor,
        image_grid_thw: torch.Tensor | None = None,
    ) -> ImageEncoding:
        """pixel_values (B,3,h,w) LVLM frame; sam_pixel_values (B,3,S,S); image_sizes (B,2); token_boxes (B,4).

        Dynamic resolution (Qwen-VL): pixel_values are the B images' flattened patches, concatenated, and
        image_grid_thw (B, 3) their patch grids; the features are zero-padded to the longest image.
        """
        kw = {} if image_grid_thw is None else {"image_grid_thw": image_grid_thw.to(self.device).long()}
        feats, deep = self.lvlm_adapter.encode_features(self.lvlm, pixel_values.to(self.device, self.dtype), **kw)
        grids = None
        if self.lvlm_adapter.dynamic_resolution:
            grids = self.lvlm_adapter.token_grids(self.lvlm, **kw).to(self.device)
            if len(feats) != len(image_sizes):
                raise ValueError(f"{len(feats)} LVLM images (image_grid_thw rows) but {len(image_sizes)} image sizes")
            feats = nn.utils.rnn.pad_sequence(feats, batch_first=True)
        else:
            feats = torch.stack(feats)
        if deep is not None:  # per image: L tensors (n_i, d) → (B, L, n, d), zero-padded like feats
            deep = torch.stack([nn.utils.rnn.pad_sequence(list(layer), batch_first=True) for layer in deep], 1)
        sam_emb = self.seg_adapter.encode(self.sam, sam_pixel_values.to(self.device, self.dtype))
        return ImageEncoding(
            feats,
            sam_emb,
            image_sizes.to(self.device).long(),
            token_boxes.to(self.device).float(),
            grids,
            deep,
            segmenter=self.seg_adapter,
        )

    # ------------------------------------------------------------------ language side

    def embed(self, input_ids: torch.Tensor, encoding: ImageEncoding) -> torch.Tensor:
        """input_ids (B, T) with the image token expanded to n positions → inputs_embeds (B, T, d)."""
        is_image = input_ids == self.image_token_id
        counts = is_image.sum(1)
        n = encoding.lvlm_features.shape[1]
        if bool((counts == 0).any()):
            rows = (counts == 0).nonzero().flatten().tolist()
            raise ValueError(
                f"sequence(s) {rows} hold no image token (id {self.image_token_id}); the prompt must "
                "contain the LVLM's image placeholder, expanded by its processor"
            )
        if encoding.lvlm_features.shape[0] != input_ids.shape[0]:
            raise ValueError(f"{input_ids.shape[0]} sequences but {encoding.lvlm_features.shape[0]} encoded images")
        feats = encoding.lvlm_features
        if encoding.token_grids is not None:  # dynamic resolution: each image its own grid, features padded
            want = encoding.token_grids.to(counts.device).prod(1)
            bad = (want != counts).nonzero().flatten().tolist()
            if bad:
                i = bad[0]
                h, w = encoding.token_grids[i].tolist()
                raise ValueError(
                    f"image {i}: its token grid {h}x{w} = {h * w} tokens, but its prompt holds "
                    f"{int(counts[i])} image tokens; the processor's grid (image_grid_thw) and the "
                    "expanded placeholder disagree"
                )
            feats = feats[torch.arange(n, device=feats.device)[None] < want.to(feats.device)[:, None]]
        elif bool((counts != n).any()):
            raise ValueError(f"image-token counts {counts.tolist()} do not match the {n} image features per image")
        embeds = self.lvlm.get_input_embeddings()(input_ids)
        return embeds.masked_scatter(is_image.unsqueeze(-1), feats.to(embeds.dtype))

    def deepstack_kwargs(self, input_ids: torch.Tensor, encoding: ImageEncoding) -> dict:
        """The LLM's extra inputs for deepstack features (Qwen3-VL): the image-token mask and, per injected
        layer, the features of every image token in the batch in order; ``{}`` without them."""
        if encoding.deepstack is None:
            return {}
        is_image = input_ids == self.image_token_id
        n = encoding.deepstack.shape[2]
        keep = torch.arange(n, device=is_image.device)[None] < is_image.sum(1)[:, None]  # (B, n) unpadded
        deep = [encoding.deepstack[:, layer][keep] for layer in range(encoding.deepstack.shape[1])]
        return {"visual_pos_masks": is_image, "deepstack_visual_embeds": deep}

    def position_ids(self, input_ids: torch.Tensor, attention_mask: torch.Tensor, encoding: ImageEncoding):
        """The LLM's positions for a (left- or right-padded) batch: ``(B, T)``, or M-RoPE's ``(3, B, T)``
        from each image's token grid."""
        kw = {} if encoding.token_grids is None else {"token_grids": encoding.token_grids}
        return self.lvlm_adapter.position_ids(self.lvlm, input_ids, attention_mask, **kw)

    def _hidden(
        self,
        inputs_embeds: torch.Tensor,
        attention_mask: torch.Tensor,
        input_ids: torch.Tensor,
        encoding: ImageEncoding,
    ) -> torch.Tensor:
        position_ids = self.position_ids(input_ids, attention_mask, encoding)
        extra = self.deepstack_kwargs(input_ids, encoding)
        out = self.lvlm_adapter.hidden(self.lvlm, inputs_embeds, attention_mask, position_ids, use_cache=False, **extra)
        return out.last_hidden_state

    def image_hidden(self, hidden: torch.Tensor, input_ids: torch.Tensor) -> torch.Tensor:
        """(B, T, d) hidden states → (B, n, d) at the image tokens (zero-padded when the counts differ)."""
        is_image = input_ids == self.image_token_id
        counts = is_image.sum(1)
        if bool((counts == counts[0]).all()):
            return hidden[is_image].reshape(hidden.shape[0], -1, hidden.shape[-1])
        out = hidden.new_zeros(hidden.shape[0], int(counts.max()), hidden.shape[-1])
        out[torch.arange(out.shape[1], device=counts.device)[None] < counts[:, None]] = hidden[is_image]
        return out

    # ------------------------------------------------------------------ RVLS2M + SAM

    def region(
        self,
        image_phi: torch.Tensor,
        seg_phi: torch.Tensor,
        image_sizes: torch.Tensor,
        token_boxes: torch.Tensor,
        token_grids: torch.Tensor | None = None,
        **overrides,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """RVLS2M scores and cells: image_phi (N, n, D), seg_phi (N, D) → ((N,g,g) float, (N,g,g) bool).

        ``token_grids`` (N, 2): per-item grids (dynamic resolution); default the model's fixed grid.
        ``overrides`` replace ``config.rvls2m`` fields (grid, tau, k, fraction, alpha, normalize, pool,
        temperature).
        """
        c = {**self.config.rvls2m.__dict__, **overrides}
        token_grid = tuple(self.config.token_grid) if self.config.token_grid else None
        if token_grids is not None:
            token_grid = token_grids
        elif self.lvlm_adapter.dynamic_resolution:
            raise ValueError("the LVLM's token grid differs per image: pass token_grids (the encoding's)")
        scores = rvls2m.region_scores(
            image_phi,
            seg_phi,
            token_grid,
            image_sizes,
            token_box=token_boxes,
            grid=c["grid"],
            normalize=c["normalize"],
            pool=c["pool"],
            temperature=c["temperature"],
        )
        return scores, rvls2m.region_mask(scores, tau=c["tau"], k=c["k"], fraction=c["fraction"], alpha=c["alpha"])

    def token_grid(self, n_tokens: int) -> tuple[int, int]:
        """The LVLM's patch grid (config), else the paper's fallback for ``n_tokens``."""
        return tuple(self.config.token_grid) if self.config.token_grid else rvls2m.paper_grid(n_tokens)

    def prompt(
        self,
        region: torch.Tensor,
        image_sizes: torch.Tensor,
        token_boxes: torch.Tensor,
        pool: str | None = None,
        n_tokens: int | None = None,
        token_grids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """(N, g, g) bool cells → (N, 1, P, P) SAM mask prompt in SAM's frame.

        With ``pool="token"`` the cells cover only the tokens Algorithm 1 pools; ``n_tokens`` is then needed
        when ``config.token_grid`` is unset, ``token_grids`` (N, 2) when the grid differs per image.
        """
        c = self.config.rvls2m
        grid_box = None
        if (pool or c.pool) == "token":
            grids = (
                [tuple(g) for g in token_grids.tolist()]
                if token_grids is not None
                else [self.token_grid(n_tokens or 0)] * len(region)
            )
            grid_box = torch.tensor(
                [
                    rvls2m.token_pool_box(grid, region.shape[1], box.tolist(), size.tolist())
                    for grid, box, size in zip(grids, token_boxes, image_sizes)
                ],
                device=region.device,
            )
        return rvls2m.to_sam_prompt(
            region,
            image_sizes,
            grid_box=grid_box,
            sam_size=self.sam_size,
            prompt_size=self.prompt_size,
            on=c.on,
            off=c.off,
            dtype=self.dtype,
            resize=self.sam_frame.resize,
        )

    def decode(
        self, sam_embeddings, seg_phi: torch.Tensor, prompt: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """SAM's prompt encoder + mask decoder with ϕ(E_seg) as the sparse token.

        sam_embeddings: N images' encoding (``ImageEncoding.segmenter_embeddings``); seg_phi (N, D);
        prompt (N, 1, P, P) or None → (low-res logits (N, 4h, 4w), predicted IoU (N,)).
        """
        sparse = seg_phi.to(self.dtype).reshape(seg_phi.shape[0], 1, 1, -1)  # (N, point_batch=1, tokens=1, D)
        return self.seg_adapter.decode(self.sam, sam_embeddings, sparse, prompt)

    def postprocess(self, low_res: torch.Tensor, image_sizes: torch.Tensor) -> list[torch.Tensor]:
        """(N, h', w') low-res logits → N logit maps (H_i, W_i): upscale, crop the frame's padding (SAM; SAM2's
        square frame has none), resize to the original size."""
        up = F.interpolate(
            low_res.float().unsqueeze(1), (self.sam_size, self.sam_size), mode="bilinear", align_corners=False
        )
        out = []
        for i, (h, w) in enumerate(image_sizes.tolist()):
            rh, rw = self.sam_frame.resized_size((h, w))
            out.append(F.interpolate(up[i : i + 1, :, :rh, :rw], (h, w), mode="bilinear", align_corners=False)[0, 0])
        return out

    def segment(
        self,
        encoding: ImageEncoding,
        seg_hidden: torch.Tensor,
        image_index: torch.Tensor,
        image_hidden: torch.Tensor | None = None,
        *,
        use_rvls2m: bool | None = None,
        **overrides,
    ) -> Segmentation:
        """Masks for N [SEG] states: seg_hidden (N, d_llm), image_index (N,) into ``encoding``.

        image_hidden (B, n, d_llm) is needed when RVLS2M is on (default: ``config.rvls2m.infer``
        in eval mode, ``.train`` in training mode).
        """
        if use_rvls2m is None:
            use_rvls2m = self.config.rvls2m.train if self.training else self.config.rvls2m.infer
        seg_phi = self.phi(seg_hidden)
        if len(image_index) == 0:  # no [SEG]: an explicit "no mask" result
            g, p = self.config.rvls2m.grid, self.prompt_size
            empty = seg_phi.new_zeros(0, g, g, dtype=torch.float32) if use_rvls2m else None
            return Segmentation(
                [], seg_phi.new_zeros(0), seg_phi.new_zeros(0, p, p), empty, None if empty is None else empty.bool()
            )
        sizes, boxes = encoding.image_sizes[image_index], encoding.token_boxes[image_index]
        scores = region = prompt = None
        if use_rvls2m:
            if image_hidden is None:
                raise ValueError("RVLS2M is on but no image-token hidden states were given")
            grids = None if encoding.token_grids is None else encoding.token_grids[image_index]
            scores, region = self.region(self.phi(image_hidden)[image_index], seg_phi, sizes, boxes, grids, **overrides)
            prompt = self.prompt(region, sizes, boxes, overrides.get("pool"), image_hidden.shape[1], grids)
        low, iou = self.decode(encoding.segmenter_embeddings(image_index), seg_phi, prompt)
        return Segmentation(self.postprocess(low, sizes), iou, low, scores, region)

    # ------------------------------------------------------------------ teacher-forced forward

    def forward(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        sam_pixel_values: torch.Tensor | None = None,
        image_sizes: torch.Tensor | None = None,
        token_boxes: torch.Tensor | None = None,
        labels: torch.Tensor | None = None,
        masks: list[torch.Tensor] | None = None,
        seg_counts: torch.Tensor | None = None,
        encoding: ImageEncoding | None = None,
        use_rvls2m: bool | None = None,
        meta: dict | None = None,
        image_grid_thw: torch.Tensor | None = None,
    ) -> Sim4SegOutput:
        """Consume ``sim4seg.data.dataset.collate``'s batch (``meta`` is carried, not used).

        input_ids, attention_mask, labels: (B, T); masks: B bool tensors (H_i, W_i) (or (k_i, H_i, W_i)
        with one mask per [SEG]); seg_counts: (B,) the [SEG] count of the untruncated answers.
        """
        if encoding is None:
            encoding = self.encode_image(pixel_values, sam_pixel_values, image_sizes, token_boxes, image_grid_thw)
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        hidden = self._hidden(self.embed(input_ids, encoding), attention_mask, input_ids, encoding)
        logits = self.lvlm.lm_head(hidden)
        is_seg = (input_ids == self.seg_token_id) & attention_mask.bool()
        counts = is_seg.sum(1)
        if seg_counts is not None:
            short = (counts < seg_counts.to(counts.device)).nonzero().flatten().tolist()
            if short:
                raise ValueError(
                    f"sequence(s) {short} were truncated before [SEG] (expected {seg_counts.tolist()}, "
                    f"found {counts.tolist()}); raise max_length or shorten the prompt"
                )
        b_idx, pos = is_seg.nonzero(as_tuple=True)
        seg = self.segment(
            encoding, hidden[b_idx, pos - 1], b_idx, self.image_hidden(hidden, input_ids), use_rvls2m=use_rvls2m
        )
        per_masks, per_iou, per_region = [], [], []
        start = 0
        for i, k in enumerate(counts.tolist()):
            h, w = encoding.image_sizes[i].tolist()
            per_masks.append(
                torch.stack(seg.masks[start : start + k]) if k else hidden.new_zeros(0, h, w, dtype=torch.float32)
            )
            per_iou.append(seg.iou[start : start + k])
            per_region.append(None if seg.region is None else seg.region[start : start + k])
            start += k
        out = Sim4SegOutput(None, None, None, None, logits, per_masks, per_iou, per_region, counts)
        if labels is not None:
            self._losses(out, labels.to(self.device), masks)
        return out

    def _losses(self, out: Sim4SegOutput, labels: torch.Tensor, masks: list[torch.Tensor] | None) -> None:
        w = self.config.loss
        out.loss_txt = losses.text_loss(out.logits, labels)
        bce, dice, n = [], [], 0
        for i, pred in enumerate(out.masks):
            if pred.shape[0] == 0 or masks is None:
                continue
            gt = masks[i].to(pred.device)
            gt = gt.unsqueeze(0) if gt.ndim == 2 else gt
            if gt.shape[-2:] != pred.shape[-2:] or gt.shape[0] not in (1, pred.shape[0]):
                raise ValueError(
                    f"sample {i}: ground-truth mask {tuple(gt.shape)} does not fit {pred.shape[0]} "
                    f"predicted mask(s) of size {tuple(pred.shape[-2:])}"
                )
            gt = gt.expand_as(pred)
            for p, t in zip(pred, gt):
                bce.append(losses.bce_loss(p, t))
                dice.append(losses.dice_loss(p, t))
                n += 1
        zero = out.loss_txt * 0.0
        out.loss_bce = torch.stack(bce).mean() if n else zero
        out.loss_dice = torch.stack(dice).mean() if n else zero
        out.loss = w.txt * out.loss_txt + w.mask * (w.bce * out.loss_bce + w.dice * out.loss_dice)

    # ------------------------------------------------------------------ generation

    @torch.no_grad()
    def generate(
        self,
        input_ids: torch.Tensor,
        attention_mask: torch.Tensor,
        encoding: ImageEncoding,
        *,
        max_new_tokens: int = 128,
        share_prefill: bool = False,
        **generate_kwargs,
    ) -> Generation:
        """Answer prompts (left-padded, ending in the assistant turn) about encoded images.

        ``generate_kwargs`` go to ``transformers`` ``generate`` (``do_sample``, ``temperature``,
        ``top_p``, ``num_return_sequences`` ...). Greedy by default. ``share_prefill`` with
        ``num_return_sequences = m > 1``: the prompt is prefilled once per image and its KV cache
        repeated m times (instead of prefilling m copies).
        """
        input_ids, attention_mask = input_ids.to(self.device), attention_mask.to(self.device)
        embeds = self.embed(input_ids, encoding)
        generate_kwargs.setdefault("do_sample", False)
        m = int(generate_kwargs.get("num_return_sequences") or 1)
        pos = self.position_ids(input_ids, attention_mask, encoding)
        if pos.ndim == 3:  # M-RoPE: generate() cannot derive these from inputs_embeds; it extends them per step
            generate_kwargs["position_ids"] = pos
        prefix_hidden = None
        if (share_prefill and m > 1) or encoding.deepstack is not None:
            # prompt minus its last token through the LLM once; generate() then runs only that token. Deepstack
            # features (Qwen3-VL) enter here, at the image tokens: generate() from inputs_embeds cannot add them.
            pre = self.lvlm_adapter.hidden(
                self.lvlm,
                embeds[:, :-1],
                attention_mask[:, :-1],
                pos[..., :-1],
                use_cache=True,
                **self.deepstack_kwargs(input_ids[:, :-1], encoding),
            )
            prefix_hidden = pre.last_hidden_state  # (B, T-1, d)
            cache = pre.cache  # a DynamicCache
            cache.batch_repeat_interleave(m)
            # transformers v5 names the KV cache ``cache`` (``past_key_values`` is deprecated, removed in v6)
            generate_kwargs = {**generate_kwargs, "num_return_sequences": 1, "cache": cache}
            if pos.ndim == 3:
                generate_kwargs["position_ids"] = pos.repeat_interleave(m, 1)
            embeds, attention_mask = embeds.repeat_interleave(m, 0), attention_mask.repeat_interleave(m, 0)
        out = self.lvlm.generate(
            inputs_embeds=embeds,
            attention_mask=attention_mask,
            max_new_tokens=max_new_tokens,
            output_hidden_states=True,
            return_dict_in_generate=True,
            **generate_kwargs,
        )
        steps = out.hidden_states
        m = out.sequences.shape[0] // input_ids.shape[0]
        # state that predicted new token j: prefill's last position for j = 0, then step j's output
        states = torch.cat([steps[0][-1][:, -1:]] + [s[-1] for s in steps[1:]], dim=1)  # (N, L, d)
        seqs = out.sequences[:, -states.shape[1] :]
        eos = self.lvlm.generation_config.eos_token_id
        eos = torch.tensor(eos if isinstance(eos, list) else [eos], device=seqs.device)
        is_eos = torch.isin(seqs, eos)
        alive = (is_eos.long().cumsum(1) - is_eos.long()) == 0  # up to and incl. EOS
        is_seg = (seqs == self.seg_token_id) & alive
        seg_hidden = [states[j][is_seg[j]] for j in range(seqs.shape[0])]
        if prefix_hidden is not None:  # the prompt ends in the assistant turn: no image token is last
            image_hidden = self.image_hidden(prefix_hidden, input_ids[:, :-1])
        else:
            image_hidden = self.image_hidden(steps[0][-1][::m], input_ids)  # prefill (B, T, d)
        return Generation(
            seqs,
            torch.arange(input_ids.shape[0], device=seqs.device).repeat_interleave(m),
            seg_hidden,
            image_hidden,
            ~is_eos.any(1),
        )

    @torch.no_grad()
    def segment_generation(self, gen: Generation, encoding: ImageEncoding, **kwargs) -> list[Segmentation | None]:
        """One ``Segmentation`` per answer of ``gen`` (``None`` for an answer without [SEG])."""
        counts = [h.shape[0] for h in gen.seg_hidden]
        if not any(counts):
            return [None] * len(counts)
        index = torch.cat([gen.image_index[j].repeat(k) for j, k in enumerate(counts)])
        seg = self.segment(encoding, torch.cat(gen.seg_hidden), index, gen.image_hidden, **kwargs)
        out, start = [], 0
        for k in counts:
            if k == 0:
                out.append(None)
                continue
            sl = slice(start, start + k)
            out.append(
                Segmentation(
                    seg.masks[sl],
                    seg.iou[sl],
                    seg.low_res[sl],
                    None if seg.scores is None else seg.scores[sl],
                    None if seg.region is None else seg.region[sl],
                )
            )
            start += k
        return out
