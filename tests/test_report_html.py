"""The browsable report: a self-contained folder (no network), its data, and the page itself in
headless Chromium (skipped, with the reason, where Chromium, chromedriver or selenium is missing)."""

from __future__ import annotations

import json
import re
import shutil
import tempfile
import time
from pathlib import Path

import pytest
from factories import build_tiny_clip

from harness.compare import compare
from harness.report import make_report
from harness.runner import run

CHROMIUM, CHROMEDRIVER = Path("/usr/bin/chromium"), Path("/usr/bin/chromedriver")
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    """Two tiny CLIPs on every shapes subset (6 items each), compared, and the report of it."""
    root = tmp_path_factory.mktemp("report")
    results = root / "results"
    ids = []
    for seed in (0, 1):
        tiny = build_tiny_clip(root / f"clip{seed}", seed=seed)
        ids.append(run(scorer="clip", bench="shapes", model=f"local-dir:{tiny.local_dir}", results_dir=results,
                       bench_options={"n": 6}, workers=0, progress=False).run_id)
    comparison = compare(ids, results)
    make_report(results)
    return results / "report", ids, comparison


def _data(folder: Path, name: str) -> dict:
    """The JSON that a data script assigns on its last line (window.X = {...}; or window.X[key] = {...};)."""
    last = (folder / "data" / name).read_text(encoding="utf-8").strip().splitlines()[-1]
    return json.loads(last.split(" = ", 1)[1].rstrip(";"))


def test_the_folder_is_self_contained_and_opens_from_disk(report):
    folder, _, _ = report
    page = (folder / "index.html").read_text()
    for name in ("index.html", "report.js", "report.css"):
        text = (folder / name).read_text()
        assert not re.search(r"https?://", text), f"{name} names a network address"
        assert "@import" not in text and "fetch(" not in text
    for ref in re.findall(r'(?:src|href)="([^"#:]+)"', page):
        assert (folder / ref).is_file(), ref
    assert (folder / "report.md").is_file() and "index.html" in (folder / "report.md").read_text()


def test_the_item_data_hold_every_run_thumbnails_and_the_comparison_items(report):
    folder, ids, comparison = report
    items = _data(folder, "items-shapes.js")
    assert [r["id"] for r in items["runs"]] == ids
    assert len(items["items"]) == 24 and items["filters"]["subset"] == ["attribute", "relation", "winoground",
                                                                        "zeroshot"]
    assert set(items["outcomes"]) == {"text", "image", "group", "correct"}
    first = items["items"][0]
    assert first["id"] == "winoground/0" and len(first["im"]) == 2 and len(first["r"]) == 2
    for src, width, height in first["im"]:
        assert (folder / src).is_file() and (width, height) == (32, 32)
    # each run's matrix and its decisions, as the run's own item_scores.jsonl has them
    record = json.loads((folder.parent / "runs" / ids[0] / "item_scores.jsonl").read_text().splitlines()[0])
    assert first["r"][0]["o"] == {k: record[k] for k in ("text", "image", "group")}
    index = _data(folder, "index.js")
    assert len(index["comparisons"]) == len(comparison.rows) and index["benchmarks"][0]["name"] == "shapes"
    row = next(r for r in index["comparisons"] if r["subset"] == "relation")
    sidecar = next(r for r in comparison.items if r["subset"] == "relation")
    assert row["a_better"] == sidecar["a_better"] and row["b_better"] == sidecar["b_better"]


def test_without_the_data_the_browser_shows_captions_and_says_so(report, tmp_path):
    """A run whose benchmark can no longer be rebuilt (here: its recorded option is refused now)."""
    folder, ids, _ = report
    results = tmp_path / "results"
    shutil.copytree(folder.parent, results, ignore=shutil.ignore_patterns("report"))
    config_path = results / "runs" / ids[1] / "config.json"
    config = json.loads(config_path.read_text())
    config["bench_options"]["image_size"] = 4  # below the option's minimum: the benchmark cannot be rebuilt
    config_path.write_text(json.dumps(config))
    shutil.rmtree(results / "runs" / ids[0])
    make_report(results)
    items = _data(results / "report", "items-shapes.js")
    assert items["items"][0]["im"] == [None, None] and items["items"][0]["t"]
    assert any("could not be loaded" in note and "image_size" in note for note in items["notes"])
    index = _data(results / "report", "index.js")
    assert any(ids[0] in note for note in index["notes"])  # the deleted run is named


def test_the_committed_shapes_experiment_rows_make_a_report(tmp_path):
    """Only the leaderboard is committed (no run folders): the page still opens and says why the
    item browser is empty."""
    results = REPO / "results" / "shapes-experiment"
    make_report(results, out_dir=tmp_path / "report")
    index = _data(tmp_path / "report", "index.js")
    assert len(index["leaderboard"]) > 20 and index["benchmarks"] == []
    assert any("no folder with item_scores.jsonl" in note for note in index["notes"])


# -- in a real browser ----------------------------------------------------------------------------

def _driver():
    try:
        from selenium import webdriver
        from selenium.webdriver.chrome.service import Service
    except ImportError:
        pytest.skip("selenium is not installed (pip install -e '.[dev]')")
    if not CHROMIUM.is_file() or not CHROMEDRIVER.is_file():
        pytest.skip(f"no Chromium at {CHROMIUM} or no chromedriver at {CHROMEDRIVER} (apt install chromium "
                    "chromium-driver)")
    options = webdriver.ChromeOptions()
    options.binary_location = str(CHROMIUM)
    for flag in ("--headless", "--no-sandbox", "--disable-gpu", "--no-first-run", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", f"--user-data-dir={tempfile.mkdtemp()}",
                 "--window-size=1300,1000"):
        options.add_argument(flag)
    options.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    return webdriver.Chrome(service=Service(str(CHROMEDRIVER)), options=options)


@pytest.fixture(scope="module")
def browser():
    driver = _driver()
    yield driver
    driver.quit()


def _open(browser, folder: Path, hash_: str) -> None:
    browser.get((folder / "index.html").as_uri() + hash_)
    _wait(browser, lambda: browser.execute_script("return document.querySelectorAll('main section:not([hidden]) *')"
                                                  ".length") > 3)


def _wait(browser, condition, timeout: float = 20.0):
    end = time.time() + timeout
    while time.time() < end:
        value = condition()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError("the page did not get there in time")


def _errors(browser) -> list:
    return [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]


def _cards(browser) -> list[str]:
    return browser.execute_script("return [...document.querySelectorAll('article.item')].map(a => a.dataset.id)")


def test_the_leaderboard_sorts_without_console_errors(report, browser):
    from selenium.webdriver.common.by import By

    folder, _, _ = report
    _open(browser, folder, "#leaderboard")
    values = lambda: browser.execute_script(  # noqa: E731
        "return [...document.querySelectorAll('#view-leaderboard tbody tr')].map(r => r.cells[6].textContent)")
    before = values()
    assert len(before) == 12  # 2 runs x 6 main rows; breakdowns are off
    def header():  # the header row is drawn again on each sort
        return next(th for th in browser.find_elements(By.CSS_SELECTOR, "#view-leaderboard th")
                    if th.text.startswith("value"))

    header().click()
    ascending = [float(v) for v in values()]
    assert ascending == sorted(ascending)
    header().click()
    assert [float(v) for v in values()] == sorted(ascending, reverse=True)
    assert _errors(browser) == []


def test_the_item_browser_filters_and_renders_images(report, browser):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    folder, ids, _ = report
    _open(browser, folder, "#items/shapes")
    _wait(browser, lambda: _cards(browser))
    assert len(_cards(browser)) == 24 and _cards(browser)[0] == "winoground/0"
    image = browser.find_element(By.CSS_SELECTOR, "article.item img")
    _wait(browser, lambda: browser.execute_script("return arguments[0].complete && arguments[0].naturalWidth", image))
    assert browser.execute_script("return arguments[0].naturalWidth", image) == 32

    Select(browser.find_element(By.ID, "filter-subset")).select_by_value("relation")
    relation = _cards(browser)
    assert len(relation) == 6 and all(i.startswith("relation/") for i in relation)

    # A right and B wrong on "correct": exactly the items where the runs' records say so
    records = {}
    for run_id in ids:
        lines = (folder.parent / "runs" / run_id / "item_scores.jsonl").read_text().splitlines()
        records[run_id] = {r["item_id"]: r for r in map(json.loads, lines)}
    expected = [i for i in relation if records[ids[0]][i]["correct"] and not records[ids[1]][i]["correct"]]
    Select(browser.find_element(By.ID, "outcome-key")).select_by_value("correct")
    Select(browser.find_element(By.ID, "relation")).select_by_value("ab")
    assert _cards(browser) == expected
    Select(browser.find_element(By.ID, "relation")).select_by_value("any")
    Select(browser.find_element(By.ID, "filter-subset")).select_by_value("")
    assert len(_cards(browser)) == 24
    assert _errors(browser) == []


def test_a_comparison_row_links_to_its_items(report, browser):
    from selenium.webdriver.common.by import By

    folder, _, comparison = report
    _open(browser, folder, "#comparisons")
    rows = comparison.rows
    k = max(range(len(rows)), key=lambda i: (rows[i]["a_right_b_wrong"] or 0) + (rows[i]["a_wrong_b_right"] or 0))
    side = "a" if rows[k]["a_right_b_wrong"] else "b"
    link = browser.find_element(By.CSS_SELECTOR, f"a[href$='/cmp/{k}/{side}']")
    link.click()
    _wait(browser, lambda: browser.find_elements(By.ID, "cmp-banner"))
    wanted = comparison.items[k]["a_better" if side == "a" else "b_better"]
    assert sorted(_cards(browser)) == sorted(wanted) and wanted
    assert rows[k]["comparison_id"] in browser.find_element(By.ID, "cmp-banner").text
    assert _errors(browser) == []


@pytest.mark.slow
def test_two_thousand_items_page_quickly(tmp_path, browser):
    """A run of 2,000 items: the page shows one page of cards, pages on, and filters stay quick."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support.ui import Select

    tiny = build_tiny_clip(tmp_path / "clip")
    run(scorer="clip", bench="shapes", model=f"local-dir:{tiny.local_dir}", results_dir=tmp_path / "results",
        bench_options={"n": 500}, workers=0, progress=False)
    make_report(tmp_path / "results")
    folder = tmp_path / "results" / "report"
    start = time.time()
    _open(browser, folder, "#items/shapes")
    _wait(browser, lambda: _cards(browser))
    opened = time.time() - start
    assert len(_cards(browser)) == 25
    assert "of 2000" in browser.find_element(By.CSS_SELECTOR, ".pager .count").text
    browser.find_element(By.CSS_SELECTOR, ".pager .next").click()
    assert _cards(browser)[0] == "winoground/25"
    start = time.time()
    Select(browser.find_element(By.ID, "filter-subset")).select_by_value("zeroshot")
    assert _cards(browser)[0] == "zeroshot/0" and time.time() - start < 5
    assert opened < 15 and _errors(browser) == []


def test_a_comparison_of_pairs_links_to_the_items_of_each_pair(browser, tmp_path):
    """What'sUp's pair_accuracy counts pairs of images, named "item+item": its link shows the two
    items of every pair where A is right and B wrong, and the banner says it counts units."""
    import numpy as np
    from benchmark_fixtures.whatsup import write_whatsup
    from selenium.webdriver.common.by import By

    from harness.store import ScoreStore

    write_whatsup(tmp_path / "data", groups=2, subsets=("controlled-a",))
    results = tmp_path / "results"
    runs = []
    for seed in (0, 1):
        tiny = build_tiny_clip(tmp_path / f"clip{seed}", seed=seed)
        runs.append(run(scorer="clip", bench="whatsup:controlled-a", model=f"local-dir:{tiny.local_dir}",
                        data_root=tmp_path / "data", results_dir=results, workers=0, progress=False))
    # A gets every image right; B gets the "on" images wrong, so only the on/under pairs part them
    for result, wrong in zip(runs, ({""}, {"on"})):
        ScoreStore(results / "scores.sqlite").put(result.evaluation.scorer_key, "whatsup", "1", [
            (item, np.array([[0.1, 0.9, 0.2, 0.3] if item.meta["slot"] in wrong else [0.9, 0.1, 0.2, 0.3]]))
            for item in result.evaluation.items])
    comparison = compare([r.run_id for r in runs], results)
    make_report(results)
    k = next(i for i, r in enumerate(comparison.rows) if r["metric"] == "pair_accuracy")
    units = comparison.items[k]["a_better"]
    assert sorted(units) == ["controlled-a/0+controlled-a/1", "controlled-a/4+controlled-a/5"]
    _open(browser, results / "report", "#comparisons")
    browser.find_element(By.CSS_SELECTOR, f"a[href$='/cmp/{k}/a']").click()
    _wait(browser, lambda: browser.find_elements(By.ID, "cmp-banner"))
    assert sorted(_cards(browser)) == ["controlled-a/0", "controlled-a/1", "controlled-a/4", "controlled-a/5"]
    assert "2 unit(s)" in browser.find_element(By.ID, "cmp-banner").text
    assert _errors(browser) == []
