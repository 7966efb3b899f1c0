"""A multi-frame DICOM writer for tests (gray, 8-bit, uncompressed)."""

from __future__ import annotations

import numpy as np


def multiframe(path, frames):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.7.2"  # multi-frame grayscale byte secondary capture
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID = meta.MediaStorageSOPClassUID, meta.MediaStorageSOPInstanceUID
    ds.PatientName = "Doe^Jane"
    ds.NumberOfFrames = len(frames)
    ds.Rows, ds.Columns = frames[0].shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 8, 8, 7, 0
    ds.PixelData = np.stack(frames).astype(np.uint8).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path
