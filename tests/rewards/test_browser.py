"""Staff start a training run in a real Chromium, with the form as it loads."""

from __future__ import annotations

import pytest

from rewards.models import TrainingRun
from tests.browser import BROWSER_TEST
from tests.factories import PASSWORD, DatasetFactory, UserFactory
from tests.rewards.conftest import ranked_dataset

pytestmark = BROWSER_TEST


@pytest.mark.django_db(transaction=True)
def test_start_training_with_the_defaults_as_shown(browser, live_server, eager_celery):
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    dataset = ranked_dataset(prompts=12)
    DatasetFactory(status="draft")
    staff = UserFactory(is_staff=True, is_superuser=True)

    browser.get(live_server.url + "/admin/login/?next=/rewards/runs/")
    browser.find_element(By.NAME, "username").send_keys(staff.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    browser.find_element(By.XPATH, "//button[.='Start training']").click()
    browser.find_element(By.XPATH, "//h1[contains(., 'Training run #')]")

    run = TrainingRun.objects.get()
    assert list(run.datasets.all()) == [dataset]
    assert run.status == TrainingRun.Status.SUCCEEDED, run.error
    assert "This field is required" not in browser.page_source
