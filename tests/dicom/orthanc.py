"""A real Orthanc PACS for the tests (Debian ``orthanc`` + ``orthanc-dicomweb``): a temporary config and
storage, HTTP on a free port, the DICOM port off, remote access off (only this machine may talk to
it), stopped by its PID."""

from __future__ import annotations

import contextlib
import json
import shutil
import socket
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

ORTHANC = shutil.which("Orthanc")
DICOMWEB_PLUGIN = Path("/usr/share/orthanc/plugins/libOrthancDicomWeb.so")
AVAILABLE = ORTHANC is not None and DICOMWEB_PLUGIN.is_file()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@contextlib.contextmanager
def orthanc(folder: Path) -> Iterator[str]:
    """Run Orthanc with its storage in ``folder``; yields its DICOMweb root URL."""
    folder.mkdir(parents=True, exist_ok=True)
    port = _free_port()
    config = {
        "Name": "muduo-test-pacs",
        "StorageDirectory": str(folder / "storage"),
        "IndexDirectory": str(folder / "storage"),
        "HttpPort": port,
        "DicomServerEnabled": False,
        "RemoteAccessAllowed": False,
        "AuthenticationEnabled": False,
        "Plugins": [str(DICOMWEB_PLUGIN)],
        "DicomWeb": {"Enable": True, "Root": "/dicom-web/", "Host": "127.0.0.1"},
    }
    (folder / "orthanc.json").write_text(json.dumps(config))
    log = open(folder / "orthanc.log", "w")
    proc = subprocess.Popen([str(ORTHANC), str(folder / "orthanc.json")], stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.time() + 30
        while True:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/system", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError as exc:
                if proc.poll() is not None or time.time() > deadline:
                    tail = (folder / "orthanc.log").read_text()[-2000:]
                    raise RuntimeError(f"Orthanc did not start: {tail}") from exc
                time.sleep(0.2)
        yield f"http://127.0.0.1:{port}/dicom-web"
    finally:
        proc.terminate()  # by its PID
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
