"""The web page (Gradio): upload, query with per-modality examples, TTS controls; the overlay, the mask,
the reasoning, the diagnosis with its agreement, the uncertainty map; download of the mask and a JSON report.

The example images are synthetic M3DS samples (one per modality) bundled in ``serve/examples/``.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
from pathlib import Path

os.environ.setdefault("GRADIO_ANALYTICS_ENABLED", "False")  # no usage reports to Gradio's servers

import gradio as gr  # noqa: E402

from sim4seg.data.subsets import MODALITY_NAMES, SUBSETS
from sim4seg.errors import InputError
from sim4seg.infer.tts import gt_free_selectors
from sim4seg.serve.engine import Engine, pictures, result_json

log = logging.getLogger(__name__)

EXAMPLES = Path(__file__).with_name("examples")
AUTO = "(any: the answer's Diagnosis line)"
UPLOAD_TYPES = [".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom"]


def examples() -> list[dict]:
    """The bundled examples: ``{"file", "subset", "modality", "query", "label"}`` per modality."""
    rows = json.loads((EXAMPLES / "examples.json").read_text())
    return [{**r, "path": str(EXAMPLES / r["file"])} for r in rows]


def diagnosis_text(body: dict) -> str:
    """The diagnosis line the page shows (Markdown)."""
    label = body["diagnosis"] or "not recognised in the answer"
    conf = body["confidence"]
    votes = body["tts"].get("vote", {}).get("counts", {})
    agreement = (
        "single answer: no agreement measured (use m ≥ 2)"
        if conf is None
        else f"agreement {conf:.0%} of {body['tts']['m']} answers ({', '.join(f'{k}: {v}' for k, v in votes.items())})"
    )
    u = body["uncertainty"]["mean"]
    unc = (
        "one candidate mask: no uncertainty map (use m·n ≥ 2)"
        if u is None
        else f"mean pixel uncertainty {u:.4f} over {body['uncertainty']['candidates']} candidate masks"
    )
    return f"### Diagnosis: {label}\n{agreement}<br>{unc}"


def build_page(engine: Engine) -> gr.Blocks:
    """The Gradio ``Blocks`` calling ``engine`` directly (its lock serialises with the API)."""
    ex = examples()
    subsets = [AUTO] + list(SUBSETS)
    out_dir = Path(tempfile.mkdtemp(prefix="sim4seg-page-"))

    def preview(file):
        if file is None:
            return None
        try:
            return engine.decode(Path(file).read_bytes(), Path(file).name)
        except InputError as e:
            raise gr.Error(str(e)) from None

    def run(file, query, subset, m, n, selector):
        if file is None:
            raise gr.Error("upload an image first (PNG, JPEG, TIFF or DICOM)")
        try:
            image = engine.decode(Path(file).read_bytes(), Path(file).name)
            sub = None if subset in (None, AUTO) else subset
            res = engine.segment(image, query, subset=sub, tts=engine.tts_config(int(m), int(n), selector))
        except InputError as e:
            raise gr.Error(str(e)) from None
        body = result_json(res, png=False)
        pics = pictures(res)
        case = Path(tempfile.mkdtemp(dir=out_dir))
        mask_path, report_path = case / "mask.png", case / "report.json"
        from sim4seg.data.io import write_mask

        write_mask(mask_path, res.pred.mask)
        report = {
            "query": query,
            **{k: v for k, v in body.items() if k != "masks"},
            "mask": {"rle": body["masks"][0]["rle"], "area": body["masks"][0]["area"]},
        }
        report_path.write_text(json.dumps(report, indent=1, ensure_ascii=False))
        return (
            pics["overlay"],
            pics["mask"],
            pics["uncertainty"],
            res.pred.answer,
            diagnosis_text(body),
            [str(mask_path), str(report_path)],
        )

    with gr.Blocks(
        title="sim4seg — medical diagnosis segmentation", delete_cache=(3600, 3600), analytics_enabled=False
    ) as page:
        gr.Markdown(
            "# sim4seg — medical diagnosis segmentation\nUpload an image, ask a clinical question: "
            "a mask of the finding, a diagnosis with its reasoning, and how sure the model is. "
            "Research software, not a medical device."
        )
        with gr.Row():
            with gr.Column(scale=1):
                file = gr.File(
                    label="Image (PNG, JPEG, TIFF, DICOM)", file_types=UPLOAD_TYPES, type="filepath", elem_id="upload"
                )
                shown = gr.Image(label="Image", interactive=False, height=240, elem_id="preview")
                query = gr.Textbox(
                    label="Question",
                    lines=2,
                    elem_id="query",
                    placeholder="Please segment the lesion in this image and tell me the diagnosis.",
                )
                subset = gr.Dropdown(subsets, value=AUTO, label="Label set (M3DS subset)", elem_id="subset")
                with gr.Accordion("Test-time scaling", open=True):
                    m = gr.Slider(1, engine.limits.max_m, value=1, step=1, label="m: sampled answers", elem_id="m")
                    n = gr.Slider(
                        1,
                        engine.limits.max_n,
                        value=min(4, engine.limits.max_n),
                        step=1,
                        label="n: mask perturbations per answer",
                        elem_id="n",
                    )
                    selector = gr.Dropdown(gt_free_selectors(), value="consensus", label="mask selector")
                go = gr.Button("Segment and diagnose", variant="primary", elem_id="submit")
                gr.Examples(
                    [[e["path"], e["query"], e["subset"]] for e in ex],
                    inputs=[file, query, subset],
                    label="Examples (synthetic M3DS): " + ", ".join(MODALITY_NAMES[e["modality"]] for e in ex),
                )
            with gr.Column(scale=2):
                diagnosis = gr.Markdown(elem_id="diagnosis")
                with gr.Row():
                    over = gr.Image(label="Overlay", interactive=False, elem_id="overlay", format="png")
                    mask = gr.Image(label="Mask", interactive=False, elem_id="mask", format="png")
                    unc = gr.Image(
                        label="Uncertainty (share of candidates disagreeing)",
                        interactive=False,
                        elem_id="uncertainty",
                        format="png",
                    )
                answer = gr.Textbox(
                    label="Reasoning (the model's answer)", lines=4, interactive=False, elem_id="answer"
                )
                files = gr.File(
                    label="Download: mask (PNG), report (JSON)",
                    file_count="multiple",
                    interactive=False,
                    elem_id="downloads",
                )
        file.change(preview, file, shown)
        go.click(
            run, [file, query, subset, m, n, selector], [over, mask, unc, answer, diagnosis, files], api_name="segment"
        )
    return page
