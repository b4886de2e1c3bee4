"""The report page in a real headless Chromium: no console errors, no failed loads, paging works.

Chromium is driven over the DevTools protocol (tools/headless_chromium.py), which reports
console.error/warning, uncaught exceptions and failed resource loads precisely. Skipped when
no chromium is installed; CI installs Debian's: apt-get install -y --no-install-recommends chromium
"""
import pytest

from tools.headless_chromium import HeadlessChromium, find_chromium

pytestmark = pytest.mark.skipif(find_chromium() is None,
                                reason="chromium not installed (apt-get install -y --no-install-recommends chromium)")

PAGE_THROUGH = """(function () {
  var group = Array.prototype.find.call(document.querySelectorAll('details.group'),
                                        function (g) { return g.querySelector('button.next'); });
  if (!group) { return 'no pager'; }
  var before = group.querySelector('.pane.before pre').textContent;
  group.querySelector('button.next').click();
  return group.querySelector('.position').textContent + '|' +
         (group.querySelector('.pane.before pre').textContent.length > 0) + '|' +
         group.querySelector('button.prev').disabled;
})()"""


@pytest.fixture(scope="module")
def browser():
    with HeadlessChromium() as chromium:
        yield chromium


def check_page(browser, index_html):
    page = browser.open(index_html.resolve().as_uri())
    assert page.problems == [], "\n".join(page.problems)
    assert page.evaluate("document.querySelectorAll('table.passes tbody tr').length") > 0
    assert page.evaluate("document.querySelector('svg.chart') !== null")
    assert page.evaluate(PAGE_THROUGH) == "2|true|false"
    page.settle(0.2)
    assert page.problems == [], "\n".join(page.problems)


@pytest.mark.parametrize("pipeline", ["tpu", "cpu"])
def test_micro_report_renders_without_errors(pipeline, micro_report, browser):
    check_page(browser, micro_report(pipeline) / "index.html")


def test_diff_page_renders_without_errors(micro_naive, micro_report, browser, tmp_path):
    from tools.diffview import main as diffview

    rolled = micro_report("seed").parent / "seed.onnx"
    page = tmp_path / "diff.html"
    assert diffview([str(micro_naive), str(rolled), "-o", str(page)]) == 0
    loaded = browser.open(page.as_uri())
    assert loaded.problems == [], "\n".join(loaded.problems)


@pytest.mark.slow
@pytest.mark.parametrize("pipeline", ["tpu", "cpu"])
def test_vmamba_t_report_renders_without_errors(pipeline, vmamba_t_report, browser):
    check_page(browser, vmamba_t_report(pipeline) / "index.html")
