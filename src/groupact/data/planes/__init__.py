"""Planes in the sky: renders of airplanes under uniform SO(3) poses, composited on skies.

The paper's dataset renders airplane meshes under 100 uniform SO(3) poses each and pastes them on
sky photographs; SO(3) acts on the plane only, the sky is invariant (and the same within a pair).
Neither the meshes nor the photographs ship with any package this project may use, so:

- :func:`generate_planes` is an honest **stand-in**: procedural airplanes of five families
  (:data:`~groupact.data.airplanes.FAMILIES`, the class labels) with random proportions and colours,
  drawn by the small torch rasteriser in :mod:`groupact.data.render`, on procedural skies
  (gradient, soft fractal clouds, sun glow). Its splits are named ``planes-synthetic`` with
  ``stand_in: True``.
- :func:`load_planes_folder` is the **real-format path**: a folder of meshes (.obj, .off, .stl, .ply,
  .glb; one sub-folder per class, or none) and a folder of sky photographs (PNG/JPEG), rendered the same way.

Views are stored as straight-alpha RGBA, so the plane can be put on any sky: :class:`PosePairs`
composites both views of a pair over one shared sky, batched. Pose convention (see
:mod:`groupact.data.render`): a view with pose R shows the plane's vertices at p = R v in the camera
frame (x right, y up, z towards the viewer); the pair element is g = R2 R1ᵀ, the rotation (in the
camera frame) that takes the plane as seen in view 1 to the plane as seen in view 2.

Modules: :mod:`.skies` (procedural skies, photographs, skybox crops), :mod:`.views` (rendering a
set's views), :mod:`.debian` (real aircraft and skies from Debian packages), :mod:`.splits` (by
plane and by sky) and :mod:`.pairs` (composited pairs, preview).
"""

from groupact.data.planes.debian import (CRRCSIM_DIR, DEBIAN_INSTALL, FLIGHTGEAR_AI_DIR,
                                         debian_model_files, load_planes_debian,
                                         missing_debian_message, skybox_files)
from groupact.data.planes.pairs import PosePairs, preview
from groupact.data.planes.skies import IMAGE_EXTS, make_skies, read_sky_crops, read_skies
from groupact.data.planes.splits import load_planes
from groupact.data.planes.views import VIEW_SCALE, generate_planes, load_planes_folder

__all__ = ["CRRCSIM_DIR", "DEBIAN_INSTALL", "FLIGHTGEAR_AI_DIR", "IMAGE_EXTS", "PosePairs",
           "VIEW_SCALE", "debian_model_files", "generate_planes", "load_planes",
           "load_planes_debian", "load_planes_folder", "make_skies", "missing_debian_message",
           "preview", "read_sky_crops", "read_skies", "skybox_files"]
