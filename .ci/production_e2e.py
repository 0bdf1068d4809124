"""CI: PrefLab's production entry (`make serve`: gunicorn, a Celery worker and beat, DEBUG off,
PostgreSQL and Redis) tried from outside, as an operator and a labeler would.

.ci/run starts `make serve` with the environment below and runs this script with the same one.
It waits for /healthz to be green, imports a file over the API (the worker does it), opens the
API docs in Chromium (Swagger UI from the app itself, under the CSP), has a labeler rank a task
in Chromium with the keyboard only (so rank.js was served), has an AI labeler rank the dataset
through the worker against a scripted OpenAI-compatible endpoint on loopback (with the API key
from the worker's environment), and hammers the API until it answers 429 with Retry-After.
Exits non-zero, saying what failed, on the first failure.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

import django  # noqa: E402

django.setup()

from django.contrib.auth import get_user_model  # noqa: E402
from rest_framework.authtoken.models import Token  # noqa: E402

from labeling.models import Ranking  # noqa: E402
from tests.browser import chromium  # noqa: E402

BASE = f"http://127.0.0.1:{os.environ.get('PORT', '8765')}"
PASSWORD = "a-long-labeler-password-1"


def call(
    path: str, *, token: str = "", method: str = "GET", body: Any = None
) -> tuple[int, Any, Any]:
    """(status, JSON body or text, headers) of one request to the running server."""
    data, headers = None, {"Host": "127.0.0.1"}
    if token:
        headers["Authorization"] = f"Token {token}"
    if isinstance(body, bytes):  # a multipart body built by `multipart`
        data, headers["Content-Type"] = body, f"multipart/form-data; boundary={BOUNDARY}"
    elif body is not None:
        data, headers["Content-Type"] = json.dumps(body).encode(), "application/json"
    request = urllib.request.Request(BASE + path, data=data, headers=headers, method=method)
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            status, raw, received = response.status, response.read(), response.headers
    except urllib.error.HTTPError as error:
        status, raw, received = error.code, error.read(), error.headers
    try:
        return status, json.loads(raw), received
    except ValueError:
        return status, raw.decode(errors="replace"), received


BOUNDARY = "preflab-ci-boundary"


def multipart(name: str, filename: str, content: bytes) -> bytes:
    return (
        (
            f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="{name}"; '
            f'filename="{filename}"\r\nContent-Type: application/octet-stream\r\n\r\n'
        ).encode()
        + content
        + f"\r\n--{BOUNDARY}--\r\n".encode()
    )


def check(condition: bool, what: str) -> None:
    if not condition:
        raise SystemExit(f"FAILED: {what}")
    print(f"ok: {what}")


def wait_until_healthy() -> None:
    deadline = time.monotonic() + 120
    status, body = 0, None
    while time.monotonic() < deadline:
        try:
            status, body, _ = call("/healthz")
        except OSError:
            status = 0
        if status == 200:
            break
        time.sleep(1)
    check(status == 200, f"/healthz is green within 2 minutes ({status} {body})")


def import_over_the_api(staff_token: str, slug: str) -> None:
    status, _, _ = call(
        "/api/v1/datasets/",
        token=staff_token,
        method="POST",
        body={"slug": slug, "name": "CI production", "labels_per_prompt": 1, "status": "active"},
    )
    check(status == 201, "a staff token creates a dataset")
    rows = [
        {
            "id": f"p{n}",
            "prompt": f"How do I do task {n}?",
            "completions": ["Like so.", "No.", "Ask."],
        }
        for n in range(3)
    ]
    content = "".join(json.dumps(row) + "\n" for row in rows).encode()
    status, job, _ = call(
        f"/api/v1/datasets/{slug}/imports/",
        token=staff_token,
        method="POST",
        body=multipart("file", "prompts.jsonl", content),
    )
    check(status == 202 and job["status"] == "queued", "an upload is queued (202)")
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and job["status"] in ("queued", "running"):
        time.sleep(0.5)
        _, job, _ = call(f"/api/v1/imports/{job['id']}/", token=staff_token)
    check(
        job["status"] == "succeeded" and job["created_count"] == 3, f"the worker imported it: {job}"
    )


def csp_violations(driver: Any) -> list[str]:
    return [
        entry["message"]
        for entry in driver.get_log("browser")
        if "Content Security Policy" in entry["message"]
    ]


def docs_load_offline(driver: Any) -> None:
    from selenium.webdriver.common.by import By

    driver.get(BASE + "/api/docs/")
    driver.find_element(By.CSS_SELECTOR, ".swagger-ui .information-container")
    check(not csp_violations(driver), "Swagger UI renders from the app's own files under the CSP")


def admin_pages_run_under_the_csp(driver: Any, username: str, slug: str) -> None:
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    from labeling.models import Dataset

    driver.get(BASE + "/admin/login/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    driver.find_element(By.ID, "site-name")
    dataset = Dataset.objects.get(slug=slug)
    for path in (
        "/admin/labeling/dataset/",
        f"/admin/labeling/dataset/{dataset.pk}/change/",
        f"/admin/labeling/dataset/{dataset.pk}/import/",
        "/admin/labeling/importjob/",
        f"/quality/{slug}/",
        f"/quality/{slug}/leaderboard/",
        "/review/",
        f"/review/{slug}/",
        "/rewards/",
    ):
        driver.get(BASE + path)
        driver.find_element(By.TAG_NAME, "h1")
    check(not csp_violations(driver), "the admin and staff pages run under the CSP")
    driver.delete_all_cookies()


def rank_with_the_keyboard(driver: Any, username: str) -> None:
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.wait import WebDriverWait

    driver.get(BASE + "/login/")
    driver.find_element(By.NAME, "username").send_keys(username)
    driver.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    driver.find_element(By.XPATH, "//button[.='Start labeling']").send_keys(Keys.ENTER)
    driver.find_element(By.ID, "ranking-form")
    submitted_from = driver.current_url
    keys = ActionChains(driver).send_keys("2", "3", "1")
    for card in range(3):
        keys.send_keys("h", str(7 - card), "o", "6", "a", "5", Keys.ARROW_RIGHT)
    keys.perform()
    ActionChains(driver).send_keys(Keys.ENTER).perform()
    # The ranking is waited for in the database: the form found at once after Enter can still be
    # the submitted page's, with the submission on its way (and Chromium may answer a question
    # about a form of a page that has gone with an error of its own, not a stale element).
    deadline = time.monotonic() + 30
    stored = Ranking.objects.filter(labeler__username=username)
    while not stored.exists() and time.monotonic() < deadline:
        time.sleep(0.2)
    if stored.exists():  # then the browser is sent on to the next task
        WebDriverWait(driver, 30).until(lambda d: d.current_url != submitted_from)
        driver.find_element(By.ID, "ranking-form")
    check(not csp_violations(driver), "the ranking page runs under the CSP")
    ranking = Ranking.objects.filter(labeler__username=username).first()
    check(
        ranking is not None and len(ranking.order) == 3 and ranking.ratings,
        "a labeler ranked and rated a task with the keyboard only (rank.js was served)",
    )
    driver.get(submitted_from)
    driver.find_element(By.XPATH, "//h1[contains(., 'already submitted')]")
    check(True, "the submitted task's address says so and offers the next one, DEBUG off")
    driver.get(BASE + "/quality/")
    driver.find_element(By.XPATH, "//h1[.='Not for your role']")
    check(not csp_violations(driver), "a labeler on a reviewers' page gets PrefLab's 403 page")
    driver.delete_all_cookies()


def throttled(token: str) -> None:
    for _ in range(200):
        status, body, headers = call("/api/v1/datasets/", token=token)
        if status == 429:
            check(
                int(headers["Retry-After"]) > 0, f"a fast client gets 429 with Retry-After: {body}"
            )
            return
    check(False, "a fast client gets 429")


def pool_over_the_api(staff_token: str, slug: str, username: str, outsider: Any) -> None:
    """The dataset is offered to its pool only: the labeler joins it over the API, and
    someone outside it finds no such dataset."""
    status, body, _ = call(
        f"/api/v1/datasets/{slug}/pool/",
        token=staff_token,
        method="POST",
        body={"labelers": [username]},
    )
    check(status == 200, f"a staff token adds a labeler to the dataset's pool: {body}")
    status, _, _ = call(
        f"/api/v1/datasets/{slug}/next-task/",
        token=Token.objects.create(user=outsider).key,
        method="POST",
        body={},
    )
    check(status == 404, "someone outside the pool gets a 404 on its next task")


def scripted_endpoint(key: str) -> tuple[ThreadingHTTPServer, list[str]]:
    """An OpenAI-compatible chat endpoint on loopback that ranks C > B > A, refuses a call
    without the key, and notes the Authorization header of each call."""
    seen: list[str] = []

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            seen.append(self.headers.get("Authorization", ""))
            ok = self.headers.get("Authorization") == f"Bearer {key}"
            answer = {
                "choices": [{"message": {"role": "assistant", "content": "Ranking: C > B > A"}}],
                "usage": {"prompt_tokens": 50, "completion_tokens": 7},
            }
            data = json.dumps(answer if ok else {"error": "bad key"}).encode()
            self.send_response(200 if ok else 401)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server, seen


def ai_labeler_over_the_api(staff_token: str, slug: str) -> None:
    """An AI labeler ranks the dataset through the worker; its rankings stay out of the
    default export and come with labelers=ai."""
    key = os.environ["PREFLAB_CI_AI_KEY"]  # the worker has it too (.ci/run)
    server, seen = scripted_endpoint(key)
    try:
        status, labeler, _ = call(
            f"/api/v1/datasets/{slug}/ai-labelers/",
            token=staff_token,
            method="POST",
            body={
                "name": "CI judge",
                "base_url": f"http://127.0.0.1:{server.server_address[1]}/v1",
                "model": "scripted",
                "api_key_env": "PREFLAB_CI_AI_KEY",
                "max_retries": 0,
            },
        )
        check(status == 201, f"a staff token adds an AI labeler: {labeler}")
        status, run, _ = call(
            f"/api/v1/ai-labelers/{labeler['id']}/runs/", token=staff_token, method="POST", body={}
        )
        check(status == 202, f"a run is queued (202): {run}")
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and run["status"] in ("queued", "running"):
            time.sleep(2)
            _, run, _ = call(f"/api/v1/ai-runs/{run['id']}/", token=staff_token)
        check(
            run["status"] == "succeeded" and run["judged"] == 3 and run["failed"] == 0,
            f"the worker ran the AI labeler over the 3 prompts: {run}",
        )
        check(seen and all(h == f"Bearer {key}" for h in seen), "the key came from its variable")
    finally:
        server.shutdown()
    path = f"/api/v1/datasets/{slug}/comparisons/"
    _, human, _ = call(path, token=staff_token)
    _, ai, _ = call(path + "?labelers=ai", token=staff_token)
    check(
        str(ai).count("\n") == 9 and not str(human).strip(),
        "its 9 comparisons export with labelers=ai only",
    )


def main() -> int:
    wait_until_healthy()  # after `make release` has migrated
    users = get_user_model().objects
    suffix = uuid.uuid4().hex[:8]
    staff = users.create_user(
        f"ci-staff-{suffix}", password=PASSWORD, is_staff=True, is_superuser=True
    )
    labeler = users.create_user(f"ci-labeler-{suffix}", password=PASSWORD)
    hammer = users.create_user(f"ci-hammer-{suffix}", password=PASSWORD)
    slug = f"ci-prod-{suffix}"
    staff_token = Token.objects.create(user=staff).key
    import_over_the_api(staff_token, slug)
    outsider = users.create_user(f"ci-outsider-{suffix}", password=PASSWORD)
    pool_over_the_api(staff_token, slug, labeler.username, outsider=outsider)
    ai_labeler_over_the_api(staff_token, slug)
    status, body, _ = call("/password-reset/")
    check(
        status == 200 and "Reset your password" in str(body),
        "the password reset page renders, DEBUG off",
    )
    status, _, headers = call("/static/admin/css/base.css")
    check(
        status == 200 and "max-age" in headers.get("Cache-Control", ""), "static files are served"
    )
    driver = chromium()
    try:
        docs_load_offline(driver)
        admin_pages_run_under_the_csp(driver, staff.username, slug)
        rank_with_the_keyboard(driver, labeler.username)
    finally:
        driver.quit()
    throttled(Token.objects.create(user=hammer).key)
    status, body, _ = call("/healthz")
    check(status == 200, f"/healthz is still green: {body}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
