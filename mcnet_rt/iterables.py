"""Small generic helpers over iterators."""
from __future__ import annotations

import itertools
from collections.abc import Iterator


def batches(items: Iterator, size: int) -> Iterator[list]:
    """Lists of up to `size` consecutive items."""
    while batch := list(itertools.islice(items, size)):
        yield batch
