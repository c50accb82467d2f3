"""Property tests (hypothesis): config overrides and image inputs never fail but with a clear error.

- Config: any valid key with a value of its type round-trips through ``--set``; any text at all
  either loads or raises ConfigError; any key outside the schema, and any ill-typed value, raises
  ConfigError (never another exception, which the CLI would show as a traceback).
- Images: any array (shape, dtype, NaN/inf) given to `groupact transform` (.npy) or as a
  data.kind=npz file either loads as finite float32 in [0, 1] of the right shape, or raises
  DataError.
"""

from __future__ import annotations

import dataclasses
import json
import string
import types
import typing
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from groupact.config import Config, load_config
from groupact.data.images import load_npz
from groupact.errors import ConfigError, DataError
from groupact.transform import read_input

FAST = settings(max_examples=60, deadline=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


# --- the schema, walked -----------------------------------------------------------------------

def leaves(cls=Config, prefix: str = "") -> dict[str, typing.Any]:
    """Dotted key → type annotation, for every leaf of the config schema."""
    out = {}
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            out.update(leaves(tp, f"{prefix}{f.name}."))
        else:
            out[f"{prefix}{f.name}"] = tp
    return out


LEAVES = leaves()
SECTIONS = {k.rsplit(".", i)[0] for k in LEAVES for i in range(1, k.count(".") + 1)}
TEXT = st.text(alphabet=string.ascii_letters + string.digits + " _-./:+", max_size=12)


def value_of(tp) -> st.SearchStrategy:
    """Values a field of type ``tp`` accepts (and keeps as they are)."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return st.none() | value_of(inner)
    if origin is list:
        return st.lists(value_of(typing.get_args(tp)[0]), max_size=4)
    if origin is typing.Literal:
        return st.sampled_from(typing.get_args(tp))
    return {bool: st.booleans(), int: st.integers(-10**9, 10**9),
            float: st.floats(allow_nan=False, allow_infinity=False, width=64), str: TEXT}[tp]


def wrong_value_of(tp) -> st.SearchStrategy:
    """Values a field of type ``tp`` must refuse."""
    origin = typing.get_origin(tp)
    if origin in (typing.Union, types.UnionType):
        (inner,) = [a for a in typing.get_args(tp) if a is not type(None)]
        return wrong_value_of(inner)
    words = st.text(alphabet=string.ascii_letters, min_size=1, max_size=8).filter(
        lambda w: w.lower() not in {"nan", "inf", "infinity"})
    if origin is typing.Literal:   # text outside the choices, or not text at all
        return words.filter(lambda w: w not in typing.get_args(tp)) | st.booleans() \
            | st.integers() | st.lists(words, max_size=2)
    if origin is list:  # not a list at all, or a list holding a wrong item
        (inner,) = typing.get_args(tp)
        return st.integers() | words | st.lists(wrong_value_of(inner), min_size=1, max_size=3)
    return {bool: st.integers() | words | st.lists(st.booleans(), max_size=2),
            int: words | st.booleans() | st.floats(0.01, 0.99) | st.lists(st.integers(), max_size=2),
            float: words | st.booleans() | st.lists(st.floats(0, 1), max_size=2)
            | st.sampled_from([float("nan"), float("inf")]),
            str: st.booleans() | st.lists(words, max_size=2)
            | st.dictionaries(words, st.integers(), min_size=1, max_size=2)}[tp]


def get(cfg: Config, key: str):
    for part in key.split("."):
        cfg = getattr(cfg, part)
    return cfg


def as_override(key: str, value) -> str:
    """``key=value`` with the value in JSON (which YAML reads back as the same value)."""
    return f"{key}={json.dumps(value)}"


@st.composite
def valid_overrides(draw):
    keys = draw(st.lists(st.sampled_from(sorted(LEAVES)), min_size=1, max_size=5))
    return [(k, draw(value_of(LEAVES[k]))) for k in keys]


@FAST
@given(valid_overrides())
def test_valid_overrides_round_trip(pairs):
    cfg = load_config("rotmnist-c4", [as_override(k, v) for k, v in pairs])
    final = dict(pairs)  # the last --set of a key wins
    for key, value in final.items():
        got = get(cfg, key)
        assert got == value and type(got) is type(value), (key, value, got)
    assert load_config(cfg.to_dict()) == cfg  # and the resolved config reloads to itself


@FAST
@given(st.text(max_size=40))
def test_any_override_text_loads_or_is_a_config_error(text):
    try:
        load_config("rotmnist-c4", [text])
    except ConfigError as e:
        assert str(e)  # a message to show; any other exception type fails the test


SEGMENT = st.text(alphabet=string.ascii_lowercase + "_", min_size=1, max_size=8)


@FAST
@given(st.lists(SEGMENT, min_size=1, max_size=4), st.one_of(st.integers(), TEXT, st.booleans()))
def test_keys_outside_the_schema_are_config_errors(parts, value):
    key = ".".join(parts)
    prefixes = {".".join(parts[:i]) for i in range(1, len(parts) + 1)}
    assume(not prefixes & (set(LEAVES) | SECTIONS))  # some segment is not in the schema ...
    with pytest.raises(ConfigError, match="unknown config key"):
        load_config("rotmnist-c4", [as_override(key, value)])


@FAST
@given(st.sampled_from(sorted(LEAVES)).flatmap(lambda k: st.tuples(st.just(k),
                                                                    wrong_value_of(LEAVES[k]))))
def test_ill_typed_values_are_config_errors_that_name_the_key(pair):
    key, value = pair
    with pytest.raises(ConfigError, match=f"'{key}"):
        load_config("rotmnist-c4", [as_override(key, value)])


# --- image inputs ----------------------------------------------------------------------------

DTYPES = [np.uint8, np.uint16, np.int8, np.int16, np.int32, np.int64, np.float16, np.float32,
          np.float64, np.bool_]


@st.composite
def arrays(draw, shapes=None):
    """Arrays of any shape and dtype; floats may hold NaN, inf, negatives or 0..255 values."""
    dtype = np.dtype(draw(st.sampled_from(DTYPES)))
    shape = draw(shapes if shapes is not None else
                 st.lists(st.sampled_from([0, 1, 2, 3, 4, 6, 8]), max_size=5).map(tuple))
    n = int(np.prod(shape))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    if dtype.kind == "b":
        arr = rng.integers(0, 2, n).astype(bool)
    elif dtype.kind in "iu":  # non-negative: negative integers are a known bug (see below)
        hi = min(draw(st.sampled_from([1, 255, 70000])), int(np.iinfo(dtype).max))
        arr = rng.integers(0, hi, n, endpoint=True, dtype=np.int64).astype(dtype)
    else:
        scale = draw(st.sampled_from([1.0, 255.0, 1000.0]))
        arr = (rng.random(n) * scale + draw(st.sampled_from([0.0, -0.5]))).astype(dtype)
        if n and draw(st.booleans()):
            arr[rng.integers(0, n)] = draw(st.sampled_from([np.nan, np.inf, -np.inf]))
    return arr.reshape(shape)


IMAGE_SHAPES = st.sampled_from([(1, 6, 6), (3, 6, 6), (1, 8, 8)])


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("prop")


def _is_unit_float(x: torch.Tensor) -> bool:
    return x.dtype == torch.float32 and bool(torch.isfinite(x).all()) and \
        (x.numel() == 0 or (float(x.min()) >= 0 and float(x.max()) <= 1))


@FAST
@given(arrays(st.one_of(st.lists(st.sampled_from([0, 1, 3, 6, 8]), max_size=5).map(tuple),
                        st.sampled_from([(6, 6), (1, 6, 6), (3, 6, 6), (1, 1, 6, 6), (8, 8)]))),
       IMAGE_SHAPES)
def test_transform_input_loads_correctly_or_is_a_data_error(scratch, arr, input_shape):
    path = scratch / "input.npy"
    np.save(path, arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a warning would be a second line on stderr
        try:
            x = read_input(path, input_shape)
        except DataError:
            return
    assert tuple(x.shape) == (1, *input_shape) and _is_unit_float(x)
    if arr.dtype == np.uint8:
        assert torch.equal((x * 255).round().to(torch.uint8).reshape(-1),
                           torch.from_numpy(arr.reshape(-1)))


@FAST
@given(arrays(st.one_of(st.lists(st.sampled_from([0, 1, 3, 4, 6]), max_size=5).map(tuple),
                        st.sampled_from([(12, 6, 6), (12, 1, 6, 6), (12, 6, 6, 3), (3, 4, 4)]))))
def test_npz_images_load_correctly_or_are_a_data_error(scratch, arr):
    path = scratch / "images.npz"
    np.savez(path, images=arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            splits = load_npz(path)
        except DataError:
            return
    for part in (splits.train, splits.val, splits.test):
        assert part.images.dim() == 4 and _is_unit_float(part.images) and len(part) >= 1
    assert len(splits.train) + len(splits.val) + len(splits.test) <= arr.shape[0]


#: inputs that once slipped through ``data/base.py:to_unit_float`` (a TypeError, a warning, values
#: below 0): each must now be a DataError, with no warning
KNOWN_BAD_ARRAYS = {
    "text-dtype": (np.full((6, 6), "a"), "TypeError from torch.as_tensor instead of DataError"),
    "complex-dtype": (np.full((6, 6), 0.5 + 0.5j, np.complex64),
                      "a UserWarning, and the imaginary part silently dropped"),
    "negative-ints": (np.full((6, 6), -5, np.int16), "loads as -5/255-ish values below 0"),
}


@pytest.mark.parametrize("name", list(KNOWN_BAD_ARRAYS))
def test_known_bad_arrays_are_data_errors(scratch, name):
    arr, _ = KNOWN_BAD_ARRAYS[name]
    np.save(scratch / f"{name}.npy", arr)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        with pytest.raises(DataError):
            read_input(scratch / f"{name}.npy", (1, 6, 6))
