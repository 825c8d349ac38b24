"""DICOM in and out: reference CT series, RTSTRUCT and DICOM-SEG export."""
