"""In a real Chromium: a task submitted in one tab, then in another, or reached again with Back,
shows that it was submitted and offers the next task on Enter, never a live-looking form."""

from __future__ import annotations

from typing import Any

import pytest

from labeling.models import Assignment, Ranking
from tests.browser import BROWSER_TEST, fresh_browser
from tests.factories import PASSWORD, DatasetFactory, UserFactory, make_prompt

pytestmark = BROWSER_TEST

# Ranks the completions in the order shown and rates each 6 on every criterion, telling the
# page's script through the events that typing and clicking would fire.
FILL_FORM = """
const form = document.getElementById("ranking-form");
form.querySelectorAll("input.rank-input").forEach(function (input, i) {
  input.value = String(i + 1);
});
form.querySelectorAll("input[type=radio][value='6']").forEach(function (radio) {
  radio.checked = true;
});
form.querySelectorAll("input").forEach(function (input) {
  input.dispatchEvent(new Event("input", {bubbles: true}));
  input.dispatchEvent(new Event("change", {bubbles: true}));
});
form.requestSubmit();
"""


@pytest.fixture
def browser() -> Any:
    yield from fresh_browser(implicit_wait=0)  # explicit waits only


def wait(browser: Any) -> Any:
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, 15)


def wait_for_page(browser: Any, url: str, element_id: str) -> Any:
    """Wait until the window shows `url` and its page has the element (the new page's, not the
    one being left), then return it."""
    from selenium.webdriver.common.by import By
    from selenium.webdriver.support import expected_conditions as EC

    wait(browser).until(EC.url_to_be(url))
    return wait(browser).until(EC.presence_of_element_located((By.ID, element_id)))


@pytest.mark.django_db(transaction=True)
def test_a_task_submitted_in_another_tab_or_left_with_back_offers_the_next(browser, live_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    dataset = DatasetFactory(labels_per_prompt=1)
    for _ in range(2):
        make_prompt(dataset, completions=3)
    user = UserFactory()

    browser.get(live_server.url + "/")
    wait(browser).until(lambda d: d.find_elements(By.NAME, "username"))
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    start = wait(browser).until(
        lambda d: d.find_elements(By.XPATH, "//button[.='Start labeling']")
    )[0]
    start.click()
    wait(browser).until(lambda d: Assignment.objects.filter(labeler=user).exists())
    first = Assignment.objects.get(labeler=user)
    first_url = live_server.url + f"/tasks/{first.pk}/"
    wait_for_page(browser, first_url, "ranking-form")
    tab_one = browser.current_window_handle

    # A second tab on the same dataset resumes the same task.
    browser.switch_to.new_window("tab")
    tab_two = browser.current_window_handle
    browser.get(live_server.url + f"/datasets/{dataset.slug}/next/")
    wait_for_page(browser, first_url, "ranking-form")

    browser.switch_to.window(tab_one)
    browser.execute_script(FILL_FORM)
    leased = Assignment.objects.filter(labeler=user, status="leased").exclude(pk=first.pk)
    wait(browser).until(lambda d: leased.exists())
    second = leased.get()
    second_url = live_server.url + f"/tasks/{second.pk}/"
    wait_for_page(browser, second_url, "ranking-form")

    browser.switch_to.window(tab_two)
    browser.execute_script(FILL_FORM)
    gone = wait_for_page(browser, first_url, "task-gone")
    assert "You already submitted this task" in gone.text
    assert (
        "Nothing from that page was stored." in browser.find_element(By.CLASS_NAME, "messages").text
    )
    assert browser.switch_to.active_element.text == "Next task"
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    wait_for_page(browser, second_url, "ranking-form")
    assert Ranking.objects.count() == 1

    # Back from the next task, in the first tab: the submitted task's page is asked for again.
    browser.switch_to.window(tab_one)
    browser.back()
    gone = wait_for_page(browser, first_url, "task-gone")
    assert "You already submitted this task" in gone.text
    assert not browser.find_elements(By.ID, "ranking-form")
