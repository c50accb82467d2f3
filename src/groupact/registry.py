"""One shape for every registry of named parts a recipe can pick (groups, masks, …).

An entry is a factory, a one-line description and the parameters the factory reads. Building an
entry with a parameter it does not read is an error naming the parameters it does read, so a
recipe's ``group.n=8`` on ``so3`` fails instead of being dropped; an unknown name is an error
with the nearest valid one. ``groupact info`` lists every registry from here.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from groupact.errors import ConfigError, did_you_mean

T = TypeVar("T")


@dataclass(frozen=True)
class Entry(Generic[T]):
    """One registered part."""

    name: str
    factory: Callable[..., T]
    description: str
    params: tuple[str, ...] = ()
    #: what else a kind records about an entry (a net's pixel range)
    meta: tuple[tuple[str, Any], ...] = ()

    def get(self, key: str, default: Any = None) -> Any:
        return dict(self.meta).get(key, default)


class Registry(Generic[T]):
    """name → :class:`Entry`, for the recipe key ``key`` (e.g. ``group.name``)."""

    def __init__(self, key: str, params_prefix: str | None = None, unknown_hint: str = ""):
        self.key = key
        #: added to the unknown-name error (e.g. how to name a user's own part instead)
        self.unknown_hint = unknown_hint
        #: where a recipe sets an entry's parameters (``group`` for group.n, group.size, …)
        self.params_prefix = params_prefix if params_prefix is not None \
            else key.rsplit(".", 1)[0]
        self._entries: dict[str, Entry[T]] = {}

    def register(self, name: str, factory: Callable[..., T], description: str,
                 params: Iterable[str] = (), **meta: Any) -> None:
        """Make ``name`` available to recipes (a later registration of a name replaces it)."""
        self._entries[name] = Entry(name, factory, description, tuple(params),
                                    tuple(sorted(meta.items())))

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(sorted(self._entries))

    def __len__(self) -> int:
        return len(self._entries)

    def entry(self, name: str) -> Entry[T]:
        if name not in self._entries:
            raise ConfigError(f"unknown {self.key} '{name}'{did_you_mean(name, self)}; choose "
                              f"one of: {', '.join(self)}{self.unknown_hint}")
        return self._entries[name]

    def _reads(self, e: Entry[T]) -> str:
        """"it reads prefix.a, prefix.b" for an error about a parameter the entry does not read."""
        if not e.params:
            return "it reads no parameters"
        return "it reads " + ", ".join(f"{self.params_prefix}.{p}" for p in e.params)

    def build(self, name: str, **params: Any) -> T:
        """The entry's object; every parameter must be one the entry reads."""
        e = self.entry(name)
        extra = sorted(set(params) - set(e.params))
        if extra:
            raise ConfigError(f"{self.params_prefix}.{extra[0]} does not apply to "
                              f"{self.key}={name} ({self._reads(e)}); remove it")
        return e.factory(**params)

    def build_from(self, name: str, section: Any, skip: Iterable[str] = (), strict: bool = True,
                   **runtime: Any) -> T:
        """The entry's object from a config section (a dataclass): the fields the entry reads are
        passed on; with ``strict``, a field it does not read that is set away from its default is
        an error (so ``group.n=8`` on so3 fails instead of being dropped). ``runtime``: arguments
        that do not come from the recipe (a channel count, a generator)."""
        e = self.entry(name)
        defaults = type(section)()
        values = {f.name: getattr(section, f.name) for f in dataclasses.fields(section)
                  if f.name not in set(skip)}
        unread = [k for k, v in values.items() if k not in e.params and v != getattr(defaults, k)]
        if unread and strict:
            raise ConfigError(f"{self.params_prefix}.{unread[0]}={values[unread[0]]!r} does not "
                              f"apply to {self.key}={name} ({self._reads(e)}); remove it")
        return e.factory(**{k: values[k] for k in e.params if k in values}, **runtime)

    def describe(self) -> list[tuple[str, str]]:
        """(name, description) of every entry, sorted by name."""
        return [(n, self._entries[n].description) for n in self]
