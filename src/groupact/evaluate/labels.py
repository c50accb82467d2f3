"""One name and one number format per metric, for every table that prints metrics.json keys
(`groupact report`, the reproduction's RESULTS.md and index.html)."""

from __future__ import annotations

#: column headers of the metrics known by name; probe keys not listed are named by
#: :func:`title` from the latent part and the protocol (T→T: trained on turned views, tested on
#: turned views; U→T: trained upright, tested turned — docs/PROTOCOL.md)
TITLES = {
    "psnr": "PSNR (dB)", "psnr_identity": "PSNR do nothing", "psnr_mean_target": "PSNR mean target",
    "psnr_wrong_g": "PSNR, wrong g", "psnr_autoencode": "autoencode PSNR",
    "psnr_from_mean_mse": "PSNR of mean MSE", "ssim": "SSIM", "ssim_identity": "SSIM do nothing",
    "dice": "Dice", "inv_error": "inv. error", "equiv_error": "equiv. error",
    "homomorphism_error": "hom. error", "mask_fraction": "variant fraction",
    "mask_fraction_first_epoch": "after epoch 1", "mask_flips_during_training": "flips",
    "mask_channels": "channels", "probe_chance": "chance",
    "probe_orbit": "probe orbit-pooled E (T→T)", "probe_orbit_upright": "probe orbit-pooled E (U→T)",
    "probe_orbit_random": "probe orbit-pooled random E (T→T)",
    "probe_orbit_random_upright": "probe orbit-pooled random E (U→T)",
    "orbit_pool_passes": "passes (orbit-pooled)", "probes_solver": "probe fit",
    "wrong_g_cost": "wrong-g cost (dB)", "swap_psnr": "swap PSNR",
    "object_share_zv": "object from z_v", "background_share_zi": "background from z_i",
}

#: how the probe that evaluated a ledger row is named in a table (metrics.json's probes_solver).
#: Kept for the rows of a ledger evaluated before 0.4, which hold none and used the L-BFGS probe
#: of groupact 0.3 (removed in 0.5): tables made from such a ledger still say which probe it was.
PROBE_SOLVERS = {"sklearn": "sklearn, C on val", "lbfgs": "L-BFGS, fixed steps"}

#: how a metric is printed (a format spec); others: 2 decimals for PSNRs, else 3
FORMATS = {"psnr": ".2f", "ssim": ".3f", "inv_error": ".3g", "equiv_error": ".3g",
           "homomorphism_error": ".3g", "mask_fraction": ".2f",
           "mask_fraction_first_epoch": ".2f", "mask_flips_during_training": ".1f",
           "mask_channels": ".0f", "wrong_g_cost": ".2f", "swap_psnr": ".2f"}


def latent_part(name: str) -> str:
    """``zi`` → ``z_i``, ``zinv`` → ``z_inv``: the latent parts as the docs write them."""
    return f"z_{name[1:]}" if name.startswith("z") and len(name) > 1 and "_" not in name else name


def title(key: str) -> str:
    """The column header of a metrics.json key."""
    if key in TITLES:
        return TITLES[key]
    if key.startswith("probe_"):
        base = key[len("probe_"):]
        if base.endswith("_upright"):
            return f"probe {latent_part(base.removesuffix('_upright'))} (U→T)"
        return f"probe {latent_part(base)} (T→T)"
    return key


def number_format(key: str) -> str:
    """The format spec a metrics.json key is printed with."""
    return FORMATS.get(key) or (".2f" if key.startswith("psnr") else ".3f")
