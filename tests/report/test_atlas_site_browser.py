"""The atlas site in a real browser: Debian's headless Chromium through selenium, from file:// (issue: README "Atlas")."""

import os
import shutil

import pytest

from tests.atlases._atlas_worker import build

CHROMIUM, DRIVER = shutil.which("chromium") or "/usr/bin/chromium", shutil.which("chromedriver")
pytestmark = pytest.mark.skipif(
    not (os.path.exists(CHROMIUM) and DRIVER), reason="needs Debian's chromium and chromium-driver "
    "(`make browser` installs them: apt-get install -y chromium chromium-driver)")


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("atlas-site"))
    build(out)
    return out


@pytest.fixture(scope="module")
def browser():
    webdriver = pytest.importorskip("selenium.webdriver", reason="needs selenium (pip install -e '.[test]')")
    from selenium.webdriver.chrome.service import Service

    options = webdriver.ChromeOptions()
    options.binary_location = CHROMIUM
    for arg in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage", "--window-size=1200,900"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    driver = webdriver.Chrome(service=Service(DRIVER), options=options)
    yield driver
    driver.quit()


def _open(browser, path):
    browser.get("file://" + os.path.abspath(path))
    # lazy images: load them all, then check none is broken
    browser.execute_script("document.querySelectorAll('img').forEach(function(i){i.loading='eager';});")
    browser.execute_async_script("""
        var done = arguments[arguments.length - 1];
        Promise.all([].map.call(document.images, function(i){ return i.complete ? 0 :
            new Promise(function(r){ i.onload = i.onerror = r; }); })).then(function(){ done(0); });""")
    broken = browser.execute_script(
        "return [].filter.call(document.images, function(i){return !(i.complete && i.naturalWidth > 0);})"
        ".map(function(i){return i.src;});")
    errors = [e for e in browser.get_log("browser") if e["level"] in ("SEVERE", "ERROR")]
    return broken, errors


def _order(browser):
    return browser.execute_script(
        "return [].filter.call(document.getElementById('grid').children, function(c){return c.style.display!=='none';})"
        ".map(function(c){return parseInt(c.getAttribute('data-channel'));});")


def test_layer_page_renders_sorts_filters_and_finds(site, browser):
    from selenium.webdriver.support.ui import Select

    broken, errors = _open(browser, os.path.join(site, "index.html"))
    assert broken == [] and errors == []
    assert _order(browser) == [0, 1, 2, 3, 4]
    Select(browser.find_element("id", "sort")).select_by_value("objective")
    Select(browser.find_element("id", "dir")).select_by_value("desc")
    values = browser.execute_script("return [].map.call(document.getElementById('grid').children,"
                                    "function(c){return parseFloat(c.getAttribute('data-objective'));});")
    assert values == sorted(values, reverse=True) and _order(browser) != [0, 1, 2, 3, 4]
    alive = browser.execute_script("return document.querySelectorAll('.card[data-alive=\"1\"]').length;")
    Select(browser.find_element("id", "filter")).select_by_value("dead")
    assert len(_order(browser)) == 5 - alive
    Select(browser.find_element("id", "filter")).select_by_value("all")
    browser.find_element("id", "find").send_keys("3")
    assert browser.execute_script("return document.querySelector('.card.found').getAttribute('data-channel');") == "3"


def test_channel_page_renders(site, browser):
    broken, errors = _open(browser, os.path.join(site, "channels", "c0002.html"))
    assert broken == [] and errors == []
    assert len(browser.find_elements("css selector", ".ex img")) == 3 * 3
    assert browser.find_elements("css selector", "svg.curve")
