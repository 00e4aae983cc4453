"""moleseg.core.cached.cached_value: computed once per instance, kept in its ``__dict__``, and never a lock shared
by the instances of a class (threads computing different instances' values run at the same time)."""

from __future__ import annotations

import threading
from dataclasses import dataclass

from moleseg.core.cached import cached_value


@dataclass(frozen=True)
class Square:
    side: int
    calls: list[int]

    @cached_value
    def area(self) -> int:
        """The side squared."""
        self.calls.append(self.side)
        return self.side * self.side


def test_the_value_is_computed_once_and_kept_on_a_frozen_instance():
    calls: list[int] = []
    square = Square(3, calls)
    assert (square.area, square.area) == (9, 9)
    assert calls == [3] and square.__dict__["area"] == 9
    assert Square.area.__doc__ == "The side squared." and isinstance(Square.area, cached_value)


def test_two_instances_compute_their_values_at_the_same_time():
    """Each computation waits at a barrier for the other: under one lock for the class the second could never
    reach it and the barrier breaks."""
    meeting = threading.Barrier(2, timeout=20)

    class Slow:
        @cached_value
        def value(self) -> int:
            meeting.wait()
            return 1

    errors: list[BaseException] = []

    def read(instance: Slow) -> None:
        try:
            instance.value
        except BaseException as error:  # noqa: BLE001 -- reported below
            errors.append(error)

    threads = [threading.Thread(target=read, args=(Slow(),)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []


def test_readers_of_one_instance_get_the_value_stored_first():
    started = threading.Barrier(2, timeout=20)

    class Fresh:
        @cached_value
        def value(self) -> object:
            started.wait()
            return object()

    instance = Fresh()
    seen: list[object] = []
    threads = [threading.Thread(target=lambda: seen.append(instance.value)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(seen) == 2 and seen[0] is seen[1] is instance.value

