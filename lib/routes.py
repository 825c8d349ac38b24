"""The server's routes: MONAI Label's own, either checked, closed, or added (``MuDuoApp.on_init_complete``).

They are inserted ahead of MONAI Label's routes, so they answer first, and keep its role checks.

Checked (the same URLs and parameters the MONAI Label client and the 3D Slicer plugin use):

- ``POST /infer/{model}``: an image id of the datastore only (a path, an upload or a session is refused,
  and an unknown id and a path answer alike); ``params`` must be a JSON object; ``save_label`` and
  ``label_tag`` are refused: inference never writes a label.
- ``PUT /datastore/label`` and ``PUT /datastore/image`` (and its alias ``PUT /datastore/``): the upload
  is received into a private temporary folder with a byte cap (removed on every path), checked by
  :mod:`mudo_app.io.uploads` (voxel cap from the header, gzip verified end to end) before anything
  is stored; ``params`` must be a JSON object; client parameters never overwrite provenance.
- ``POST /train/{model}``: the body is checked as strictly as ``muduo train``'s config before anything
  starts; ``run_sync`` (training inside the server process, where ``DELETE /train/`` cannot stop it) and
  ``enqueue`` (a queue of runs) are refused: one run at a time, always in its own process.
  ``POST /train/`` (MONAI Label's deprecated "train everything") is refused with the route to use.
- ``POST /activelearning/{strategy}``: ``params`` must be a JSON object.

Every checked route is a plain function, so the server runs it in a worker thread: a long inference
or label save never holds up other requests (``/info/`` keeps answering).

Closed (each answers with the reason): sessions (their tar upload wrote anywhere), model upload and
delete, image and label delete (label history is never lost), dataset download, logs (paths,
parameters and tracebacks), the DICOM proxy, OHIF, batch inference, scoring, whole-slide inference and
``/reload``.

Added: ``GET /datastore/pet?image=ID`` downloads the case's PET (the datastore image is the CT);
``GET /datastore/export?image=ID&format=rtstruct|seg[&tag=final][&holes=nested|keyhole]`` gives the
case's label as DICOM against the CT series it was imported from (404 no such label, 409 a case not
imported from DICOM; it writes nothing to the datastore);
``GET /train/`` gives a failed run's ``reason``; the login routes ``GET /auth/``, ``POST /auth/token``,
``GET /auth/token/valid`` (:mod:`lib.security`), whose middleware then guards every other route when
``--conf auth_users`` is given. CORS is narrowed to ``--conf allowed_origins`` (none by default).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import BackgroundTasks, Body, Depends, File, Form, HTTPException, Request, UploadFile
from fastapi.responses import FileResponse
from fastapi.routing import APIRoute
from monailabel.config import RBAC_ADMIN, RBAC_ANNOTATOR, RBAC_USER, settings
from monailabel.endpoints import train
from monailabel.endpoints.activelearning import sample
from monailabel.endpoints.infer import ResultType, send_response
from monailabel.endpoints.user.auth import RBAC, User

from lib.errors import http_errors, not_found, unprocessable
from lib.security import AuthMiddleware, BodySizeLimit, TokenIssuer, Users, restrict_cors, user_of
from lib.trainers.muduo import explain_end
from mudo_app.dicom.case_export import NoDicomSource, NoLabel, export_case
from mudo_app.errors import InputError
from mudo_app.io.atomic import file_digest

ALL_METHODS = ("GET", "POST", "PUT", "DELETE", "PATCH")
UPLOAD_SUFFIXES = (".nii.gz", ".nii", ".nrrd")


@dataclass(frozen=True)
class Closed:
    """A stock route this server does not offer, and why."""

    path: str
    methods: tuple[str, ...]
    status: int
    reason: str


_NO_DELETE = "label history is never lost here; correct a label by saving a new version (PUT /datastore/label)"
CLOSED = (
    Closed("/session/", ALL_METHODS, 404, "sessions are off: add the case with PUT /datastore/image, infer by id"),
    Closed("/session/{rest:path}", ALL_METHODS, 404, "sessions are off: add the case with PUT /datastore/image"),
    Closed("/model/{model}", ("PUT", "DELETE"), 405, "models are replaced only by a training run (POST /train/muduo)"),
    Closed("/datastore/image", ("DELETE",), 405, f"cases are not deleted through the server: {_NO_DELETE}"),
    Closed("/datastore/", ("DELETE",), 405, f"cases are not deleted through the server: {_NO_DELETE}"),
    Closed("/datastore/label", ("DELETE",), 405, f"labels are not deleted: {_NO_DELETE}"),
    Closed("/datastore/dataset", ("GET",), 404, "dataset download is not offered"),
    Closed("/logs/", ("GET",), 404, "server logs are not served; a training run's lines are in GET /train/"),
    Closed("/proxy/{rest:path}", ALL_METHODS, 404, "the DICOM proxy is not offered"),
    Closed("/ohif/{rest:path}", ALL_METHODS, 404, "the OHIF viewer is not served"),
    Closed("/batch/infer", ALL_METHODS, 404, "batch inference is not offered: use `muduo predict`"),
    Closed("/batch/infer/{model}", ALL_METHODS, 404, "batch inference is not offered: use `muduo predict`"),
    Closed("/scoring/", ALL_METHODS, 404, "scoring is not offered"),
    Closed("/scoring/{method}", ALL_METHODS, 404, "scoring is not offered"),
    Closed("/infer/wsi/{model}", ALL_METHODS, 404, "whole-slide inference is not offered"),
    Closed("/infer/wsi_v2/{model}", ALL_METHODS, 404, "whole-slide inference is not offered"),
)
CLOSED_AT_ROOT = (Closed("/reload", ALL_METHODS, 404, "reloading the app over HTTP is not offered"),)


def parse_params(text: str | None, what: str = "params") -> dict[str, Any]:
    """A form field holding a JSON object; anything else is a 422 naming the problem."""
    if text is None or text == "":
        return {}
    try:
        value = json.loads(text)
    except (TypeError, ValueError) as exc:
        raise unprocessable(f"{what} must be a JSON object: {exc}") from exc
    if not isinstance(value, dict):
        raise unprocessable(f"{what} must be a JSON object, got {type(value).__name__}")
    return value


@contextmanager
def received_upload(upload: UploadFile, max_bytes: int) -> Iterator[Path]:
    """The upload in a private temporary folder (at most ``max_bytes``; 413 beyond), removed on every path.

    Error messages about the file name the upload, never the server's temporary path.
    """
    name = upload.filename or "upload.nii.gz"
    suffix = next((s for s in UPLOAD_SUFFIXES if name.lower().endswith(s)), None)
    if suffix is None:
        raise unprocessable(f"upload {name!r}: the file name must end in one of {UPLOAD_SUFFIXES}")
    folder = Path(tempfile.mkdtemp(prefix="muduo-upload-"))
    path = folder / f"upload{suffix}"
    try:
        size = 0
        with open(path, "wb") as out:
            while chunk := upload.file.read(1 << 20):
                size += len(chunk)
                if size > max_bytes:
                    raise HTTPException(413, f"upload {name!r} is larger than this server's limit of {max_bytes} bytes")
                out.write(chunk)
        try:
            yield path
        except InputError as exc:
            raise InputError(str(exc).replace(str(path), f"the upload {name!r}")) from exc
        except HTTPException as exc:
            exc.detail = str(exc.detail).replace(str(path), f"the upload {name!r}")
            raise
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _closed(rule: Closed) -> Callable[[], None]:
    def endpoint() -> None:
        raise HTTPException(status_code=rule.status, detail=rule.reason)

    return endpoint


def install(instance: Any) -> bool:
    """Add the routes to the running server's FastAPI app; False when there is none (a subprocess)."""
    module = sys.modules.get("monailabel.app")
    server = getattr(module, "app", None)
    if server is None:
        return False
    prefix = settings.MONAI_LABEL_API_STR
    conf = instance.server_config
    if server.middleware_stack is None:  # built on the first call; the lifespan call made it already
        server.middleware_stack = server.build_middleware_stack()
    if not restrict_cors(server.middleware_stack, conf.allowed_origins):
        raise RuntimeError("MONAI Label's CORS middleware was not found: refusing to serve with its wide default")
    server.middleware_stack = BodySizeLimit(server.middleware_stack, conf.max_upload_bytes + (1 << 20))
    issuer = None
    if instance.users is not None:
        issuer = TokenIssuer(conf.model_dir / ".auth_secret", conf.token_minutes)
        server.middleware_stack = AuthMiddleware(server.middleware_stack, issuer, prefix)
    routes = _auth_routes(instance.users, issuer, prefix) + _checked_routes(instance, prefix)
    closed = [(f"{prefix}{rule.path}", rule) for rule in CLOSED] + [(rule.path, rule) for rule in CLOSED_AT_ROOT]
    for path, rule in closed:
        routes.append(APIRoute(path, _closed(rule), methods=list(rule.methods), include_in_schema=False))
    server.router.routes[:0] = routes
    return True


def _auth_routes(users: Users | None, issuer: TokenIssuer | None, prefix: str) -> list[APIRoute]:
    """MONAI Label's login routes (what its client and the Slicer plugin call), backed by the local users file."""

    def enabled() -> dict[str, Any]:
        return {"enabled": users is not None, "client_id": None, "realm": None}

    def token(username: str = Form(...), password: str = Form(...)) -> dict[str, str]:
        if users is None or issuer is None:
            raise not_found("authentication is off on this server: no token is needed")
        roles = users.check(username, password)
        if roles is None:
            raise HTTPException(401, "wrong user name or password", headers={"WWW-Authenticate": "Bearer"})
        return {"access_token": issuer.issue(username, roles), "token_type": "bearer"}

    def valid(request: Request) -> dict[str, Any]:
        return {"username": user_of(request.state, "admin"), "enabled": users is not None}

    return [
        APIRoute(f"{prefix}/auth/", enabled, methods=["GET"], summary="Whether authentication is on"),
        APIRoute(f"{prefix}/auth/token", token, methods=["POST"], summary="Log in: a bearer token"),
        APIRoute(f"{prefix}/auth/token/valid", valid, methods=["GET"], summary="Whether the token is valid"),
    ]


def _checked_routes(instance: Any, prefix: str) -> list[APIRoute]:
    conf = instance.server_config
    training = threading.Lock()  # the running-task check and the start happen as one step

    def infer(
        background_tasks: BackgroundTasks,
        model: str,
        image: str = "",
        session_id: str = "",
        params: str = Form("{}"),
        file: UploadFile | None = File(None),
        label: UploadFile | None = File(None),
        output: ResultType | None = None,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ) -> Any:
        if file is not None or label is not None or session_id:
            raise unprocessable(
                "this server infers on datastore cases only (CT and PET by one id): add the case with "
                "PUT /datastore/image, then POST /infer/{model}?image=ID"
            )
        if not image:
            raise unprocessable("give the case: POST /infer/{model}?image=ID (an id of the datastore)")
        # the model, the id and the no-label rule are checked by MuDuoApp.infer, the one place for them
        result = instance.infer({**parse_params(params), "model": model, "image": image})
        return send_response(instance.datastore(), result, output, background_tasks)

    def save_label(
        request: Request,
        image: str,
        tag: str = "final",
        params: str = Form("{}"),
        label: UploadFile = File(...),
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
    ) -> dict[str, Any]:
        info = parse_params(params)
        datastore = instance.datastore()
        datastore.require(image)
        with http_errors(), received_upload(label, conf.max_upload_bytes) as path:
            who = user_of(request.state, user.username)
            label_id = datastore.save_label(image, str(path), tag or "final", info, user=who)
        return {**(instance.on_save_label(image, label_id) or {}), "image": image, "label": label_id}

    def add_image(
        request: Request,
        image: str | None = None,
        params: str = Form("{}"),
        file: UploadFile = File(...),
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ANNOTATOR)),
    ) -> dict[str, Any]:
        info = parse_params(params)
        with http_errors(), received_upload(file, conf.max_upload_bytes) as path:
            who = user_of(request.state, user.username)
            image_id = instance.datastore().add_image(image or "", str(path), info, user=who)
        return {"image": image_id}

    def train_model(
        model: str,
        params: dict[str, Any] | None = Body(None),
        run_sync: bool = False,
        enqueue: bool = False,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN)),
    ) -> Any:
        task = instance._trainers.get(model)
        if task is None:
            raise not_found(f"unknown training task {model!r}; available: {sorted(instance._trainers)}")
        if run_sync:
            raise unprocessable("run_sync is refused: training runs in its own process, where DELETE /train/ stops it")
        if enqueue:
            raise unprocessable("enqueue is refused: one training run at a time (GET /train/ shows the running one)")
        if params is not None and not isinstance(params, dict):
            raise unprocessable(f"the training request body must be a JSON object, got {type(params).__name__}")
        with http_errors():
            task.check(dict(params or {}))
        with training:
            return train.run_model(model, params, False, False)

    def train_status(
        all: bool = False,
        check_if_running: bool = False,
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ) -> Any:
        result = train.status(all, check_if_running)
        tasks = result if isinstance(result, list) else [result]
        out = [explain_end(t) for t in tasks]
        return out if isinstance(result, list) else out[0]

    def train_all(user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_ADMIN))) -> None:
        raise not_found(f"name the training task: POST /train/{{model}} with one of {sorted(instance._trainers)}")

    def next_sample(
        strategy: str,
        params: Any = Body(None),
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ) -> Any:
        if params is not None and not isinstance(params, dict):
            raise unprocessable(f"the request body must be a JSON object, got {type(params).__name__}")
        with http_errors():
            return sample(strategy, params, user.username)

    def download_pet(image: str, user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER))) -> FileResponse:
        path = instance.datastore().pet_uri(image)
        return FileResponse(path, media_type="application/gzip", filename=f"{image}_pet.nii.gz")

    def export_label(
        image: str,
        background: BackgroundTasks,
        format: str = "rtstruct",
        tag: str = "final",
        holes: str = "nested",
        user: User = Depends(RBAC(settings.MONAI_LABEL_AUTH_ROLE_USER)),
    ) -> FileResponse:
        datastore = instance.datastore()
        datastore.require(image)
        folder = Path(tempfile.mkdtemp(prefix="muduo-export-"))
        background.add_task(shutil.rmtree, folder, True)  # after the response is sent
        out = folder / f"{image}_{format}.dcm"
        try:
            version = file_digest(conf.published_student)
            export_case(datastore.store, image, format, out, tag=tag, holes=holes, version=version)
        except NoLabel as exc:
            shutil.rmtree(folder, True)
            raise not_found(str(exc)) from exc
        except NoDicomSource as exc:
            shutil.rmtree(folder, True)
            raise HTTPException(409, str(exc)) from exc
        except InputError as exc:
            shutil.rmtree(folder, True)
            raise unprocessable(str(exc)) from exc
        return FileResponse(out, media_type="application/dicom", filename=out.name)

    return [
        APIRoute(f"{prefix}/infer/{{model}}", infer, methods=["POST"], summary=f"{RBAC_USER}Run inference (checked)"),
        APIRoute(f"{prefix}/datastore/label", save_label, methods=["PUT"], summary=f"{RBAC_ANNOTATOR}Save a label"),
        APIRoute(f"{prefix}/datastore/image", add_image, methods=["PUT"], summary=f"{RBAC_ANNOTATOR}Add a case"),
        APIRoute(f"{prefix}/datastore/", add_image, methods=["PUT"], include_in_schema=False),
        APIRoute(f"{prefix}/train/{{model}}", train_model, methods=["POST"], summary=f"{RBAC_ADMIN}Run training"),
        APIRoute(f"{prefix}/train/", train_all, methods=["POST"], include_in_schema=False),
        APIRoute(f"{prefix}/train/", train_status, methods=["GET"], summary=f"{RBAC_USER}Training status"),
        APIRoute(f"{prefix}/activelearning/{{strategy}}", next_sample, methods=["POST"], summary=f"{RBAC_USER}Next"),
        APIRoute(f"{prefix}/datastore/pet", download_pet, methods=["GET"], summary=f"{RBAC_USER}Download the PET"),
        APIRoute(
            f"{prefix}/datastore/export", export_label, methods=["GET"], summary=f"{RBAC_USER}Label as RTSTRUCT or SEG"
        ),
    ]
