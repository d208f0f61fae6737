"""Data: phantoms, CT physics (projector, noise, FBP), DICOM import and the dataset cache."""
