"""Active-learning strategy ``random``: a random unlabelled case not served to another client lately."""

from __future__ import annotations

from typing import Any

import numpy as np
from monailabel.interfaces.tasks.strategy import Strategy

from lib.activelearning.served import RecentlyServed


class RandomUnlabelled(Strategy):
    def __init__(self, served: RecentlyServed, seed: int | None = None):
        super().__init__("A random unlabelled case (not one served to another client in the last minutes)")
        self.served = served
        self.rng = np.random.default_rng(seed)

    def __call__(self, request: dict[str, Any], datastore) -> dict[str, Any]:
        client, candidates = self.served.candidates(request, datastore)
        if not candidates:
            return {}
        choice = str(self.rng.choice(candidates))
        self.served.mark(choice, client)
        return {"id": choice, "strategy": "random"}
