"""Staff import a file through the admin in a real Chromium and watch its progress page."""

from __future__ import annotations

import json

import pytest

from labeling import tasks
from labeling.models import ImportJob
from labeling.services import imports
from tests.browser import BROWSER_TEST
from tests.factories import PASSWORD, DatasetFactory, UserFactory

pytestmark = BROWSER_TEST


@pytest.fixture
def queued_tasks(monkeypatch):
    """The import tasks sent, kept here for the test to run as the worker would."""
    sent: list[int] = []
    monkeypatch.setattr(
        tasks.import_file, "apply_async", lambda args, **options: sent.append(args[0])
    )
    return sent


@pytest.mark.django_db(transaction=True)
def test_import_page_follows_the_worker_by_itself_then_leads_to_the_dataset(
    browser, live_server, queued_tasks, tmp_path
):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support import expected_conditions
    from selenium.webdriver.support.wait import WebDriverWait

    dataset = DatasetFactory(name="Support chats")
    staff = UserFactory(is_staff=True, is_superuser=True)
    path = tmp_path / "prompts.jsonl"
    path.write_text(
        "".join(
            json.dumps({"id": f"q{n}", "prompt": f"Q{n}?", "completions": ["yes", "no"]}) + "\n"
            for n in range(4)
        )
    )

    browser.get(f"{live_server.url}/admin/login/?next=/admin/labeling/dataset/{dataset.pk}/change/")
    browser.find_element(By.NAME, "username").send_keys(staff.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    browser.find_element(By.XPATH, "//a[contains(@href, '/import/')]").click()
    browser.find_element(By.NAME, "file").send_keys(str(path))
    browser.find_element(By.XPATH, "//input[@value='Import']").click()
    status = browser.find_element(By.ID, "import-status")
    assert "Waiting for a worker" in status.text

    [job_id] = queued_tasks
    imports.run_import_job(job_id=job_id)  # the worker
    # Nobody reloads: the page does, and stops once the import has ended.
    WebDriverWait(browser, 15).until(
        expected_conditions.text_to_be_present_in_element(
            (By.ID, "import-status"), "4 prompts imported, 0 already present"
        )
    )
    assert not browser.find_elements(By.CSS_SELECTOR, "meta[http-equiv=refresh]")
    browser.find_element(By.LINK_TEXT, "Open Support chats").click()
    browser.find_element(By.XPATH, "//a[contains(@href, '/import/')]")
    assert browser.current_url.endswith(f"/admin/labeling/dataset/{dataset.pk}/change/")
    assert ImportJob.objects.get().status == ImportJob.Status.SUCCEEDED
