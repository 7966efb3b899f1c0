"""The test-time-scaling run: one generate call for m answers, cached SAM embedding, m×n candidates, selectors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from helpers import trained_checkpoint  # noqa: E402
from sim4seg.data.io import read_mask  # noqa: E402
from sim4seg.data.schema import load_split  # noqa: E402
from sim4seg.infer import tts  # noqa: E402
from sim4seg.infer.predictor import Predictor  # noqa: E402


@pytest.fixture(scope="module")
def setup(synth_m3ds, tmp_path_factory):
    ckpt = trained_checkpoint(synth_m3ds, tmp_path_factory.mktemp("ckpt") / "ckpt")
    p = Predictor.from_checkpoint(ckpt, tts=tts.TTSConfig(max_new_tokens=24))
    _, samples = load_split(synth_m3ds, "test")
    s = next(x for x in samples if read_mask(synth_m3ds / x.mask).any())
    p.set_image(synth_m3ds / s.image)
    return p, s, synth_m3ds


def _count(obj, name, monkeypatch):
    calls = []
    orig = getattr(obj, name)

    def wrapper(*a, **k):
        calls.append((a, k))
        return orig(*a, **k)

    monkeypatch.setattr(obj, name, wrapper)
    return calls


def test_m_answers_come_from_one_generate_call_and_the_image_is_not_re_encoded(setup, monkeypatch):
    p, s, _ = setup
    gen_calls = _count(p.model.lvlm, "generate", monkeypatch)
    llm_calls = _count(p.model.lvlm.model.language_model, "forward", monkeypatch)
    sam_calls = _count(p.model.sam.vision_encoder, "forward", monkeypatch)
    clip_calls = _count(p.model.lvlm.model, "get_image_features", monkeypatch)
    decode_calls = _count(p.model, "decode", monkeypatch)
    cfg = tts.TTSConfig(m=4, n=3, selector="consensus", decode_batch=5, max_new_tokens=24)
    ids = p.prompt_ids(s.query)
    res = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg)
    assert len(gen_calls) == 1 and gen_calls[0][1]["do_sample"] and gen_calls[0][1]["inputs_embeds"].shape[0] == 4
    # the prompt is prefilled once (batch 1, all but its last token); every later LLM call runs one new token
    widths = [(k["inputs_embeds"].shape[0], k["inputs_embeds"].shape[1]) for _, k in llm_calls]
    assert widths[0] == (1, ids.shape[1] - 1) and all(w == (4, 1) for w in widths[1:])
    assert sam_calls == [] and clip_calls == []  # the cached encodings are reused
    assert len(res.answers) == 4 and res.seg
    c = res.candidates
    with_seg = sorted(set(c.path))
    assert len(c.path) == 3 * len(with_seg) == len(c.masks) == len(c.pred_iou)
    assert sorted(set(c.perturbation)) == [0, 1, 2]
    n_seg = sum(a.count("[SEG]") for a in res.answers)  # every [SEG] of every answer is decoded
    assert len(decode_calls) == -(-3 * n_seg // 5)  # in batches of 5
    h, w = p.image.shape[:2]
    assert tuple(c.masks.shape[1:]) == (h, w) and res.mask.shape == (h, w)
    # the k-jitter perturbation (j = 1) selects a different number of cells than j = 0
    j0 = [n for n, j in zip(c.region_cells, c.perturbation) if j == 0]
    j1 = [n for n, j in zip(c.region_cells, c.perturbation) if j == 1]
    assert j0 != j1
    d = res.details(cfg)
    assert d["candidates"] == len(c.path) and d["upper_bound"] is False and d["sampling"]["top_p"] == 0.9
    assert d["vote"]["label"] == res.diagnosis.label


def test_shared_prefill_gives_the_same_answers_and_states(setup, caplog):
    import warnings

    p, s, _ = setup
    ids = p.prompt_ids(s.query)
    ref = p.model.generate(ids, torch.ones_like(ids), p.encoding, max_new_tokens=24)
    # the KV cache goes to generate() the transformers-v5 way (``cache``): no deprecation warning, no log line
    with warnings.catch_warnings(), caplog.at_level("WARNING"):
        warnings.simplefilter("error", FutureWarning)
        shared = p.model.generate(
            ids, torch.ones_like(ids), p.encoding, max_new_tokens=24, num_return_sequences=3, share_prefill=True
        )
    assert not [r for r in caplog.records if "deprecated" in r.getMessage()]
    assert all(torch.equal(row, ref.sequences[0]) for row in shared.sequences)
    assert torch.allclose(shared.image_hidden, ref.image_hidden, atol=1e-5)
    assert all(torch.allclose(h, ref.seg_hidden[0], atol=1e-5) for h in shared.seg_hidden)
    assert shared.image_index.tolist() == [0, 0, 0]


def test_greedy_1x1_is_the_models_own_segmentation(setup):
    p, s, _ = setup
    ids = p.prompt_ids(s.query)
    cfg = tts.TTSConfig(max_new_tokens=24)
    res = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg)
    gen = p.model.generate(ids, torch.ones_like(ids), p.encoding, max_new_tokens=24)
    seg = p.model.segment_generation(gen, p.encoding)[0]
    assert res.candidates is not None and len(res.candidates.path) == 1
    assert torch.equal(res.mask, seg.masks[0] > 0)
    assert res.answer == p.tokenizer.decode(gen.sequences[0], skip_special_tokens=False).split("</s>")[0].strip()


def test_oracle_picks_the_candidate_closest_to_the_ground_truth_and_is_labelled(setup):
    p, s, root = setup
    gt = torch.as_tensor(read_mask(root / s.mask))
    ids = p.prompt_ids(s.query)
    cfg = tts.TTSConfig(m=2, n=5, selector="oracle", max_new_tokens=24)
    res = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg, gt=gt)
    ious = tts.iou_to(res.candidates.masks, gt)
    assert float(ious[res.chosen]) == float(ious.max())
    assert res.details(cfg)["upper_bound"] is True
    with pytest.raises(ValueError, match="ground truth"):
        tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg)


def test_no_seg_token_gives_an_explicit_empty_mask(setup):
    p, s, _ = setup
    ids = p.prompt_ids(s.query)
    cfg = tts.TTSConfig(max_new_tokens=1)  # the answer stops before "It is [SEG]"
    res = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg)
    assert not res.seg and res.candidates is None and res.chosen is None
    assert res.mask.shape == tuple(p.image.shape[:2]) and not res.mask.any()


def test_same_seed_same_result_and_vote_over_answers(setup):
    p, s, _ = setup
    ids = p.prompt_ids(s.query)
    cfg = tts.TTSConfig(m=3, n=2, selector="vote", seed=7, max_new_tokens=24)
    a = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg)
    b = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg)
    assert a.answers == b.answers and torch.equal(a.mask, b.mask)
    expected = tts.pixel_vote(a.candidates.masks)
    assert torch.equal(a.mask, expected)
    assert a.diagnosis == tts.vote_diagnosis(a.labels)
    assert np.isclose(a.diagnosis.confidence, max(a.diagnosis.counts.values(), default=0) / 3)
    assert a.confidence == a.diagnosis.confidence  # m = 3: the agreement is reported


def test_uncertainty_is_the_share_of_candidates_disagreeing_with_the_selected_mask(setup):
    p, s, _ = setup
    ids = p.prompt_ids(s.query)
    cfg = tts.TTSConfig(m=2, n=3, selector="consensus", seed=1, max_new_tokens=24)
    r = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, cfg)
    c = r.candidates.masks.numpy()
    expected = (c != r.mask.numpy()[None]).mean(0)
    assert r.uncertainty.shape == r.mask.shape and r.uncertainty.dtype == torch.float32
    assert np.allclose(r.uncertainty.numpy(), expected)
    assert r.details(cfg)["uncertainty_mean"] == pytest.approx(float(expected.mean()))
    # a greedy single answer with one candidate has neither a confidence nor an uncertainty map
    g = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, tts.TTSConfig(max_new_tokens=24))
    assert g.confidence is None and g.uncertainty is None and g.details(tts.TTSConfig())["vote"]["confidence"] is None


def test_disagreement_on_a_hand_made_example():
    cands = torch.tensor([[[1, 1], [0, 0]], [[1, 0], [0, 0]], [[1, 1], [1, 0]], [[0, 1], [0, 0]]], dtype=torch.bool)
    sel = torch.tensor([[1, 1], [0, 0]], dtype=torch.bool)
    assert torch.equal(tts.disagreement(cands, sel), torch.tensor([[0.25, 0.25], [0.25, 0.0]]))
    with pytest.raises(ValueError, match="mask is"):
        tts.disagreement(cands, sel[:1])


def test_config_is_validated():
    with pytest.raises(ValueError, match="m and n"):
        tts.TTSConfig(m=0)
    with pytest.raises(ValueError, match="selector"):
        tts.TTSConfig(selector="best")
    with pytest.raises(ValueError, match="temperature"):
        tts.TTSConfig(temperature=0)


def test_every_seg_of_an_answer_is_segmented_and_the_masks_are_united(setup):
    import dataclasses

    p, s, _ = setup
    ids = p.prompt_ids(s.query)
    gen = p.model.generate(ids, torch.ones_like(ids), p.encoding, max_new_tokens=24)
    h1 = gen.seg_hidden[0]
    assert h1.shape[0] == 1
    h2 = torch.randn(1, h1.shape[1], generator=torch.Generator().manual_seed(0)) * h1.std() + h1.mean()
    one = tts.candidate_masks(p.model, p.encoding, gen, 1)
    other = tts.candidate_masks(p.model, p.encoding, dataclasses.replace(gen, seg_hidden=[h2]), 1)
    both = tts.candidate_masks(p.model, p.encoding, dataclasses.replace(gen, seg_hidden=[torch.cat([h1, h2])]), 1)
    assert len(both.path) == 1 and both.path == [0]
    assert torch.equal(both.masks[0], one.masks[0] | other.masks[0])  # the answer's mask: the union
    assert both.region_cells[0] == one.region_cells[0] + other.region_cells[0]
    assert torch.isclose(both.pred_iou[0], (one.pred_iou[0] + other.pred_iou[0]) / 2)
    # with n perturbations: one union candidate per (perturbation, answer)
    many = tts.candidate_masks(p.model, p.encoding, dataclasses.replace(gen, seg_hidden=[torch.cat([h1, h2])]), 3)
    assert many.perturbation == [0, 1, 2] and many.path == [0, 0, 0] and torch.equal(many.masks[0], both.masks[0])


def test_the_default_budget_fits_a_chain_of_thought_and_truncation_is_reported(setup, tmp_path, caplog):
    from sim4seg.cot.pipeline import GenerationConfig
    from sim4seg.infer.batch import predict_split

    assert tts.TTSConfig().max_new_tokens >= GenerationConfig().max_tokens  # the CoT writer's own budget
    p, s, root = setup
    ids = p.prompt_ids(s.query)
    res = tts.run(p.model, p.tokenizer, ids, torch.ones_like(ids), p.encoding, tts.TTSConfig(max_new_tokens=2))
    assert res.truncated == [True] and res.details(tts.TTSConfig())["truncated"] == [True]
    cut = tts.TTSConfig(max_new_tokens=2)
    q = Predictor(p.model, p.processor, cut)
    with caplog.at_level("WARNING", logger="sim4seg.infer.batch"):
        path = predict_split(q, root, "test", tmp_path / "cut", limit=3, progress=False)
    rows = [__import__("json").loads(line) for line in path.read_text().splitlines()]
    assert [r["truncated"] for r in rows] == [True, True, True]
    assert any("3 of 3 answer(s) reached max_new_tokens=2" in r.getMessage() for r in caplog.records)
    q.tts = tts.TTSConfig(max_new_tokens=24)  # the trained answers end in EOS well before
    path = predict_split(q, root, "test", tmp_path / "full", limit=3, progress=False)
    assert not any(__import__("json").loads(line)["truncated"] for line in path.read_text().splitlines())
