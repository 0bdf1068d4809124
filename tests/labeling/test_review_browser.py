"""A reviewer settles prompts of the review queue in a real Chromium with the keyboard only."""

from __future__ import annotations

import pytest

from labeling.models import Adjudication, Role
from tests.browser import BROWSER_TEST
from tests.factories import PASSWORD, DatasetFactory, UserFactory, make_prompt
from tests.labeling.quality_data import rank, report_of

pytestmark = [*BROWSER_TEST, pytest.mark.django_db(transaction=True)]


def test_reviewer_adjudicates_two_prompts_with_the_keyboard(browser, live_server):
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from selenium.webdriver.common.keys import Keys
    from selenium.webdriver.support.ui import WebDriverWait

    dataset = DatasetFactory(labels_per_prompt=2, criteria=[])
    ann, bob = UserFactory(), UserFactory()
    split = make_prompt(dataset, 3)  # agreement 0: first in the queue
    rank(split, ann, "c0 > c1 > c2")
    rank(split, bob, "c2 > c1 > c0")
    thin = make_prompt(dataset, 2)  # ann c0 > c1, bob ties: second
    rank(thin, ann, "c0 > c1")
    rank(thin, bob, "c0 = c1")
    report_of(dataset)
    reviewer = UserFactory(role=Role.REVIEWER)

    browser.get(live_server.url + f"/review/{dataset.slug}/")
    browser.find_element(By.NAME, "username").send_keys(reviewer.username)
    browser.find_element(By.NAME, "password").send_keys(PASSWORD + Keys.ENTER)
    browser.find_element(By.LINK_TEXT, "Review the first").send_keys(Keys.ENTER)
    browser.find_element(By.ID, "review-form")
    assert f"/prompts/{split.pk}/" in browser.current_url
    # 2 best, then 3 tied with it, Backspace undoes the tie, 3 then 1 below; a note; Enter.
    keys = ActionChains(browser)
    keys.send_keys("2", "t", "3", Keys.BACKSPACE, "3", "1", "n", "middle one is right")
    keys.send_keys(Keys.ESCAPE, Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(lambda b: f"/prompts/{thin.pk}/" in b.current_url)
    settled = Adjudication.objects.get(prompt=split)
    names = dict(split.completions.values_list("pk", "external_id"))
    assert [[names[pk] for pk in group] for group in settled.order] == [["c1"], ["c2"], ["c0"]]
    assert settled.note == "middle one is right" and settled.overturned

    # The next prompt: "a" takes the consensus (c0 > c1), "g" makes it gold too, Enter saves.
    browser.find_element(By.ID, "review-form")
    ActionChains(browser).send_keys("a", "g", Keys.ENTER).perform()
    WebDriverWait(browser, 10).until(lambda b: "Nothing waits for review" in b.page_source)
    accepted = Adjudication.objects.get(prompt=thin)
    assert not accepted.overturned and accepted.promoted_to_gold
    thin.refresh_from_db()
    assert thin.is_gold and thin.gold_order == [["c0"], ["c1"]]
    errors = [e for e in browser.get_log("browser") if e["level"] == "SEVERE"]
    assert not [e for e in errors if "favicon" not in e["message"]], errors
