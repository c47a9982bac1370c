#!/usr/bin/python3
"""dashboard.py — the dashboard (docs/dashboard.md) in a real browser: headless Chromium
driven by Selenium, against a kvd cluster that tests/integration/test_dashboard.sh started.

    dashboard.py CONFIG.json

CONFIG names the nodes ({"nodes": {"1": {"http": PORT, "pid": PID, "log": FILE}}}), the
replay page of Figure8PaperUnsafe ("replay"), where screenshots go ("shots") and, when
"docs" is set, the folder their newest copies go to. Each check prints "ok" or "FAIL"; the
last line is "dashboard: N passed, M failed". Waits poll the page with timeouts.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.request

from selenium import webdriver
from selenium.webdriver.chrome.service import Service
from selenium.webdriver.common.by import By
from selenium.webdriver.support.ui import Select

cfg = json.load(open(sys.argv[1]))
nodes = {int(k): v for k, v in cfg["nodes"].items()}
shots = cfg["shots"]
os.makedirs(shots, exist_ok=True)
passed = failed = 0
restarted = []


def check(what, ok, detail=""):
    global passed, failed
    if ok:
        passed += 1
        print(f"  ok    {what}")
    else:
        failed += 1
        print(f"  FAIL  {what}{': ' + detail if detail else ''}")
    sys.stdout.flush()
    return ok


def wait_for(what, cond, timeout):
    """Poll cond() until it returns something true, or timeout seconds pass."""
    deadline = time.time() + timeout
    last = None
    while time.time() < deadline:
        try:
            last = cond()
            if last:
                return last
        except Exception as e:  # the page is changing under us: ask again
            last = e
        time.sleep(0.1)
    print(f"    (waited {timeout} s for {what}; last: {last})")
    return None


def status(i):
    with urllib.request.urlopen(f"http://127.0.0.1:{nodes[i]['http']}/v1/status", timeout=3) as r:
        return json.load(r)


def shot(d, name):
    path = os.path.join(shots, name)
    d.save_screenshot(path)
    if cfg.get("docs"):
        os.makedirs(cfg["docs"], exist_ok=True)
        shutil.copyfile(path, os.path.join(cfg["docs"], name))
    print(f"    screenshot {path}")


def severe(d):
    return [l["message"] for l in d.get_log("browser") if l["level"] == "SEVERE"]


def uncaught(d):
    """JavaScript errors: what must never happen, even while nodes die."""
    return [l["message"] for l in d.get_log("browser")
            if l["level"] == "SEVERE" and l.get("source") == "javascript"]


# The page redraws as records arrive: read it and act on it in one script each time, so
# that no element goes stale between finding it and using it.
def count(d, css):
    return d.execute_script("return document.querySelectorAll(arguments[0]).length", css)


def attr(d, css, name):
    return d.execute_script(
        "const e = document.querySelector(arguments[0]); return e && e.getAttribute(arguments[1])",
        css, name)


def click(d, css):
    return d.execute_script(
        "const e = document.querySelector(arguments[0]);"
        "if (e) e.dispatchEvent(new MouseEvent('click', {bubbles: true})); return !!e", css)


def leaders(d):
    """The nodes the page draws as leaders of the group on view: [(id, term)]."""
    return [tuple(x) for x in d.execute_script(
        "return [...document.querySelectorAll(\"#stage g.node[data-role='leader']\")]"
        ".map(e => [Number(e.dataset.node), Number(e.dataset.term)])")]


def browser():
    o = webdriver.ChromeOptions()
    for a in ["--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
              "--window-size=1280,800"]:
        o.add_argument(a)
    o.set_capability("goog:loggingPrefs", {"browser": "ALL"})
    d = webdriver.Chrome(service=Service("/usr/bin/chromedriver"), options=o)
    d.execute_cdp_cmd("Emulation.setDeviceMetricsOverride",
                      {"width": 1280, "height": 800, "deviceScaleFactor": 1, "mobile": False})
    return d


def restart(i, argv):
    log = open(nodes[i]["log"], "ab")
    p = subprocess.Popen(argv, stdout=log, stderr=log)
    restarted.append(p)
    nodes[i]["pid"] = p.pid


def live(d):
    d.get(f"http://127.0.0.1:{nodes[1]['http']}/ui/")
    one = wait_for("one leader on the page", lambda: len(leaders(d)) == 1 and leaders(d), 15)
    check("the live page shows exactly one leader of the group on view", one, str(leaders(d)))
    errs = severe(d)
    check("the page loaded with no console errors", not errs, "; ".join(errs))
    if not one:
        return
    group = int(attr(d, "#shards tr.selected", "data-group"))
    lid, lterm = one[0]
    rows = [g for g in status(lid)["groups"] if g["group"] == group]
    check(f"its term matches /v1/status of n{lid} (group {group}, term {lterm})",
          rows and rows[0]["role"] == "leader" and rows[0]["term"] == lterm, str(rows))

    # One request, followed end to end.
    req = urllib.request.Request(f"http://127.0.0.1:{nodes[lid]['http']}/v1/kv/followed",
                                 data=b"v", method="PUT")
    urllib.request.urlopen(req, timeout=5).read()
    item = wait_for("the request in the list", lambda: count(d, "#requests li"), 10)
    if check("the write appears among the requests", item):
        click(d, "#requests li:last-child")
        kinds = wait_for("its steps", lambda: (lambda k: {"propose", "apply", "answer"} <= k and k)(
            set(d.execute_script("return [...document.querySelectorAll('#follow li')]"
                                 ".map(e => e.dataset.kind)"))), 10)
        check("clicked, it is followed: propose, AppendEntries, apply on the nodes, answer", kinds,
              str(kinds))
    shot(d, "dashboard-live.png")

    # Kill the leader: a new one, on the page, within a few election timeouts.
    argv = open(f"/proc/{nodes[lid]['pid']}/cmdline", "rb").read().split(b"\0")[:-1]
    os.kill(nodes[lid]["pid"], signal.SIGKILL)
    killed = time.time()
    new = wait_for("a new leader", lambda: (lambda l: len(l) == 1 and l[0][0] != lid and l)(leaders(d)), 10)
    check(f"after kill -9 of leader n{lid} the page shows a new leader"
          f" ({time.time() - killed:.1f} s; election timeout 0.3 s, status polled every 0.7 s)",
          new, str(leaders(d)))
    down = wait_for("down", lambda: count(d, f"#stage g.node[data-node='{lid}'][data-up='false']"), 5)
    check(f"n{lid} is drawn down", down)
    if new:
        check("the new leader's term is higher", new[0][1] > lterm, f"{new[0][1]} <= {lterm}")
    shot(d, "dashboard-new-leader.png")

    # Back, then a partition through the page's control: isolate the leader.
    restart(lid, argv)
    wait_for(f"n{lid} back", lambda: count(d, f"#stage g.node[data-node='{lid}'][data-up='true']"), 15)
    state = d.find_element(By.ID, "control-state").text
    check("the controls are on (fault injection)", state == "controls on", state)
    cur = wait_for("one leader", lambda: len(leaders(d)) == 1 and leaders(d), 10)
    if not cur:
        check("a leader before the partition", False)
        return
    iso, iterm = cur[0]
    click(d, f"#stage g.node[data-node='{iso}']")
    d.find_element(By.ID, "isolate").click()
    cuts = wait_for("the cut", lambda: count(d, "#stage line.cut") >= 2, 10)
    check(f"isolating n{iso} from the page draws its links cut", cuts)
    majority = wait_for("a leader on the majority side", lambda: [
        (i, t) for i, t in leaders(d) if i != iso and t > iterm], 15)
    check("a new leader appears on the majority side", majority, str(leaders(d)))
    shot(d, "dashboard-partition.png")
    d.find_element(By.ID, "heal").click()
    healed = wait_for("no cut", lambda: count(d, "#stage line.cut") == 0, 10)
    check("Heal removes the cut", healed)

    # Leadership transfer from the page: a follower of the shard on view gets it.
    click(d, f"#stage g.node[data-node='{iso}']")  # unselect
    cur = wait_for("one leader after the heal", lambda: len(leaders(d)) == 1 and leaders(d), 15)
    if check("one leader after the heal", cur, str(leaders(d))):
        target = min(i for i in nodes if i != cur[0][0])
        click(d, f"#stage g.node[data-node='{target}']")
        d.find_element(By.ID, "transfer").click()
        moved = wait_for("the transfer", lambda: [(i, t) for i, t in leaders(d)
                                                  if i == target and t > cur[0][1]], 10)
        check(f"Transfer hands the shard to n{target}", moved,
              f"{leaders(d)}; {d.find_element(By.ID, 'status-line').text}")
    errs = uncaught(d)
    check("no JavaScript error through all of it", not errs, "; ".join(errs))


def replay(d):
    d.get("file://" + os.path.abspath(cfg["replay"]))
    total = wait_for("the trace", lambda: int(d.find_element(By.ID, "seek").get_attribute("max")), 10)
    check("the replay page of Figure8PaperUnsafe opens from file://", total)
    Select(d.find_element(By.ID, "speed")).select_by_value("100")
    d.find_element(By.ID, "play").click()
    shown = wait_for("the violation", lambda: d.find_element(By.ID, "violation").is_displayed(), 20)
    text = d.find_element(By.ID, "violation").text
    check("played, it stops at the violation and shows it", shown and text.startswith("VIOLATION"), text)
    pos = int(d.find_element(By.ID, "seek").get_attribute("data-pos"))
    check("it stopped there, before the end", 0 < pos < total, f"{pos} of {total}")
    shot(d, "dashboard-replay-figure8.png")
    d.find_element(By.ID, "step").click()
    check("Step goes one record on", int(d.find_element(By.ID, "seek").get_attribute("data-pos")) == pos + 1)
    d.find_element(By.ID, "to-end").click()
    check("End shows the last record",
          int(d.find_element(By.ID, "seek").get_attribute("data-pos")) == total)
    errs = severe(d)
    check("the replay page has no console errors", not errs, "; ".join(errs))


def main():
    d = browser()
    try:
        live(d)
        replay(d)
    finally:
        d.quit()
        for p in restarted:
            p.kill()
            p.wait()
    print(f"dashboard: {passed} passed, {failed} failed")
    return 1 if failed else 0


sys.exit(main())
