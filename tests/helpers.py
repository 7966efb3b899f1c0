"""A tiny Sim4Seg taught (in a few seconds) to answer ``It is [SEG]. ... Diagnosis: <label>.``, saved once.

Inference tests need a model that produces [SEG] and an EOS; a randomly initialised one does
neither. Overfitting the tiny model's text head on the synthetic M3DS's diagnosis answers for a
few dozen steps is enough — the masks stay poor, which these tests do not judge.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from sim4seg.data.dataset import Collator, ExampleEncoder, M3DSDataset

_CACHE: dict[str, Path] = {}
SPEC = dict(
    image_size=32,
    patch=8,
    vision_hidden=32,
    llm_hidden=64,
    llm_layers=2,
    heads=4,
    sam_image_size=32,
    sam_patch=8,
    sam_hidden=32,
)


def trained_checkpoint(root: Path, out: Path, steps: int = 60) -> Path:
    """Train the tiny model on ``root``'s train split for ``steps`` and save it to ``out`` (once per session)."""
    key = str(root)
    if key in _CACHE:
        return _CACHE[key]
    from sim4seg.model import checkpoint, tiny
    from sim4seg.model.config import Sim4SegConfig, TrainableConfig

    cfg = Sim4SegConfig(
        max_length=128,
        trainable=TrainableConfig(lora=False, llm=True, vision_tower=True, mm_projector=True, sam_encoder=True),
    )
    model, processor = tiny.build_tiny(cfg, spec=tiny.TinySpec(**SPEC), seed=0)
    ds = M3DSDataset(root, "train", ExampleEncoder.for_model(model, processor), answer_format="diagnosis")
    collate = Collator(processor.tokenizer.pad_token_id)
    opt = torch.optim.AdamW([p for p in model.parameters() if p.requires_grad], lr=3e-3)
    g = torch.Generator().manual_seed(0)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        model.train()
        for _ in range(steps):
            idx = torch.randint(len(ds), (8,), generator=g).tolist()
            loss = model(**collate([ds[i] for i in idx])).loss
            opt.zero_grad()
            loss.backward()
            opt.step()
    finally:
        torch.set_num_threads(threads)
    model.eval()
    checkpoint.save(model, processor, out)
    _CACHE[key] = out
    return out


def write_dicom(path, arr, photometric="MONOCHROME2", **tags):
    """Write ``arr`` (H, W uint16 gray or H, W, 3 uint8) as a DICOM file with patient fields set
    (``PatientName`` Doe^Jane, ``PatientID`` SECRET-4711) so tests can check they never leak."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName, ds.PatientID = "Doe^Jane", "SECRET-4711"
    ds.Rows, ds.Columns = arr.shape[:2]
    ds.PhotometricInterpretation = photometric
    if arr.ndim == 3:
        ds.SamplesPerPixel, ds.PlanarConfiguration = 3, 0
        ds.BitsAllocated = ds.BitsStored = 8
        ds.HighBit = 7
    else:
        ds.SamplesPerPixel = 1
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 12, 11
    ds.PixelRepresentation = 0
    for k, v in tags.items():
        setattr(ds, k, v)
    ds.PixelData = (arr.astype(np.uint16) if arr.ndim == 2 else arr).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
