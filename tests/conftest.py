"""Shared fixtures: a real `streamlit run app.py` server and headless Debian Chromium.

Browser tests are marked `browser`. Without Chromium or Playwright they skip,
except under CI=true, where a missing browser is a failure.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

# Test clusters stay on loopback: left to itself, Ray gives each node this machine's outward address.
# With this switch off, Ray puts every node and driver of a one-machine cluster on 127.0.0.1
# (ray._private.services.get_node_ip_address); the Ray nodes and CLI subprocesses inherit it.
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")

ROOT = Path(__file__).resolve().parents[1]
ARTIFACTS = ROOT / "artifacts" / "screenshots"
CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
IN_CI = os.environ.get("CI", "").lower() == "true"


# The slowest test files, slowest first (seconds in one process on a loaded 2-core machine, from
# `pytest --durations=0`). pytest-xdist hands out whole files in collection order, so these start
# first and the small files fill in the end: a long file started last kept one worker busy alone
# for minutes. Files not named here follow in their own order.
SLOW_FILES = (
    "test_browser_navigation.py", "test_browser_why.py", "test_browser_present.py", "test_browser_faults.py",
    "test_browser_train_twins.py", "test_browser_architecture.py", "test_fuzz_app.py", "test_browser_queue.py",
    "test_browser_compare.py", "test_faults.py", "test_ray.py", "test_browser_overview.py",
    "test_browser_train.py", "test_browser_gradient_flow.py", "test_browser_inspect.py", "test_probe.py",
    "test_browser_links.py", "test_cli_train.py", "test_ray_optional.py", "test_onednn_route.py",
    "test_app_why.py", "test_classroom.py", "test_app_gradient_flow.py", "test_model.py", "test_cli.py",
)


def pytest_collection_modifyitems(config, items):
    rank = {name: i for i, name in enumerate(SLOW_FILES)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # stable: each file keeps its order


# A test server's first visit measures this machine's training speed for the pages' estimates (a few
# seconds of CPU: resnet_core/speed.py) and keeps it in its data root's speed.json. Each test server
# has a data root of its own, so the first measurement made in this test run is handed to the next
# servers, as a teacher's server keeps it from one start to the next. It is kept in the test run's
# base temporary folder (shared by the xdist workers; pytest removes old ones by itself).
SPEED_CACHE: Path | None = None


@pytest.fixture(scope="session", autouse=True)
def _speed_cache(tmp_path_factory):
    global SPEED_CACHE
    base = tmp_path_factory.getbasetemp()
    SPEED_CACHE = (base.parent if os.environ.get("PYTEST_XDIST_WORKER") else base) / "speed.json"


def seed_speed(data_dir: Path) -> None:
    """Give a new test server's data root the speed measured by an earlier one in this test run."""
    if SPEED_CACHE is not None and SPEED_CACHE.is_file():
        data_dir.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(SPEED_CACHE, data_dir / "speed.json")


def keep_speed(data_dir: Path) -> None:
    """After a test server: keep its measured speed for the next ones (the first one kept stays)."""
    made = data_dir / "speed.json"
    if SPEED_CACHE is not None and made.is_file() and not SPEED_CACHE.exists():
        with contextlib.suppress(OSError):
            tmp = SPEED_CACHE.with_suffix(f".{os.getpid()}.tmp")
            shutil.copyfile(made, tmp)
            tmp.replace(SPEED_CACHE)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _missing_browser(reason: str):
    if IN_CI:
        pytest.fail(f"browser tests need {reason} (CI=true makes this a failure)")
    pytest.skip(reason)


@contextlib.contextmanager
def streamlit_server(tmp: Path) -> Iterator[str]:
    """`streamlit run app.py` on a free loopback port, runs and data under `tmp`; yields its base URL
    once it answers its health check (the app's script has not run yet: that waits for a visitor)."""
    port = _free_port()
    runs_dir = tmp / "runs"
    env = {**os.environ, "RESNET_RUNS_DIR": str(runs_dir), "RESNET_DATA_DIR": str(tmp / "data"),
           "PYTHONUNBUFFERED": "1"}
    seed_speed(tmp / "data")
    log = open(tmp / "streamlit.log", "w")  # noqa: SIM115 (closed below)
    proc = subprocess.Popen(
        [sys.executable, "-m", "streamlit", "run", "app.py", "--server.port", str(port),
         "--server.address", "127.0.0.1", "--server.headless", "true"],
        cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.time() + 60
        while time.time() < deadline:
            try:
                with urllib.request.urlopen(url + "/_stcore/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                time.sleep(0.3)
        else:
            pytest.fail(f"streamlit did not start on {url}; log: {log.name}")
        yield url
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        keep_speed(tmp / "data")


@pytest.fixture(scope="session")
def app_server(tmp_path_factory):
    """One `streamlit run app.py` shared by the browser tests; yields its base URL."""
    with streamlit_server(tmp_path_factory.mktemp("server")) as url:
        yield url


@pytest.fixture(scope="session")
def browser():
    if not Path(CHROMIUM).exists():
        _missing_browser(f"Debian's chromium at {CHROMIUM}")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        _missing_browser("the playwright Python package")
    with sync_playwright() as pw:
        b = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        yield b
        b.close()


@pytest.fixture
def page(browser, app_server):
    """A fresh browser tab; fails the test if Streamlit showed an exception box."""
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    tab = context.new_page()
    tab.base_url = app_server  # type: ignore[attr-defined]
    yield tab
    try:
        errors = tab.locator('[data-testid="stException"]')
        count = errors.count()
        texts = [errors.nth(i).inner_text()[:500] for i in range(count)]
    finally:
        context.close()
    assert count == 0, f"Streamlit exception shown: {texts}"


def wait_for_app(tab, timeout: float = 60_000) -> None:
    """Wait until Streamlit has finished running the script (no 'running' indicator)."""
    tab.wait_for_selector('[data-testid="stApp"]', timeout=timeout)
    tab.wait_for_function(
        "() => !document.querySelector('[data-testid=\"stStatusWidget\"]')"
        " || !document.querySelector('[data-testid=\"stStatusWidget\"]').innerText.includes('Running')",
        timeout=timeout,
    )
    tab.wait_for_timeout(300)


def open_path(tab, path: str, ready: str) -> None:
    """`path` opened, once the selector `ready` shows; 2 cores shared with other work: generous waits.
    A "Page not found" dialog a fresh server's first run may show is closed (see test_browser_gradient_flow)."""
    tab.goto(f"{tab.base_url}/{path}")
    wait_for_app(tab, timeout=180_000)
    tab.wait_for_selector(ready, timeout=180_000)
    dialog = tab.get_by_role("dialog").filter(has_text="Page not found")
    if dialog.count():
        tab.keyboard.press("Escape")
        dialog.wait_for(state="detached", timeout=10_000)


def wait_or_say(tab, selector: str, timeout: float, name: str) -> None:
    """wait_for_selector, and if it times out, a screenshot `name` and the page's text in the failure."""
    try:
        tab.wait_for_selector(selector, timeout=timeout)
    except Exception as e:
        screenshot(tab, name)
        raise AssertionError(f"{selector} did not show in {timeout / 1000:.0f} s (screenshot {name}.png); "
                             f"the page says: {tab.inner_text('body')[:1500]}") from e


def screenshot(tab, name: str) -> Path:
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / f"{name}.png"
    tab.screenshot(path=str(path), full_page=True)
    return path


@pytest.fixture
def manager(tmp_path):
    """A JobManager of its own for one test: one job at a time, default limits, records in tmp_path."""
    from resnet_core.jobs import JobManager
    from resnet_core.limits import from_env

    m = JobManager(root=tmp_path, limits=from_env({}), max_running=1, idle_s=600)
    yield m
    m.shutdown(timeout=10)


def block_fills(tab, key: str) -> list[str]:
    """The fill of every block drawn in the diagram with widget key `key`, read from the SVG: what
    the eye sees as its colour."""
    return tab.evaluate(f"""() => {{
        const gd = document.querySelector('.st-key-{key} .js-plotly-plot');
        const trace = [...gd.querySelectorAll('.scatterlayer .trace')]
            .find(g => g.__data__ && g.__data__[0].trace.name === 'blocks');  // d3 binds each trace's data
        return trace ? [...trace.querySelectorAll('.point')].map(p => p.style.fill) : [];
    }}""")


def scrub_to_first_step(tab, key: str):
    """Move the time scrubber with widget key `key` to step 1, as a keyboard user does, and wait for
    the run; returns the slider, focused, for more key presses."""
    thumb = tab.locator(f".st-key-{key} input[type=range]")  # React Aria's slider: a hidden range input
    thumb.focus()
    thumb.press("Home")
    tab.wait_for_function(f"() => /{key}=1(&|$)/.test(location.search)", timeout=30_000)
    wait_for_app(tab)
    return thumb
