"""Which client was last given which case: strategies skip cases another client is working on."""

from __future__ import annotations

import threading
import time


class RecentlyServed:
    """Which client was last given which case, and when (shared by the strategies)."""

    def __init__(self, minutes: float):
        self.seconds = 60.0 * minutes
        self._served: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()

    def busy(self, image_id: str, client_id: str) -> bool:
        with self._lock:
            owner, when = self._served.get(image_id, (None, 0.0))
            return owner is not None and owner != client_id and time.time() - when < self.seconds

    def mark(self, image_id: str, client_id: str) -> None:
        with self._lock:
            self._served[image_id] = (client_id, time.time())

    def candidates(self, request: dict, datastore) -> tuple[str, list[str]]:
        """(the requesting client's id, the unlabelled cases not recently served to another client)."""
        client = str(request.get("client_id") or "anonymous")
        return client, [i for i in datastore.store.unlabelled_ids() if not self.busy(i, client)]
