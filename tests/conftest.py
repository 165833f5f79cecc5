"""Test-wide set-up: a local Hugging Face Hub (``tests/hub_server.py``) for real push/download round-trips.

``huggingface_hub`` (and ``datasets``) read ``HF_ENDPOINT``, the cache locations and the timeouts into module
constants at import time, and test modules import diffusers / transformers / datasets at collection. So the server is
started and the environment is set in ``pytest_configure``, before any test module is imported:

* ``HF_ENDPOINT``           -> ``http://127.0.0.1:<port>`` of the session's server (never the real Hub)
* ``HF_TOKEN``              -> ``hf_test`` (the server accepts any token; ``whoami`` answers ``dakter-tester``)
* ``HF_HUB_DISABLE_XET=1``  -> uploads use plain LFS (the server never advertises Xet)
* ``HF_HOME`` / ``HF_HUB_CACHE`` / ``HF_DATASETS_CACHE`` / ``HF_ASSETS_CACHE`` / ``HF_XET_CACHE`` -> a session
  temp dir; ``HF_HUB_DISABLE_TELEMETRY=1``; short ``HF_HUB_ETAG_TIMEOUT`` / ``HF_HUB_DOWNLOAD_TIMEOUT`` so a dead
  server fails fast; ``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE`` / ``HF_DATASETS_OFFLINE`` are removed.

Fixtures:

* ``hub_server``      the running :class:`tests.hub_server.HubServer` (``.endpoint`` / ``.url``, ``.stop()`` /
  ``.start()`` to simulate "Hub down", ``.refuse_writes = True`` to make every write answer 403,
  ``.repo_files(repo_id, repo_type)`` to inspect what was pushed). Switches are reset after each test.
* ``hub_repo_id``     a fresh, unused repo id ``dakter-tester/test-<hex>`` (repos are created by the push itself,
  or with ``HfApi().create_repo(repo_id[, repo_type="dataset"])``).
* ``clean_hub_cache`` empties the hub and datasets caches before the test, so a download really hits the server
  (also available as the plain function :func:`clear_hub_cache`).

Debugging: ``DAKTER_HUB_SERVER_LOG=/tmp/hub.log pytest ...`` writes every request the server answered.
"""

from __future__ import annotations

import os
import shutil
import sys
import tempfile
import time
import uuid
import warnings

import pytest


sys.path.insert(0, os.path.dirname(__file__))
from hub_server import DEFAULT_USER, HubServer  # noqa: E402


_HF_MODULES = ("huggingface_hub", "datasets", "transformers", "diffusers")
_SESSION: dict = {}


def _hub_env(server: HubServer, home: str) -> dict[str, str]:
    return {
        "HF_ENDPOINT": server.endpoint,
        "HF_TOKEN": "hf_test",
        "HF_HUB_DISABLE_XET": "1",
        "HF_HOME": home,
        "HF_HUB_CACHE": os.path.join(home, "hub"),
        "HF_ASSETS_CACHE": os.path.join(home, "assets"),
        "HF_XET_CACHE": os.path.join(home, "xet"),
        "HF_DATASETS_CACHE": os.path.join(home, "datasets"),
        "HF_HUB_DISABLE_TELEMETRY": "1",
        "HF_HUB_DISABLE_UPDATE_CHECK": "1",
        "HF_HUB_DISABLE_PROGRESS_BARS": "1",
        "HF_HUB_ETAG_TIMEOUT": "5",
        "HF_HUB_DOWNLOAD_TIMEOUT": "10",
        "DISABLE_TELEMETRY": "1",
    }


def pytest_configure(config: pytest.Config) -> None:
    """Start the local Hub and point every HF library at it, before test modules (and HF libraries) are imported."""
    if _SESSION:
        return
    already = [m for m in _HF_MODULES if m in sys.modules]
    if already:
        warnings.warn(
            f"{already} imported before tests/conftest.py configured HF_ENDPOINT: their constants may still point to "
            "the real Hub. Do not import Hugging Face libraries from pytest plugins or the root conftest."
        )
    home = tempfile.mkdtemp(prefix="dakter-hf-home-")
    server = HubServer(root=os.path.join(home, "server")).start()
    for var in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_DATASETS_OFFLINE", "HUGGINGFACE_HUB_CACHE",
                "TRANSFORMERS_CACHE", "HUGGINGFACE_CO_STAGING", "HF_TOKEN_PATH"):
        os.environ.pop(var, None)
    os.environ.update(_hub_env(server, home))
    _SESSION.update(server=server, home=home)


def pytest_unconfigure(config: pytest.Config) -> None:
    server = _SESSION.pop("server", None)
    if server is not None:
        log_path = os.environ.get("DAKTER_HUB_SERVER_LOG")
        if log_path:  # debugging aid: every request the server answered, as "METHOD path -> status"
            with open(log_path, "w") as f:
                f.writelines(f"{m} {p} -> {s}\n" for m, p, s in server.requests)
        server.close()
    home = _SESSION.pop("home", None)
    if home is not None:
        shutil.rmtree(home, ignore_errors=True)


def clear_hub_cache() -> None:
    """Empty the hub cache and the datasets cache (the directories stay, as the libraries captured their paths),
    and drop in-process listings cached by ``HfFileSystem`` instances."""
    for var in ("HF_HUB_CACHE", "HF_DATASETS_CACHE"):
        path = os.environ.get(var)
        if path and path.startswith(_SESSION.get("home", "\0")) and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            os.makedirs(path, exist_ok=True)
    if "huggingface_hub" in sys.modules:
        from huggingface_hub import HfFileSystem

        HfFileSystem.clear_instance_cache()


def _disable_dataset_viewer_lookups() -> None:
    """``datasets.load_dataset(repo_id)`` asks the dataset viewer for exported infos at
    ``HF_ENDPOINT.replace("://", "://datasets-server.")``: with a local endpoint that is a DNS lookup of
    ``datasets-server.127.0.0.1``. It falls back gracefully on any error, but it must not leave the machine: turn it
    off."""
    try:
        import datasets.config
    except ImportError:
        return
    datasets.config.USE_PARQUET_EXPORT = False


@pytest.fixture(scope="session")
def _hub_session_server() -> HubServer:
    server = _SESSION.get("server")
    if server is None:
        pytest.skip("the local Hub server was not started (tests/conftest.py pytest_configure did not run)")
    _disable_dataset_viewer_lookups()
    return server


class _NoSleepTime:
    """Stand-in for the ``time`` module inside ``huggingface_hub.utils._http``: the retry backoff does not wait."""

    def __getattr__(self, name):
        return getattr(time, name)

    @staticmethod
    def sleep(seconds: float) -> None:
        pass


@pytest.fixture
def hub_server(_hub_session_server: HubServer, monkeypatch: pytest.MonkeyPatch):
    """The local Hub server; ``refuse_writes`` is reset and the server restarted (if stopped) after the test.

    While it is active, ``huggingface_hub``'s HTTP retry backoff does not sleep: ``hf_hub_download`` with nothing
    cached retries a failed HEAD 5 times with 1+2+4+8+8 s waits on connection errors / 5xx, so a "Hub down" test
    would otherwise take ~23 s per download attempt. The retries themselves still happen (immediately)."""
    server = _hub_session_server
    server.start()
    import huggingface_hub.utils._http as hf_http

    monkeypatch.setattr(hf_http, "time", _NoSleepTime())
    yield server
    server.refuse_writes = False
    server.refuse_status = 403
    server.start()


@pytest.fixture
def hub_repo_id(hub_server: HubServer) -> str:
    """A fresh repo id in the test user's namespace, not yet created on the server."""
    return f"{DEFAULT_USER}/test-{uuid.uuid4().hex[:12]}"


@pytest.fixture
def clean_hub_cache():
    """Run the test with empty hub / datasets caches."""
    clear_hub_cache()
    yield


@pytest.fixture(scope="module")
def one_torch_thread():
    """One intra-op torch thread for a module (`pytestmark = pytest.mark.usefixtures("one_torch_thread")`): tiny
    models run fastest and steadiest that way on the 2-core machines CI shares with other jobs."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)
