"""A labeler ranks a prompt in a real Chromium using only the keyboard."""

from __future__ import annotations

import os

import pytest

from labeling.models import Comparison, Ranking, display_order
from tests.browser import BROWSER_TEST
from tests.factories import PASSWORD, DatasetFactory, UserFactory, make_prompt

pytestmark = BROWSER_TEST


def screenshot(browser, name: str) -> None:
    folder = os.environ.get("PREFLAB_SCREENSHOTS")
    if folder:
        browser.save_screenshot(os.path.join(folder, f"{name}.png"))


@pytest.mark.django_db(transaction=True)
def test_labeler_ranks_three_completions_with_the_keyboard_only(browser, live_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys

    dataset = DatasetFactory(labels_per_prompt=1)
    prompt = make_prompt(dataset, completions=3)
    user = UserFactory()
    shown = display_order(list(prompt.completions.all()), labeler_id=user.pk, prompt_id=prompt.pk)

    browser.get(live_server.url + "/")
    browser.find_element(By.NAME, "username").send_keys(user.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    browser.find_element(By.XPATH, "//button[.='Start labeling']").send_keys(Keys.ENTER)
    browser.find_element(By.ID, "ranking-form")
    keys = ActionChains(browser)
    # Rank: card 2 best, then card 3 tied with nothing, then card 1.
    keys.send_keys("2", "3", "1")
    # Rate each card: h (helpful), o (honest), a (harmless), then move right.
    for card in range(3):
        keys.send_keys("h", str(7 - card), "o", "6", "a", "5")
        keys.send_keys(Keys.ARROW_RIGHT)
    keys.send_keys(Keys.ARROW_LEFT, "f", "2")  # the third card: a hallucination
    keys.perform()
    screenshot(browser, "rank-page")
    ActionChains(browser).send_keys(Keys.ENTER).perform()
    browser.find_element(By.XPATH, "//h1[contains(., 'Nothing left to rank')]")

    ranking = Ranking.objects.get()
    assert ranking.order == [[shown[1].pk], [shown[2].pk], [shown[0].pk]]
    assert ranking.rating_values[str(shown[0].pk)] == {"helpful": 7, "honest": 6, "harmless": 5}
    assert ranking.rating_values[str(shown[2].pk)]["helpful"] == 5
    assert ranking.flags == {str(shown[2].pk): ["hallucination"]}
    assert ranking.seconds_spent > 0
    assert Comparison.objects.count() == 3
