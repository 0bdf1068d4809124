"""The ranking page in a real Chromium: votes for pairs, the order strip with click and drag,
checks before submit, a tie with a strength, drafts, the lease countdown, Markdown or raw."""

from __future__ import annotations

from datetime import timedelta

import pytest
from django.utils import timezone

from labeling.models import Assignment, Comparison, Ranking
from tests.browser import BROWSER_TEST, chromium
from tests.factories import PASSWORD, DatasetFactory, UserFactory, make_prompt

pytestmark = [*BROWSER_TEST, pytest.mark.django_db(transaction=True)]


@pytest.fixture(scope="module")
def driver():
    browser = chromium()
    browser.implicitly_wait(0)
    yield browser
    browser.quit()


@pytest.fixture
def browser(driver, live_server):
    driver.get(live_server.url + "/login/")
    driver.delete_all_cookies()
    driver.execute_script("localStorage.clear()")
    driver.get_log("browser")  # start each test with an empty console
    yield driver
    errors = [
        entry
        for entry in driver.get_log("browser")
        if entry["level"] == "SEVERE" and "favicon.ico" not in entry["message"]
    ]
    assert not errors, errors


def wait(browser, condition, timeout=10):
    from selenium.webdriver.support.ui import WebDriverWait

    return WebDriverWait(browser, timeout).until(condition)


def find(browser, css):
    from selenium.webdriver.common.by import By

    return wait(browser, lambda b: b.find_element(By.CSS_SELECTOR, css))


def keys(browser, *sequence):
    from selenium.webdriver.common.action_chains import ActionChains

    chain = ActionChains(browser)
    for key in sequence:
        chain.send_keys(key)
    chain.perform()


def open_task(browser, live_server, dataset, completions=2, **settings):
    """A labeler logged in on their first task of a new dataset; (user, prompt)."""
    from selenium.webdriver.common.keys import Keys

    dataset = DatasetFactory(labels_per_prompt=1, **settings) if dataset is None else dataset
    prompt = make_prompt(dataset, completions=completions)
    user = UserFactory()
    browser.get(live_server.url + "/")
    find(browser, "[name=username]").send_keys(user.username)
    find(browser, "[name=password]").send_keys(PASSWORD + Keys.ENTER)
    wait(browser, lambda b: "Start labeling" in b.page_source)
    browser.find_element("xpath", "//button[.='Start labeling']").click()
    find(browser, "#ranking-form")
    return user, prompt


def shown(user, prompt):
    assignment = Assignment.objects.get(labeler=user, prompt=prompt)
    return [c.pk for c in assignment.display_completions()]


def rank_values(browser):
    return browser.execute_script(
        "return Array.from(document.querySelectorAll('.rank input')).map(i => i.value)"
    )


def left_the_task(browser):
    wait(browser, lambda b: "/tasks/" not in b.current_url or "Nothing left" in b.page_source)


def test_one_key_decides_a_pair_and_a_shift_digit_before_it_says_by_how_much(browser, live_server):
    user, prompt = open_task(browser, live_server, None, ratings="off", strength="optional")
    ids = shown(user, prompt)
    keys(browser, "2")
    wait(browser, lambda b: Ranking.objects.exists())
    assert Comparison.objects.get().chosen_id == ids[1]
    assert Comparison.objects.get().strength == ""

    from selenium.webdriver.common.keys import Keys

    dataset = prompt.dataset
    second = make_prompt(dataset, completions=2)
    browser.get(live_server.url + f"/datasets/{dataset.slug}/next/")
    browser.find_element("xpath", "//button[.='Start labeling']").click()
    find(browser, "#ranking-form")
    from selenium.webdriver.common.action_chains import ActionChains

    shift_1 = ActionChains(browser).key_down(Keys.SHIFT).send_keys("1").key_up(Keys.SHIFT)
    shift_1.send_keys("1").perform()  # significantly better, then A
    wait(browser, lambda b: Ranking.objects.filter(prompt=second).exists())
    chosen = Comparison.objects.get(ranking__prompt=second)
    assert chosen.strength == "significantly"
    assert chosen.chosen_id == shown(user, second)[0]


def test_a_tie_with_a_strength_cannot_trap_the_labeler(browser, live_server):
    from selenium.webdriver.common.keys import Keys

    user, prompt = open_task(browser, live_server, None, criteria=[])
    keys(browser, "1", "t", "2", "g", "2")  # a tie, then a strength that a tie does not take
    radios = browser.find_elements("css selector", "[name=strength]")
    assert all(radio.get_property("disabled") for radio in radios)
    assert not any(radio.is_selected() for radio in radios)
    assert find(browser, ".tie-note").is_displayed()
    keys(browser, Keys.BACKSPACE)  # untie: the strength is asked again
    assert rank_values(browser) == ["1", ""]
    assert not any(radio.get_property("disabled") for radio in radios)
    keys(browser, "t", "2", Keys.ENTER)
    wait(browser, lambda b: Ranking.objects.exists())
    assert Ranking.objects.get().order == [sorted(shown(user, prompt))]


def test_checks_before_submit_name_each_response_and_send_nothing(browser, live_server):
    from selenium.webdriver.common.keys import Keys

    open_task(browser, live_server, None, completions=3)
    request_id = find(browser, "[name=request_id]").get_attribute("value")
    keys(browser, "2", "h", "5", Keys.ENTER)
    summary = find(browser, "#error-summary")
    wait(browser, lambda b: summary.is_displayed())
    lines = [item.text for item in summary.find_elements("css selector", "li")]
    assert lines == [
        "Response A: Give it a rank. Rate helpful. Rate honest. Rate harmless.",
        "Response B: Rate honest. Rate harmless.",
        "Response C: Give it a rank. Rate helpful. Rate honest. Rate harmless.",
    ]
    card_b = browser.find_elements("css selector", ".card")[1]
    assert [e.text for e in card_b.find_elements("css selector", ".field-errors li")] == [
        "Rate honest.",
        "Rate harmless.",
    ]
    # Nothing went to the server: the same page, the same request id, no ranking.
    assert find(browser, "[name=request_id]").get_attribute("value") == request_id
    assert not Ranking.objects.exists()
    # The first response with a problem has the focus, and the list follows the fixes.
    keys(browser, "o", "3")
    first = "Response A: Give it a rank. Rate helpful. Rate harmless."
    wait(browser, lambda b: summary.find_elements("css selector", "li")[0].text == first)


def test_enter_after_clicking_guidelines_or_flags_submits(browser, live_server):
    from selenium.webdriver.common.keys import Keys

    dataset = DatasetFactory(labels_per_prompt=1, criteria=[], guidelines="Be **kind**.")
    open_task(browser, live_server, dataset, completions=3)
    keys(browser, "1", "2", "3")
    find(browser, ".guidelines summary").click()
    browser.find_elements("css selector", ".flags summary")[0].click()
    keys(browser, Keys.ENTER)
    wait(browser, lambda b: Ranking.objects.exists())


def test_the_order_strip_click_to_rank_and_drag_to_tie(browser, live_server):
    open_task(browser, live_server, None, completions=4, criteria=[])
    strip = find(browser, "#order-strip")
    assert strip.is_displayed()
    places = browser.find_elements("css selector", ".card .place")
    places[2].click()
    places[0].click()
    assert rank_values(browser) == ["2", "", "1", ""]
    groups = strip.find_elements("css selector", ".group")
    assert [group.text for group in groups] == ["3 · C", "1 · A"]
    assert "2 · B" in find(browser, "#order-unranked").text
    # Drag D from "Not ranked" onto C's group: tied first.
    browser.execute_script(
        """
        const data = new DataTransfer();
        const chip = document.querySelector('#order-unranked .chip[data-number="4"]');
        const group = document.querySelector('#order-groups .group');
        chip.dispatchEvent(new DragEvent('dragstart', {bubbles: true, dataTransfer: data}));
        group.dispatchEvent(new DragEvent('dragover', {bubbles: true, dataTransfer: data}));
        group.dispatchEvent(new DragEvent('drop', {bubbles: true, dataTransfer: data}));
        """
    )
    assert rank_values(browser) == ["2", "", "1", "1"]
    assert "tie" in strip.find_elements("css selector", ".group")[0].get_attribute("class")
    # Drag A before everything: a rank of its own, first.
    browser.execute_script(
        """
        const data = new DataTransfer();
        const chip = document.querySelector('#order-groups .chip[data-number="1"]');
        const gap = document.querySelector('#order-groups .gap');
        chip.dispatchEvent(new DragEvent('dragstart', {bubbles: true, dataTransfer: data}));
        gap.dispatchEvent(new DragEvent('drop', {bubbles: true, dataTransfer: data}));
        """
    )
    assert rank_values(browser) == ["1", "", "2", "2"]
    # The keyboard still works beside the mouse.
    keys(browser, "2")
    assert rank_values(browser) == ["1", "3", "2", "2"]


def test_a_draft_survives_a_reload_and_backspace_still_undoes(browser, live_server):
    from selenium.webdriver.common.keys import Keys

    open_task(browser, live_server, None, completions=3)
    keys(browser, "3", "1", "e", "7", "6", "5", "f", "2", "r")
    keys(browser, "because", Keys.ESCAPE)
    assert rank_values(browser) == ["2", "", "1"]
    browser.refresh()
    find(browser, "#ranking-form")
    assert rank_values(browser) == ["2", "", "1"]
    card_a = browser.find_elements("css selector", ".card")[0]
    checked = card_a.find_elements("css selector", ".rating input:checked")
    assert [box.get_attribute("value") for box in checked] == ["7", "6", "5"]
    card_b = browser.find_elements("css selector", ".card")[1]  # `e` moved on after A's three
    assert card_b.find_element("css selector", ".flag-count").text == "(1)"
    assert find(browser, "[name=rationale]").get_attribute("value") == "because"
    keys(browser, Keys.BACKSPACE)
    assert rank_values(browser) == ["", "", "1"]


def test_the_lease_counts_down_and_warns_before_it_ends(browser, live_server):
    user, _ = open_task(browser, live_server, None)
    assert "Lease ends in 29:" in find(browser, "#lease").text or "30:00" in browser.page_source
    assert not find(browser, "#lease-warning").is_displayed()
    Assignment.objects.filter(labeler=user).update(
        expires_at=timezone.now() + timedelta(seconds=90)
    )
    browser.refresh()
    warning = find(browser, "#lease-warning")
    wait(browser, lambda b: warning.is_displayed())
    assert "Your lease ends in 1:" in warning.text


def test_markdown_is_rendered_and_m_shows_the_raw_text(browser, live_server):
    _, prompt = open_task(browser, live_server, None)
    prompt.completions.update(text="**bold** <b>not html</b>")
    browser.refresh()
    rendered = browser.find_elements("css selector", ".card .rendered")[0]
    assert rendered.find_element("css selector", "strong").text == "bold"
    assert "<b>not html</b>" in rendered.text
    keys(browser, "m")
    raw = browser.find_elements("css selector", ".card .raw-text")[0]
    assert raw.is_displayed() and not rendered.is_displayed()
    assert raw.text == "**bold** <b>not html</b>"


def test_keys_rate_on_a_custom_one_to_five_scale_and_ignore_digits_beyond_it(browser, live_server):
    from selenium.webdriver.common.keys import Keys

    from tests.factories import make_criterion

    dataset = DatasetFactory(labels_per_prompt=1, criteria=[], strength="off")
    make_criterion(dataset, "concise", scale_min=1, scale_max=5, min_label="Rambling")
    make_criterion(dataset, "clear", scale_min=1, scale_max=5)
    user, prompt = open_task(browser, live_server, dataset)
    ids = shown(user, prompt)
    # Response A: e then a digit per criterion; 7 is beyond the scale and rates nothing.
    keys(browser, "e", "4", "7")
    # Response B (current after the chain): each criterion by its own letter (o, l).
    keys(browser, "o", "2", "l", "5")
    checked = browser.execute_script(
        "return Array.from(document.querySelectorAll('.rating input:checked'))"
        ".map(i => i.name + '=' + i.value)"
    )
    assert sorted(checked) == sorted(
        [f"concise_{ids[0]}=4", f"concise_{ids[1]}=2", f"clear_{ids[1]}=5"]
    )
    # Back to A for its clear rating, then rank A over B and submit.
    keys(browser, Keys.ARROW_LEFT, "l", "3", "1", "2", Keys.ENTER)
    wait(browser, lambda b: Ranking.objects.exists())
    assert Ranking.objects.get().rating_values == {
        str(ids[0]): {"concise": 4, "clear": 3},
        str(ids[1]): {"concise": 2, "clear": 5},
    }
