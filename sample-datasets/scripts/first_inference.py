"""Fresh clone to first prompt-free inference through ``make serve``: how long a new user waits.

Clones ``--repo`` (default: this checkout's committed HEAD) into a temporary folder, runs ``make serve``
there on ``--port``, and polls ``POST /infer/muduo_student`` on a demo case until it answers 200. Records
when set-up, the demo data and the first answer were done (seconds from the start of ``git clone``),
then stops the server and removes the clone. Run it with nothing else on the machine.

    .venv/bin/python sample-datasets/scripts/first_inference.py --json sample-datasets/benchmarks/first_inference.json
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

from mudo_app.bench.machine import describe
from mudo_app.io.atomic import write_json

REPO = Path(__file__).resolve().parents[2]
MARKS = {"set-up done": "setup_done_s", "demo ready": "demo_ready_s", "Uvicorn running": "server_listening_s"}


def _infer(port: int, image: str) -> int:
    boundary = uuid.uuid4().hex
    body = f'--{boundary}\r\nContent-Disposition: form-data; name="params"\r\n\r\n{{}}\r\n--{boundary}--\r\n'.encode()
    req = urllib.request.Request(
        f"http://127.0.0.1:{port}/infer/muduo_student?image={image}&output=json",
        data=body,
        headers={"Content-Type": f"multipart/form-data; boundary={boundary}"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(req, timeout=120) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repo", default=str(REPO))
    parser.add_argument("--port", type=int, default=8123)
    parser.add_argument("--image", default="syn005")
    parser.add_argument("--limit", type=float, default=1800.0, help="give up after this many seconds")
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args()
    result: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        clone = Path(tmp) / "clone"
        t0 = time.perf_counter()
        subprocess.run(["git", "clone", "-q", args.repo, str(clone)], check=True)
        result["clone_s"] = round(time.perf_counter() - t0, 1)
        env = {k: v for k, v in os.environ.items() if k not in ("VIRTUAL_ENV", "PYTHONPATH")}
        serve = subprocess.Popen(
            ["make", "serve", f"PORT={args.port}"],
            cwd=clone,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            start_new_session=True,
        )
        log: list[str] = []

        def read() -> None:
            assert serve.stdout is not None
            for line in serve.stdout:
                log.append(line)
                for mark, key in MARKS.items():
                    if mark in line and key not in result:
                        result[key] = round(time.perf_counter() - t0, 1)

        reader = threading.Thread(target=read, daemon=True)
        reader.start()
        try:
            while time.perf_counter() - t0 < args.limit:
                if serve.poll() is not None:
                    raise SystemExit("make serve ended before answering:\n" + "".join(log[-30:]))
                if "demo_ready_s" in result:  # refused connections (status 0) until the server listens
                    status = _infer(args.port, args.image)
                    if status == 200:
                        result["first_inference_s"] = round(time.perf_counter() - t0, 1)
                        break
                    if status >= 400:
                        raise SystemExit(f"inference answered {status}:\n" + "".join(log[-30:]))
                time.sleep(1.0)
            else:
                raise SystemExit(f"no successful inference within {args.limit} s")
        finally:
            os.killpg(serve.pid, signal.SIGTERM)
            serve.wait(timeout=60)
    result = {"machine": describe(), "command": "sample-datasets/scripts/first_inference.py", **result}
    print(result)
    if args.json:
        write_json(args.json, result)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
