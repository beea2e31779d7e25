#!/usr/bin/python3
# Debian's python3-selenium is the system python's: this test runs under
# /usr/bin/python3 on purpose.
"""The dashboard in a real browser (issue 15): Debian's headless Chromium
driven by Selenium.

- on the primary's dashboard of a three-node cluster: log in, see the
  three nodes, click "Resync Cluster", see the dialog name both
  secondaries, find its confirm button disabled until the cluster's name
  is typed (not with another), confirm, watch both progress bars reach
  100 %, see the success banner; the secondaries' images are then
  byte-identical to the primary's. Screenshots of the dialog and of the
  result are saved under the build folder (web-dialog.png,
  web-result.png);
- a secondary's dashboard shows the same cluster and starts the resync
  (forwarded to the primary), after new drift: identical again;
- a one-node cluster and a cluster without a primary: no button, the
  reason in its place.
Skips (exit 77, saying SKIP) only when the browser cannot start."""
import os
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from cluster_lib import BUILD, MB, check, fail  # noqa: E402
from resyncfs_lib import Scratch  # noqa: E402
from web_lib import TOKEN, WebCluster, digest  # noqa: E402

try:
    from selenium import webdriver
    from selenium.common.exceptions import WebDriverException
    from selenium.webdriver.chrome.service import Service
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC
    from selenium.webdriver.support.ui import WebDriverWait
except ImportError as e:
    print("SKIP: python3-selenium is not installed (tools/deps installs it): %s" % e)
    sys.exit(77)

SHOTS = os.path.join(BUILD, "screenshots")


def browser():
    o = webdriver.ChromeOptions()
    o.binary_location = "/usr/bin/chromium"
    for a in ("--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
              "--window-size=1100,1000"):
        o.add_argument(a)
    try:
        return webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    except (WebDriverException, OSError) as e:
        print("SKIP: the browser cannot start (chromium, chromium-driver): %s" % e)
        print("SKIP: THE DASHBOARD WAS NOT TESTED IN A BROWSER")
        sys.exit(77)


def wait(d, cond, what, timeout=60):
    try:
        return WebDriverWait(d, timeout, poll_frequency=0.1).until(cond)
    except Exception:
        fail("timed out waiting for %s; page: %s" % (what, d.find_element(By.TAG_NAME, "main").text))


def log_in(d, url):
    d.get(url)
    wait(d, EC.visibility_of_element_located((By.ID, "token")), "the login form")
    d.find_element(By.ID, "token").send_keys(TOKEN)
    d.find_element(By.ID, "login-btn").click()
    wait(d, EC.visibility_of_element_located((By.ID, "overview")), "the overview")


def attrs(d, selector, attr="data-node"):
    """An attribute of every element matching selector, read at once (the
    page re-renders its tables as the status and the plan come in)."""
    return d.execute_script(
        "return Array.from(document.querySelectorAll(arguments[0]), e => e.getAttribute(arguments[1]))",
        selector, attr)


def node_rows(d, n):
    return wait(d, lambda d: (lambda r: r if len(r) == n else False)(attrs(d, "#nodes tbody tr")),
                "%d node rows" % n)


def resync_through(d, c, secondaries, shots=False):
    """Click Resync Cluster, check the dialog, confirm, wait for success."""
    btn = wait(d, EC.element_to_be_clickable((By.ID, "resync-btn")), "the Resync Cluster button")
    check(btn.text == "Resync Cluster", "the button says Resync Cluster: %r" % btn.text)
    btn.click()
    dlg = wait(d, EC.visibility_of_element_located((By.ID, "dialog")), "the dialog")
    names = attrs(d, "#dlg-nodes tbody tr")
    check(sorted(names) == sorted(secondaries), "the dialog names the secondaries: %s" % names)
    check("will be erased and replaced with the primary's" in dlg.text,
          "the dialog says the data will be erased: %s" % dlg.text)
    check("Undo is" in dlg.text, "the dialog says whether undo is on")
    # The plan fills in the bytes that differ.
    wait(d, lambda d: "Plan from the primary" in d.find_element(By.ID, "dlg-plan").text,
         "the plan in the dialog")
    go = d.find_element(By.ID, "dlg-go")
    check(not go.is_enabled(), "confirm is disabled before the cluster name is typed")
    box = d.find_element(By.ID, "dlg-confirm")
    box.send_keys(c.tag[:-1])
    check(not go.is_enabled(), "confirm is disabled with part of the name")
    box.send_keys(c.tag[-1] + "x")
    check(not go.is_enabled(), "confirm is disabled with another name")
    box.send_keys("\b")
    wait(d, lambda d: go.is_enabled(), "confirm enabled once the name is typed")
    if shots:
        d.save_screenshot(os.path.join(SHOTS, "web-dialog.png"))
    go.click()

    def bars_full(d):
        full = d.execute_script(
            "return Array.from(document.querySelectorAll('#bars .bar'))"
            ".filter(b => b.querySelector('progress').value === 100).map(b => b.dataset.node)")
        return sorted(full) == sorted(secondaries)
    wait(d, bars_full, "both progress bars at 100 %", timeout=120)
    banner = wait(d, EC.visibility_of_element_located((By.ID, "result-banner")), "the result banner")
    check("ok" in banner.get_attribute("class").split() and banner.text.startswith("Success"),
          "the success banner: %s" % banner.text)
    check(sorted(attrs(d, "#banners p.banner.ok[data-node]")) == sorted(secondaries),
          "a success banner for each secondary")
    check(attrs(d, "#bars .bar", "data-pct") == ["100"] * len(secondaries),
          "the bars say 100 %")
    if shots:
        d.set_window_size(1100, 1500)  # the bars, the banners and the strips
        d.save_screenshot(os.path.join(SHOTS, "web-result.png"))
        d.set_window_size(1100, 1000)
    p = digest(c.image(c.names[0]))
    for n in secondaries:
        check(digest(c.image(n)) == p, "%s's image is byte-identical to the primary's" % n)


os.makedirs(SHOTS, exist_ok=True)
sc = Scratch()
d = browser()
t0 = time.monotonic()
try:
    c = WebCluster(sc, "webui", ["p", "s1", "s2"], "p", size=32 * MB)
    for n in c.names:
        c.start(n)
    c.write("p", 0, os.urandom(4 * MB))
    c.write("s1", 9 * MB, os.urandom(2 * MB))  # writes of its own: Diverged
    before_p = digest(c.image("p"))
    check(digest(c.image("s1")) != before_p, "s1 differs before the resync")

    # The primary's dashboard.
    log_in(d, c.url("p"))
    check(node_rows(d, 3) == ["p", "s1", "s2"], "three nodes")
    wait(d, lambda d: "live" == d.find_element(By.ID, "live").text, "the live event stream")
    resync_through(d, c, ["s1", "s2"], shots=True)
    check(digest(c.image("p")) == before_p, "the primary's image did not change")
    # Nothing refused by the Content-Security-Policy, no script error.
    bad = [e for e in d.get_log("browser") if e.get("level") == "SEVERE"]
    check(not bad, "no error in the browser's console: %s" % bad)
    wait(d, lambda d: d.execute_script(
        "return Array.from(document.querySelectorAll('#nodes tbody tr'))"
        ".every(r => r.querySelector('.st-UpToDate'))"),
         "every node UpToDate in the overview (refreshed live)")

    # A secondary's dashboard: the same cluster, the resync forwarded.
    c.write("p", 20 * MB, os.urandom(1 * MB))
    c.write("s2", 1 * MB, os.urandom(1 * MB))
    d.delete_all_cookies()
    log_in(d, c.url("s2"))
    check(node_rows(d, 3) == ["p", "s1", "s2"], "the secondary shows the same three nodes")
    check("webui" in d.find_element(By.ID, "c-name").text, "the secondary shows the cluster")
    resync_through(d, c, ["s1", "s2"])
    for n in c.names:
        c.stop(n)

    # No button where a resync cannot run: one node; no primary.
    for tag, names, primary, why in [("websolo", ["a"], "a", "one node"),
                                     ("webnoprim", ["a", "b"], None, "no primary")]:
        x = WebCluster(sc, tag, names, primary, size=4 * MB)
        x.start(names[0])
        d.delete_all_cookies()
        log_in(d, x.url(names[0]))
        node_rows(d, len(names))
        note = wait(d, EC.visibility_of_element_located((By.ID, "resync-absent")), "the reason")
        check(why in note.text, "%s: the reason is shown: %s" % (tag, note.text))
        check(not d.find_elements(By.ID, "resync-btn"), "%s: no Resync Cluster button" % tag)
        x.stop(names[0])
finally:
    d.quit()
print("screenshots: %s (the dialog), %s (the result)" % (
    os.path.join(SHOTS, "web-dialog.png"), os.path.join(SHOTS, "web-result.png")))
print("ok in %.1f s" % (time.monotonic() - t0))
