"""The operator's view: the Dagster webserver on loopback, driven by headless Chromium.

A small home is materialized for real (ingest, training set, a tiny-backbone seed model, evaluation and
promotion); the test opens the global asset graph and the lineage of the retrained model and checks that
the lineage from the query logs to the champion model is on screen, then the seed model's page with its
MLflow registration.
"""

import os
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from dagster import DagsterInstance, materialize

from models.backbone import tiny_backbone
from serm_dagster.runner import ingest_landing
from serm_dagster.definitions import all_assets, all_checks, default_resources
from serm_dagster.resources import LakehouseResource, ModelSettings
from serm_dagster.settings import SermPaths
from serm_dagster.simulator import SimulationConfig, simulate
from conftest import free_port

CHROMEDRIVER = shutil.which("chromedriver")
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
ROOT = Path(__file__).resolve().parent.parent
pytestmark = pytest.mark.skipif(not (CHROMEDRIVER and CHROMIUM),
                                reason="needs Debian's chromium and chromium-driver (apt-get install chromium "
                                       "chromium-driver); .ci/run installs them")


@pytest.fixture(scope="module")
def webserver(tmp_path_factory):
    home = tmp_path_factory.mktemp("ui")
    paths = SermPaths.from_env(home).ensure()
    env = {**os.environ, "SERM_HOME": str(home), "DAGSTER_HOME": str(paths.dagster_home)}
    simulate(home, SimulationConfig(days=3, queries_per_day=40, seed=2, seed_days=2, evolving_window_days=1,
                                    seed_judgments=150, test_judgments=60))
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SERM_HOME", str(home))
        patch.setenv("DAGSTER_HOME", str(paths.dagster_home))
        ingest_landing(paths, echo=lambda *_: None)
        resources = {**default_resources(), "lakehouse": LakehouseResource(home=str(home)),
                     "model_settings": ModelSettings(backbone=tiny_backbone(home / "tiny"), epochs=1, max_length=32)}
        assert materialize([*all_assets, *all_checks], resources=resources, instance=DagsterInstance.get(),
                           selection=["gold/training_sets", "models/seed_model", "gold/evaluations", "gold/test_scores",
                                      "gold/promotions"]).success
    port = free_port()
    server = subprocess.Popen(
        [str(Path(sys.executable).parent / "dagster-webserver"), "-h", "127.0.0.1", "-p", str(port),
         "-w", str(ROOT / "workspace.yaml")],
        cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + 120
    while time.time() < deadline:
        try:
            urllib.request.urlopen(f"{url}/server_info", timeout=2)
            break
        except OSError:
            if server.poll() is not None:
                raise RuntimeError("dagster-webserver exited at start-up")
            time.sleep(1)
    else:
        server.kill()
        raise RuntimeError("dagster-webserver did not answer within 120 s")
    yield url
    server.terminate()
    server.wait(timeout=30)


@pytest.fixture(scope="module")
def browser():
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for argument in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu",
                     "--window-size=1600,1200"):
        options.add_argument(argument)
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    yield driver
    driver.quit()


def wait_for_text(browser, *texts: str, timeout: float = 90) -> str:
    """The page's visible text once every one of ``texts`` is in it (the UI renders asynchronously)."""
    from selenium.webdriver.common.by import By

    deadline = time.time() + timeout
    shown = ""
    while time.time() < deadline:
        shown = browser.find_element(By.TAG_NAME, "body").text
        if all(text in shown for text in texts):
            return shown
        time.sleep(1)
    raise AssertionError(f"never showed {[t for t in texts if t not in shown]}; showed: {shown[:2000]}")


def test_asset_graph_shows_the_lineage_from_query_logs_to_the_champion_model(webserver, browser):
    browser.get(f"{webserver}/asset-groups")
    wait_for_text(browser, "Global asset lineage", "ingest", "drift", "mining", "annotation", "training",
                  "evaluation", "analytics")
    # the retrained model's own lineage, upstream to the logs
    browser.get(f"{webserver}/assets/models/relevance_model?view=lineage&lineageScope=upstream&lineageDepth=8")
    wait_for_text(browser, "relevance_model", "training_sets", "consensus_labels", "mined_samples", "query_logs")


def test_seed_model_page_shows_its_registered_version(webserver, browser):
    browser.get(f"{webserver}/assets/models/seed_model")
    wait_for_text(browser, "seed_model", "models:/serm-relevance/1")
