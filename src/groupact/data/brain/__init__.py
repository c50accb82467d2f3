"""3D brain MRI: a loader for a folder of NIfTI volumes, and an offline stand-in made from MNI152.

Volumes are (N, 1, D, H, W) float32 in [0, 1] in one orientation for both sources, the NIfTI data
reoriented to RAS first: D runs inferior→superior, H anterior→posterior, W left→right, so
``images[:, 0, d]`` is an axial slice that shows the front of the head at the top.

- :func:`load_brain_folder` reads real T1 volumes a user has (``.nii`` / ``.nii.gz``), with optional
  labels from ``labels.csv`` (``filename,label``).
- :func:`load_brain3d_synthetic` ("mni152-synthetic") is an honest stand-in, not patient data: a
  population of deformed copies of the MNI152 2009a T1 template that ships inside the nilearn wheel,
  with a binary label for simulated ventricle enlargement. It needs no network.
- :func:`load_brain2d_slices` gives a few axial slices per subject (for the 2D contrast recipes).

Modules: :mod:`.folder` (NIfTI folders), :mod:`.template` (MNI152 from nilearn) and
:mod:`.population` (the synthetic population, held-out real subjects, slices).
"""

from groupact.data.brain.folder import load_brain_folder
from groupact.data.brain.population import (SYNTHETIC_LABELS, SYNTHETIC_NAME, SYNTHETIC_SOURCE,
                                            load_brain2d_slices, load_brain3d,
                                            load_brain3d_synthetic, ventricle_height)
from groupact.data.brain.template import TEMPLATE_FILES, mni152_template, template_dir

__all__ = ["SYNTHETIC_LABELS", "SYNTHETIC_NAME", "SYNTHETIC_SOURCE", "TEMPLATE_FILES",
           "load_brain2d_slices", "load_brain3d", "load_brain3d_synthetic", "load_brain_folder",
           "mni152_template", "template_dir", "ventricle_height"]
