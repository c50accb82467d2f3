"""groupact: learn how a group acts on an autoencoder's latent space, with the latent split into a
part the group moves (z_v) and a part it leaves alone (z_i).

The few names a user needs, from where they live (docs/ARCHITECTURE.md has the layers):

- the model: :class:`GroupActionAutoencoder` (encoder, decoder, mask, latent action, group);
- groups: :func:`build_group` (``"c4"``, ``"so2"``, ``"so3"``, ``"contrast"``, …);
- masks (which channels move): :class:`ALDMask` (learned), :class:`FixedMask`,
  :class:`AllVariantMask`;
- latent actions (how fibres move): :class:`SpatialAction`, :class:`MatrixAction`,
  :class:`AffineAction`, :class:`SteerableAction`;
- the paper's loss :func:`paper_loss`; training :class:`Trainer` / :func:`train_run`;
- a trained run folder: :func:`load_run`.
"""

from importlib.metadata import PackageNotFoundError, version

from groupact.groups import build_group
from groupact.latent import (AffineAction, ALDMask, AllVariantMask, FixedMask, MatrixAction,
                             SpatialAction, SteerableAction)
from groupact.losses import paper_loss
from groupact.model import GroupActionAutoencoder
from groupact.runs import load_run
from groupact.train import Trainer, train_run

try:
    __version__ = version("groupact")
except PackageNotFoundError:   # a source tree on sys.path, not installed
    __version__ = "unknown"

__all__ = ["ALDMask", "AffineAction", "AllVariantMask", "FixedMask", "GroupActionAutoencoder",
           "MatrixAction", "SpatialAction", "SteerableAction", "Trainer", "__version__",
           "build_group", "load_run", "paper_loss", "train_run"]
