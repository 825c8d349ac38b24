"""Routes the app adds to MONAI Label's server at start-up (``MuDuoApp.on_init_complete``).

- ``POST /train/{model}`` is checked before MONAI Label starts the training subprocess: an unknown
  model answers 404 and a bad request body 422 with the reason (stock MONAI Label starts the
  subprocess anyway and the error only surfaces later, or as a bare 500).
- ``GET /datastore/pet?image=ID`` downloads the case's PET (the datastore image is the CT).
They are inserted ahead of MONAI Label's own routes and use the same role checks.
"""

from __future__ import annotations

import sys

from fastapi import Depends
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute

from lib.errors import http_errors, not_found


def install(instance) -> bool:
    """Add the routes to the running server's FastAPI app; False when there is none (a subprocess)."""
    module = sys.modules.get("monailabel.app")
    server = getattr(module, "app", None)
    if server is None:
        return False
    from monailabel.config import RBAC_ADMIN, RBAC_USER, settings
    from monailabel.endpoints import train
    from monailabel.endpoints.user.auth import RBAC, User

    async def train_checked(
        model: str,
        params: dict | None = None,
        run_sync: bool | None = False,
        enqueue: bool | None = False,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
    ):
        task = instance._trainers.get(model)
        if task is None:
            raise not_found(f"unknown training task {model!r}; available: {sorted(instance._trainers)}")
        with http_errors():
            task.check(dict(params or {}))
        return train.run_model(model, params, run_sync, enqueue)

    async def download_pet(image: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))):
        path = instance.datastore().pet_uri(image)
        return FileResponse(path, media_type="application/gzip", filename=f"{image}_pet.nii.gz")

    prefix = settings.MONAI_LABEL_API_STR
    routes = [
        APIRoute(
            f"{prefix}/train/{{model}}",
            train_checked,
            methods=["POST"],
            summary=f"{RBAC_ADMIN}Run a training task (request body checked first)",
        ),
        APIRoute(
            f"{prefix}/datastore/pet", download_pet, methods=["GET"], summary=f"{RBAC_USER}Download the PET of a case"
        ),
    ]
    server.router.routes[:0] = routes
    return True
