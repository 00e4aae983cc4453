"""A property computed on its first read and kept on the instance, with no lock shared between instances."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Generic, TypeVar, overload

T = TypeVar("T")


class cached_value(Generic[T]):  # noqa: N801 -- used as a decorator, like functools.cached_property
    """Like :func:`functools.cached_property` (the value kept in the instance's ``__dict__``, frozen dataclasses
    included), without the one lock Python 3.11's version holds per class attribute, which makes threads computing
    the value for different instances wait for each other. Two threads reading the same instance's value for the
    first time may both compute it; both get the one that was stored first."""

    def __init__(self, function: Callable[[Any], T]) -> None:
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_value[T]: ...

    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...

    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached_value[T]:
        if instance is None:
            return self
        kept = instance.__dict__
        if self.name in kept:
            return kept[self.name]
        return kept.setdefault(self.name, self.function(instance))
