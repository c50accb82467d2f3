"""Procedural airplanes, the stand-in for a real mesh collection (ShapeNet-style airplanes).

Five families (:data:`FAMILIES`; the family index is the class label), each with randomised
proportions, sweep, dihedral, engines, tails and colours, built from simple parts (lofted
sections, wing surfaces, boxes, ellipsoids). Object frame (before any pose): x points to the nose,
y up, z along the right wing.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from groupact.data.mesh import Mesh
from groupact.errors import DataError

#: class names of the procedural airplane families; the index is the label
FAMILIES: tuple[str, ...] = ("airliner", "fighter", "glider", "light-prop", "flying-wing")


def _colored(vertices: Tensor, faces: Tensor, color) -> Mesh:
    col = torch.as_tensor(color, dtype=torch.float32).clamp(0, 1)
    return Mesh(vertices.to(torch.float32), faces, col.expand(faces.shape[0], 3).clone())


def loft(sections: Tensor, color, cap: bool = True) -> Mesh:
    """A closed surface through S closed polygon sections (S, K, 3), ends capped by fans."""
    S, K, _ = sections.shape
    verts = sections.reshape(S * K, 3)
    s = torch.arange(S - 1)[:, None]
    k = torch.arange(K)[None, :]
    a = s * K + k
    b = s * K + (k + 1) % K
    c = (s + 1) * K + (k + 1) % K
    d = (s + 1) * K + k
    faces = [torch.stack([a, b, c], -1).reshape(-1, 3), torch.stack([a, c, d], -1).reshape(-1, 3)]
    if cap:
        n = S * K
        centres = torch.stack([sections[0].mean(0), sections[-1].mean(0)])
        verts = torch.cat([verts, centres])
        ring = torch.arange(K)
        faces.append(torch.stack([torch.full((K,), n), (ring + 1) % K, ring], -1))
        last = (S - 1) * K
        faces.append(torch.stack([torch.full((K,), n + 1), last + ring, last + (ring + 1) % K], -1))
    return _colored(verts, torch.cat(faces), color)


def body(xs, radii, color, *, height=1.0, width=1.0, lift=None, segments: int = 14,
         centre=(0.0, 0.0, 0.0), axis: str = "x") -> Mesh:
    """A body of revolution along x: stations ``xs`` with radii ``radii`` (elliptic cross-section
    scaled by ``height`` (y) and ``width`` (z); ``lift`` raises each station's centre)."""
    xs = torch.as_tensor(xs, dtype=torch.float32)
    r = torch.as_tensor(radii, dtype=torch.float32).clamp_min(1e-3)
    up = torch.zeros_like(xs) if lift is None else torch.as_tensor(lift, dtype=torch.float32)
    th = torch.arange(segments, dtype=torch.float32) * (2 * math.pi / segments)
    y = up[:, None] + height * r[:, None] * torch.cos(th)[None]
    z = width * r[:, None] * torch.sin(th)[None]
    x = xs[:, None].expand_as(y)
    if axis == "x":
        sec = torch.stack([x, y, z], -1)
    elif axis == "z":  # wheels: revolution about z (x→z, z→x)
        sec = torch.stack([z, y, x], -1)
    else:
        raise ValueError(axis)
    return loft(sec + torch.tensor(centre, dtype=torch.float32), color)


#: a thin symmetric-ish airfoil as (chord fraction, upper, lower) thickness fractions
_AIRFOIL_U = torch.tensor([0.0, 0.04, 0.15, 0.35, 0.65, 1.0])
_AIRFOIL_UP = torch.tensor([0.0, 0.55, 0.95, 1.0, 0.6, 0.05])
_AIRFOIL_LO = torch.tensor([0.0, -0.35, -0.55, -0.5, -0.3, -0.05])


def surface(root_le, tip_le, root_chord: float, tip_chord: float, thickness: float, color,
            *, vertical: bool = False) -> Mesh:
    """A lifting surface (wing, stabiliser, fin) lofted from a root to a tip airfoil.

    ``root_le`` / ``tip_le``: leading-edge points (3,); chords run backwards along −x;
    thickness (fraction of chord) is along y for wings, along z when ``vertical`` (fins).
    """
    u = _AIRFOIL_U
    upper = torch.stack([u, _AIRFOIL_UP], -1)
    lower = torch.stack([u, _AIRFOIL_LO], -1).flip(0)[1:-1]
    prof = torch.cat([upper, lower])  # (K, 2): chord fraction, thickness fraction
    secs = []
    for le, chord in ((root_le, root_chord), (tip_le, tip_chord)):
        le = torch.as_tensor(le, dtype=torch.float32)
        pts = torch.zeros(prof.shape[0], 3)
        pts[:, 0] = le[0] - prof[:, 0] * chord
        t = prof[:, 1] * thickness * chord
        if vertical:
            pts[:, 1] = le[1]
            pts[:, 2] = le[2] + t
        else:
            pts[:, 1] = le[1] + t
            pts[:, 2] = le[2]
        secs.append(pts)
    return loft(torch.stack(secs), color)


def box(centre, size, color) -> Mesh:
    """An axis-aligned box (propeller blades, landing-gear legs)."""
    c = torch.as_tensor(centre, dtype=torch.float32)
    h = torch.as_tensor(size, dtype=torch.float32) / 2
    corners = torch.tensor([[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)],
                           dtype=torch.float32)
    faces = torch.tensor([[0, 1, 3], [0, 3, 2], [4, 6, 7], [4, 7, 5], [0, 4, 5], [0, 5, 1],
                          [2, 3, 7], [2, 7, 6], [0, 2, 6], [0, 6, 4], [1, 5, 7], [1, 7, 3]])
    return _colored(c + corners * h, faces, color)


def ellipsoid(centre, radii, color, segments: int = 12, rings: int = 7) -> Mesh:
    """An ellipsoid (canopies, fairings)."""
    t = torch.linspace(-1, 1, rings + 2)[1:-1]
    xs = torch.as_tensor(radii[0]) * t
    rr = torch.sqrt(1 - t ** 2)
    return body(xs, rr, color, height=radii[1], width=radii[2], segments=segments,
                centre=centre)


def _mirror_pair(m: Mesh) -> list[Mesh]:
    return [m, m.mirrored_z()]


def _u(gen: torch.Generator, lo: float, hi: float) -> float:
    return lo + (hi - lo) * float(torch.rand((), generator=gen))


def _pick(gen: torch.Generator, options):
    return options[int(torch.randint(len(options), (), generator=gen))]


def _jitter(gen: torch.Generator, rgb, amount: float = 0.06) -> list[float]:
    return [min(1.0, max(0.0, c + _u(gen, -amount, amount))) for c in rgb]


_LIVERY = [(0.8, 0.1, 0.1), (0.1, 0.25, 0.7), (0.95, 0.6, 0.1), (0.1, 0.55, 0.3),
           (0.5, 0.15, 0.55), (0.1, 0.6, 0.75)]
_DARK = (0.12, 0.13, 0.16)
_GLASS = (0.15, 0.22, 0.35)


def _fuselage(gen, length, radius, nose, tail, color, tail_lift=0.0, tail_radius=0.25,
              height=1.0, width=1.0, segments=14, pointed: bool = False) -> Mesh:
    """Nose at +length/2, tail at −length/2; ``nose``/``tail``: fractions of length that taper."""
    half = length / 2
    n_nose, n_tail = 5, 5
    tn = torch.linspace(0, 1, n_nose)
    xs_nose = half - nose * length * tn
    if pointed:  # ogive-like nose cone
        r_nose = radius * (tn ** 0.75).clamp_min(0.03)
    else:  # rounded (elliptic) nose
        r_nose = radius * torch.sqrt(1 - (1 - tn) ** 2).clamp_min(0.05)
    tt = torch.linspace(0, 1, n_tail + 1)[1:]
    xs_tail = (-half + tail * length) - tail * length * tt
    r_tail = radius * (1 - (1 - tail_radius) * tt ** 1.3)
    xs = torch.cat([xs_nose, xs_tail])
    rs = torch.cat([r_nose, r_tail])
    lift = torch.cat([torch.zeros(n_nose), tail_lift * radius * tt ** 1.5])
    return body(xs, rs, color, lift=lift, height=height, width=width, segments=segments)


def _airliner(gen: torch.Generator) -> list[Mesh]:
    body_col = _jitter(gen, _pick(gen, [(0.93, 0.93, 0.95), (0.85, 0.86, 0.9), (0.95, 0.95, 0.92)]))
    accent = _jitter(gen, _pick(gen, _LIVERY))
    wing_col = _jitter(gen, (0.75, 0.77, 0.8))
    L, R = 1.0, _u(gen, 0.045, 0.065)
    parts = [_fuselage(gen, L, R, _u(gen, 0.1, 0.14), _u(gen, 0.25, 0.32), body_col,
                       tail_lift=0.8, tail_radius=0.2, segments=16)]
    # swept low wing
    span, sweep = _u(gen, 0.42, 0.55), _u(gen, 0.12, 0.25)
    xr = _u(gen, 0.08, 0.14)
    rc, tc = _u(gen, 0.18, 0.24), _u(gen, 0.05, 0.08)
    dih = span * math.tan(math.radians(_u(gen, 3, 7)))
    root, tip = (xr, -0.6 * R, R * 0.5), (xr - sweep, -0.6 * R + dih, span)
    parts += _mirror_pair(surface(root, tip, rc, tc, 0.12, wing_col))
    # engines under the wing (1 or 2 per side)
    n_eng = _pick(gen, [1, 1, 2])
    er, el = _u(gen, 0.022, 0.032), _u(gen, 0.1, 0.14)
    for frac in ([0.35] if n_eng == 1 else [0.3, 0.62]):
        z = frac * span
        x_le = xr - sweep * (z / span)
        eng = body(torch.tensor([0.0, 0.15, 0.85, 1.0]) * -el + x_le + 0.45 * el,
                   torch.tensor([0.85, 1.0, 0.95, 0.7]) * er, (0.6, 0.62, 0.66),
                   centre=(0.0, -0.6 * R + dih * z / span - 1.6 * er, z), segments=10)
        parts += _mirror_pair(eng)
    # tail: fin and stabilisers
    fh, fs = _u(gen, 0.14, 0.2), _u(gen, 0.08, 0.14)
    x_tail = -0.5 + 0.2
    parts.append(surface((x_tail, 0.4 * R, 0), (x_tail - fs, 0.4 * R + fh, 0), _u(gen, 0.15, 0.2),
                         _u(gen, 0.06, 0.09), 0.1, accent, vertical=True))
    ss = _u(gen, 0.13, 0.18)
    parts += _mirror_pair(surface((x_tail + 0.02, 0.45 * R, 0.2 * R), (x_tail - 0.07, 0.55 * R, ss),
                                  _u(gen, 0.1, 0.13), 0.045, 0.1, wing_col))
    # cockpit windows
    parts.append(ellipsoid((0.5 - 0.07, 0.55 * R, 0), (0.035, 0.35 * R, 0.75 * R), _GLASS, 10, 5))
    return parts


def _fighter(gen: torch.Generator) -> list[Mesh]:
    body_col = _jitter(gen, _pick(gen, [(0.55, 0.58, 0.62), (0.42, 0.46, 0.5), (0.45, 0.5, 0.38),
                                        (0.62, 0.64, 0.66)]))
    L, R = 1.0, _u(gen, 0.05, 0.065)
    parts = [_fuselage(gen, L, R, _u(gen, 0.3, 0.4), _u(gen, 0.1, 0.16), body_col,
                       tail_radius=0.7, height=0.85, width=_u(gen, 1.2, 1.5), pointed=True)]
    # engine nozzle(s) and air intakes
    parts.append(body([-0.5 + 0.005, -0.5 - 0.04], [0.62 * R, 0.5 * R], _DARK, segments=10,
                      width=1.2))
    for z in (-1.0, 1.0):
        parts.append(body([0.15, 0.05, -0.15], [0.35 * R, 0.45 * R, 0.4 * R], _DARK,
                          centre=(0.0, -0.2 * R, z * 1.1 * R), segments=8))
    # delta wing
    span = _u(gen, 0.26, 0.36)
    xr = _u(gen, 0.12, 0.2)
    rc = _u(gen, 0.48, 0.58)
    tc = _u(gen, 0.03, 0.08)
    sweep = rc - tc - _u(gen, -0.02, 0.06)
    parts += _mirror_pair(surface((xr, -0.1 * R, 0.5 * R), (xr - sweep, -0.15 * R, span), rc, tc,
                                  0.05, body_col))
    # fins: single or twin canted
    fh = _u(gen, 0.14, 0.2)
    x_f = -0.5 + _u(gen, 0.2, 0.26)
    fin_col = _jitter(gen, body_col, 0.04)
    if _pick(gen, [True, False]):
        parts.append(surface((x_f, 0.6 * R, 0), (x_f - 0.12, 0.6 * R + fh, 0), _u(gen, 0.18, 0.24),
                             0.06, 0.06, fin_col, vertical=True))
    else:
        cant = _u(gen, 0.03, 0.07)
        fin = surface((x_f, 0.5 * R, 0.6 * R), (x_f - 0.1, 0.5 * R + fh * 0.85, 0.6 * R + cant),
                      0.2, 0.06, 0.06, fin_col, vertical=True)
        parts += _mirror_pair(fin)
    if _pick(gen, [True, False]):  # horizontal tailplanes
        parts += _mirror_pair(surface((-0.5 + 0.12, 0, 0.6 * R), (-0.5 + 0.04, 0, 0.16), 0.13, 0.05,
                                      0.05, body_col))
    # bubble canopy
    parts.append(ellipsoid((0.5 - _u(gen, 0.3, 0.36), 0.75 * R, 0), (0.09, 0.55 * R, 0.6 * R),
                           _GLASS, 12, 7))
    return parts


def _glider(gen: torch.Generator) -> list[Mesh]:
    body_col = _jitter(gen, (0.95, 0.95, 0.96), 0.03)
    accent = _jitter(gen, _pick(gen, _LIVERY))
    R = _u(gen, 0.04, 0.05)
    xs = torch.tensor([0.5, 0.47, 0.42, 0.3, 0.15, 0.0, -0.2, -0.4, -0.5])
    rs = R * torch.tensor([0.1, 0.6, 0.85, 1.0, 0.9, 0.55, 0.35, 0.3, 0.22])
    parts = [body(xs, rs, body_col, segments=12)]
    span = _u(gen, 0.85, 1.15)
    rc, tc = _u(gen, 0.09, 0.12), _u(gen, 0.035, 0.05)
    xr = _u(gen, 0.18, 0.24)
    dih = span * math.tan(math.radians(_u(gen, 2, 5)))
    tip_col = accent if _pick(gen, [True, False]) else body_col
    mid = 0.6 * span
    parts += _mirror_pair(surface((xr, 0.4 * R, 0.5 * R), (xr - 0.01, 0.4 * R + dih * 0.6, mid), rc,
                                  0.8 * rc, 0.12, body_col))
    parts += _mirror_pair(surface((xr - 0.01, 0.4 * R + dih * 0.6, mid),
                                  (xr - 0.02 - 0.3 * (rc - tc), 0.4 * R + dih, span),
                                  0.8 * rc, tc, 0.12, tip_col))
    # T-tail
    fh = _u(gen, 0.12, 0.16)
    parts.append(surface((-0.5 + 0.12, 0.2 * R, 0), (-0.5 + 0.07, 0.2 * R + fh, 0), 0.12, 0.08,
                         0.1, accent, vertical=True))
    parts += _mirror_pair(surface((-0.5 + 0.08, 0.2 * R + fh, 0), (-0.5 + 0.06, 0.2 * R + fh,
                                                                   _u(gen, 0.12, 0.16)),
                                  0.07, 0.04, 0.1, body_col))
    parts.append(ellipsoid((0.3, 0.75 * R, 0), (0.12, 0.5 * R, 0.7 * R), _GLASS, 12, 7))
    return parts


def _light_prop(gen: torch.Generator) -> list[Mesh]:
    body_col = _jitter(gen, _pick(gen, _LIVERY + [(0.95, 0.85, 0.2)]))
    wing_col = _jitter(gen, _pick(gen, [(0.95, 0.95, 0.95), body_col]))
    L, R = 0.9, _u(gen, 0.065, 0.08)
    parts = [_fuselage(gen, L, R, 0.12, _u(gen, 0.4, 0.5), body_col, tail_lift=0.6,
                       tail_radius=0.3, height=1.15, segments=12)]
    high = _pick(gen, [True, False])
    span = _u(gen, 0.5, 0.62)
    chord = _u(gen, 0.14, 0.18)
    xr = 0.45 - _u(gen, 0.2, 0.26)
    y_w = (1.05 if high else -0.8) * R
    parts += _mirror_pair(surface((xr, y_w, 0.0), (xr, y_w + (0 if high else 0.03), span),
                                  chord, chord * _u(gen, 0.75, 1.0), 0.14, wing_col))
    # conventional tail
    x_t = -0.45 + 0.14
    parts.append(surface((x_t, 0.35 * R, 0), (x_t - 0.07, 0.35 * R + _u(gen, 0.12, 0.16), 0), 0.15,
                         0.08, 0.1, body_col, vertical=True))
    parts += _mirror_pair(surface((x_t, 0.35 * R, 0), (x_t - 0.02, 0.35 * R, _u(gen, 0.14, 0.18)),
                                  0.1, 0.07, 0.1, wing_col))
    # spinner + two-blade propeller
    parts.append(body([0.45 + 0.06, 0.45 + 0.03, 0.45], [0.05, 0.6, 0.8], (0.2, 0.2, 0.22),
                      segments=10, height=R, width=R))
    blade = _u(gen, 0.13, 0.17)
    parts.append(box((0.45 + 0.035, 0, 0), (0.01, 2 * blade, 0.025), (0.1, 0.1, 0.1)))
    # landing gear: legs and wheels
    for z in (-0.11, 0.11):
        parts.append(box((0.2, -1.3 * R, z * 0.7), (0.015, 1.0 * R, 0.015), _DARK))
        parts.append(body([-0.02, 0.02], [1.0, 1.0], _DARK, centre=(0.2, -1.85 * R, z * 0.8),
                          height=0.03, width=0.03, segments=10, axis="z"))
    parts.append(ellipsoid((0.2, 0.85 * R, 0), (0.1, 0.45 * R, 0.8 * R), _GLASS, 10, 6))
    return parts


def _flying_wing(gen: torch.Generator) -> list[Mesh]:
    col = _jitter(gen, _pick(gen, [(0.3, 0.32, 0.36), (0.45, 0.47, 0.5), (0.9, 0.9, 0.92)]), 0.04)
    span = _u(gen, 0.6, 0.8)
    rc = _u(gen, 0.55, 0.7)
    tc = _u(gen, 0.06, 0.12)
    sweep = _u(gen, 0.35, 0.55) * span
    parts = []
    parts += _mirror_pair(surface((0.3, 0, 0.0), (0.3 - sweep * 0.35, 0.0, 0.3 * span), rc,
                                  0.55 * rc, 0.12, col))
    parts += _mirror_pair(surface((0.3 - sweep * 0.35, 0.0, 0.3 * span), (0.3 - sweep, 0.02, span),
                                  0.55 * rc, tc, 0.08, col))
    parts.append(ellipsoid((0.3 - 0.3 * rc, 0.02, 0), (0.35 * rc, 0.06, 0.1), col, 12, 7))
    parts.append(ellipsoid((0.3 - 0.12 * rc, 0.06, 0), (0.08, 0.025, 0.05), _GLASS, 10, 5))
    if _pick(gen, [True, False]):  # small twin fins
        for z in (-0.18, 0.18):
            parts.append(surface((0.3 - 0.65 * rc, 0.02, z), (0.3 - 0.75 * rc, 0.12, z * 1.1),
                                 0.15, 0.07, 0.08, col, vertical=True))
    return parts


_BUILDERS = (_airliner, _fighter, _glider, _light_prop, _flying_wing)


def make_airplane(family: int, generator: torch.Generator) -> Mesh:
    """One procedural airplane of the given family (index into :data:`FAMILIES`), normalised to
    the unit ball; proportions and colours drawn from ``generator``."""
    if not 0 <= family < len(_BUILDERS):
        raise DataError(f"unknown airplane family {family}; choose 0..{len(_BUILDERS) - 1}")
    mesh = Mesh.concat(_BUILDERS[family](generator))
    return mesh.normalized()
