"""Keystrokes and seconds per task on the ranking page, in a real Chromium.

Run from the repo root (needs Debian's chromium and chromium-driver: `make browser-deps`):
    .venv/bin/python bench/labeling_keys.py                    # this checkout
    .venv/bin/python bench/labeling_keys.py --app /tmp/before  # another checkout (a worktree
                                                               # of an older commit), same venv
    .venv/bin/python bench/labeling_keys.py --tasks 10 --repeat 3

What it does:
1. In a fresh SQLite database and data folder, migrates the app in `--app` and makes six
   datasets: 2, 4 and 9 completions per prompt, each with ratings (helpful, honest and harmless
   required, a strength required for pairs) and without (no criteria; where the app has the
   settings, ratings off and the strength optional), one labeler, one label per prompt.
2. Serves the app with `manage.py runserver --noreload` on 127.0.0.1 (`--port`), DEBUG on so
   it serves its static files, and logs the labeler in with Chromium, headless.
3. For each dataset, labels `--tasks` prompts with the fewest keys the page offers, read from
   the page itself, so an older page gets its own plan: on a page that decides a pair by one
   vote, the vote key; otherwise every rating (with `e` and one digit per criterion where the
   page has it, else a criterion key and a digit each, and an arrow to the next response),
   the ranking (one number per response), the strength of a pair where asked (Shift+digit where
   the page has it, else `g` and a digit) and Enter. A chord (Shift+1) counts as one key.
4. Prints, per dataset, the keys per task and the seconds per task: from the moment a task's
   form is on screen until the next one is, sending the keys without pause (median over tasks,
   and the median of `--repeat` runs). That is the page's and the server's share of a task; a
   person's share is their reading and deciding plus their keys: the last column adds 0.28 s
   per key (the Keystroke-Level Model's average skilled typist) as a rough guide.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tests.browser import chromium  # noqa: E402

KEY_SECONDS = 0.28
PASSWORD = "bench-password-1"
SETUP = """
from django.contrib.auth.models import User
from labeling.models import Completion, Dataset, Prompt
fields = {{f.name for f in Dataset._meta.get_fields()}}
ANSWER = "Answer %d: **boil** it for %d minutes.\\n\\n- one\\n- two"
bench_user = User.objects.create_user("bench", password={password!r})
for k in (2, 4, 9):
    for rated in (True, False):
        extra = {{}}
        if not rated and "ratings" in fields:
            extra = {{"ratings": "off", "strength": "optional"}}
        if "criteria" in {{f.name for f in Dataset._meta.concrete_fields}}:  # before 0014
            extra["criteria"] = ["helpful", "honest", "harmless"] if rated else []
        dataset = Dataset.objects.create(
            slug=f"k{{k}}-{{'rated' if rated else 'plain'}}", name=f"K={{k}}",
            labels_per_prompt=1, status="active", **extra)
        if rated and "criteria" not in extra:
            from labeling.criteria import default_criteria
            from labeling.models import RatingCriterion
            for criterion in default_criteria():
                RatingCriterion.objects.create(dataset=dataset, **criterion)
        if "pool_labelers" in fields:  # from workspaces on: the pool is offered the dataset
            from labeling.services.workspaces import change_pool
            change_pool(dataset=dataset, add_labelers=[bench_user])
        for n in range({tasks} + 2):
            prompt = Prompt.objects.create(
                dataset=dataset, external_id=f"p{{n}}",
                messages=[{{"role": "user", "content": f"Question {{n}}: how do I boil an egg?"}}])
            Completion.objects.bulk_create(
                Completion(prompt=prompt, position=i, external_id=f"c{{i}}",
                           text=ANSWER % (i, i + 5))
                for i in range(k))
"""


def plan(browser) -> list[str | tuple[str, str]]:
    """The fewest keys that complete the task on screen: strings are keys, (modifier, key)
    tuples chords."""
    page = browser.execute_script(
        """
        const form = document.getElementById('ranking-form');
        const keymap = document.getElementById('keymap').innerHTML;
        return {
          votes: form.dataset.votes === '1',
          cards: form.querySelectorAll('.card').length,
          criteria: Array.from(form.querySelector('.card').querySelectorAll('.rating'))
                      .map(f => f.dataset.criterion),
          strength: !!form.querySelector('[name=strength]'),
          chain: keymap.includes('<kbd>e</kbd> then'),
          chord: keymap.includes('<kbd>Shift</kbd>+<kbd>1</kbd>'),
        };
        """
    )
    if page["votes"]:
        return ["1"]
    keys: list[str | tuple[str, str]] = []
    letters = {"helpful": "h", "honest": "o", "harmless": "a"}
    for card in range(page["cards"]):
        if not page["criteria"]:
            break
        if page["chain"]:
            keys += ["e", *("5" for _ in page["criteria"])]  # moves on to the next response
        else:
            for criterion in page["criteria"]:
                keys += [letters[criterion], "5"]
            if card < page["cards"] - 1:
                keys.append("ARROW_RIGHT")
    keys += [str(n) for n in range(1, page["cards"] + 1)]
    if page["strength"]:
        keys += [("SHIFT", "2")] if page["chord"] else ["g", "2"]
    keys.append("ENTER")
    return keys


def send(browser, keys: list[str | tuple[str, str]]) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.keys import Keys

    chain = ActionChains(browser)
    for key in keys:
        if isinstance(key, tuple):
            modifier = getattr(Keys, key[0])
            chain.key_down(modifier).send_keys(key[1]).key_up(modifier)
        else:
            chain.send_keys(getattr(Keys, key) if key.isupper() else key)
    chain.perform()


def wait_for(browser, script: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while not browser.execute_script(script):
        if time.monotonic() > deadline:
            raise TimeoutError(f"waited {timeout} s for: {script}")
        time.sleep(0.005)


def label(browser, base: str, slug: str, tasks: int) -> tuple[int, float]:
    """(keys per task, median seconds per task) over `tasks` tasks of one dataset."""
    browser.get(f"{base}/datasets/{slug}/next/")
    browser.find_element("xpath", "//button[.='Start labeling']").click()
    wait_for(browser, "return !!document.getElementById('ranking-form')")
    seconds, counts = [], []
    for _ in range(tasks):
        url = browser.current_url
        keys = plan(browser)
        counts.append(len(keys))
        started = time.perf_counter()
        send(browser, keys)
        wait_for(
            browser,
            f"return location.href !== {url!r} && document.readyState === 'complete' && "
            "(!!document.getElementById('ranking-form') || document.body.innerText.includes("
            "'Nothing left'))",
        )
        seconds.append(time.perf_counter() - started)
    if len(set(counts)) != 1:
        raise RuntimeError(f"{slug}: the plan changed between tasks: {counts}")
    return counts[0], statistics.median(seconds)


def run(app: Path, tasks: int, port: int) -> dict[str, tuple[int, float]]:
    folder = Path(tempfile.mkdtemp(prefix="preflab-keys-"))
    env = os.environ | {
        "DATABASE_URL": f"sqlite:///{folder / 'db.sqlite3'}",
        "PREFLAB_DATA_DIR": str(folder),
        "DEBUG": "true",
    }
    env.pop("CELERY_BROKER_URL", None)
    python = str(ROOT / ".venv" / "bin" / "python")
    manage = [python, "manage.py"]
    subprocess.run([*manage, "migrate", "-v0"], cwd=app, env=env, check=True)
    setup = SETUP.format(password=PASSWORD, tasks=tasks)
    subprocess.run([*manage, "shell", "-c", setup], cwd=app, env=env, check=True)
    server = subprocess.Popen(
        [*manage, "runserver", "--noreload", f"127.0.0.1:{port}"],
        cwd=app,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    base = f"http://127.0.0.1:{port}"
    browser = None
    try:
        for _ in range(200):
            try:
                urllib.request.urlopen(base + "/login/", timeout=1)
                break
            except OSError:
                time.sleep(0.1)
        browser = chromium()
        browser.implicitly_wait(10)
        browser.get(base + "/login/")
        browser.find_element("name", "username").send_keys("bench")
        browser.find_element("name", "password").send_keys(PASSWORD)
        browser.find_element("css selector", "form button, form [type=submit]").click()
        wait_for(
            browser,
            "return document.body.innerText.includes('Start labeling') || "
            "document.body.innerText.includes('K=')",
        )
        results = {}
        for k in (2, 4, 9):
            for kind in ("rated", "plain"):
                results[f"k{k}-{kind}"] = label(browser, base, f"k{k}-{kind}", tasks)
        return results
    finally:
        if browser is not None:
            browser.quit()
        server.terminate()
        server.wait()
        shutil.rmtree(folder, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--app", type=Path, default=ROOT, help="the checkout to serve")
    parser.add_argument("--tasks", type=int, default=8, help="tasks per dataset")
    parser.add_argument("--repeat", type=int, default=1, help="runs; medians are printed")
    parser.add_argument("--port", type=int, default=8791)
    args = parser.parse_args()
    print(f"app: {args.app}  load average: {os.getloadavg()[0]:.2f}")
    runs = [run(args.app.resolve(), args.tasks, args.port) for _ in range(args.repeat)]
    print(
        f"{'completions':>11} {'ratings':>8} {'keys/task':>9} {'s/task (page)':>14}"
        f" {'runs':>22} {'+0.28 s/key':>12}"
    )
    for name in runs[0]:
        keys = runs[0][name][0]
        seconds = [result[name][1] for result in runs]
        median = statistics.median(seconds)
        k, kind = name[1:].split("-")
        print(
            f"{k:>11} {'yes' if kind == 'rated' else 'no':>8} {keys:>9} {median:>14.3f}"
            f" {' '.join(f'{s:.3f}' for s in seconds):>22} {median + KEY_SECONDS * keys:>12.2f}"
        )
    print(f"load average after: {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
