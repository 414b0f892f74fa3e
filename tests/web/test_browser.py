"""The dashboard in a real browser: live figures, an interaction's page, keyboard labels and the resumption of
a paused maintenance run."""

from __future__ import annotations

from contextlib import closing
from pathlib import Path
from typing import Any

import pytest

from cl_plugin.store import Store
from cl_plugin.web import create_app
from tests.web.conftest import Served
from tests.web.shop import QUESTIONS, capture, maintenance_config, paused_run

pytestmark = pytest.mark.slow


def _wait(driver: Any, condition: Any, timeout: float = 30) -> Any:
    from selenium.common.exceptions import StaleElementReferenceException
    from selenium.webdriver.support.ui import WebDriverWait

    # the page swaps its sections while a condition reads them: read again
    wait = WebDriverWait(driver, timeout, 0.2, ignored_exceptions=(StaleElementReferenceException,))
    return wait.until(condition)


def _text(driver: Any, element_id: str) -> str:
    from selenium.webdriver.common.by import By

    return driver.find_element(By.ID, element_id).text


def test_the_overview_counts_new_traffic_without_a_reload_and_links_to_an_interaction(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    capture(url)
    with closing(Store.from_url(url)) as store, Served(create_app(store)) as served:
        browser.get(served.url + "/")
        assert _text(browser, "interaction-count") == "6"
        assert browser.find_element(By.CSS_SELECTOR, "#sections #failures h2").text == "Failure patterns"
        browser.execute_script("window.sameDocument = true;")
        capture(url, QUESTIONS[:3])
        _wait(browser, lambda d: _text(d, "interaction-count") == "9")
        # the sections were read again in the background and swapped in: the latency table counts 9
        _wait(browser, lambda d: d.find_element(By.CSS_SELECTOR, "#latency table tbody td").text == "9")
        assert browser.execute_script("return window.sameDocument === true;")  # no reload
        errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
        assert not errors, errors

        browser.get(served.url + "/interactions?agent=comics&signal=error")
        browser.find_element(By.CSS_SELECTOR, "#interactions tbody a").click()
        _wait(browser, lambda d: d.find_elements(By.ID, "timeline"))
        runs = browser.find_elements(By.CSS_SELECTOR, "tr.node-run")
        assert [r.get_attribute("data-status") for r in runs][-1] == "error"
        assert "the comics catalogue timed out" in _text(browser, "timeline")
        assert "comics" in _text(browser, "decisions") and "novels" in _text(browser, "decisions")


def test_two_items_are_labeled_with_the_keyboard_and_the_paused_run_resumed(
    browser: Any, tmp_path: Path
) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    url = f"sqlite:///{tmp_path / 'shop.db'}"
    capture(url)
    config, checkpoints = maintenance_config(tmp_path), str(tmp_path / "checkpoints.db")
    with closing(Store.from_url(url)) as store:
        paused = paused_run(store, checkpoints, config)
        with Served(create_app(store, config=config, checkpoints=checkpoints)) as served:
            browser.get(served.url + "/maintenance")
            assert "paused for labels" in browser.find_element(By.CSS_SELECTOR, ".run-status").text
            browser.get(served.url + "/annotate")
            assert "1 novels, 2 comics; s skip" in browser.find_element(By.CSS_SELECTOR, "main p.note").text
            for left in ("1", "0"):
                item = browser.find_element(By.ID, "item").get_attribute("data-item")
                ActionChains(browser).send_keys("2").perform()  # 2 = comics
                _wait(
                    browser,
                    lambda d, item=item: not d.find_elements(By.CSS_SELECTOR, f'[data-item="{item}"]'),
                )
                if left != "0":
                    assert _text(browser, "pending-count") == left
            assert [i["label"]["option"] for i in store.queue.items("labeled")] == ["comics", "comics"]
            browser.find_element(By.ID, "resume").click()
            done = _wait(browser, lambda d: d.find_elements(By.ID, "resumed"), timeout=120)[0]
            assert f"Maintenance run {paused['run_id'][:12]} completed at" in done.text
            browser.get(served.url + "/maintenance")
            assert browser.find_element(By.CSS_SELECTOR, ".run-status").text == "completed"
