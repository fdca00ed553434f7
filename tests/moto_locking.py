"""moto's DynamoDB, made to keep the real service's guarantee for tests that race.

DynamoDB applies each conditional write atomically; moto's backend checks and writes without a
lock. Serialising its item operations makes races in our tests test our conditions, not moto's
thread safety. Importable from any test directory (pytest puts tests/ on sys.path for its conftest).
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from moto.dynamodb.models import DynamoDBBackend

ITEM_OPERATIONS = ("put_item", "update_item", "delete_item", "get_item", "batch_get_item")


@contextlib.contextmanager
def serialised_dynamodb() -> Iterator[pytest.MonkeyPatch]:
    """While open, moto's item operations run one at a time; yields the patch for further changes."""
    lock = threading.RLock()
    with pytest.MonkeyPatch.context() as patch:
        for name in ITEM_OPERATIONS:
            original = getattr(DynamoDBBackend, name)

            def locked(
                self: Any, *args: Any, __original: Callable[..., Any] = original, **kwargs: Any
            ) -> Any:
                with lock:
                    return __original(self, *args, **kwargs)

            patch.setattr(DynamoDBBackend, name, locked)
        yield patch
