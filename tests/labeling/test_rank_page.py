"""The ranking page as the server renders it: what it asks for (ratings and strength required,
optional or off), votes for pairs, errors named by response, Markdown rendered inert."""

from __future__ import annotations

import re
import uuid

import pytest
from django.urls import reverse

from labeling.models import Comparison, Ranking
from labeling.services import leasing
from tests.factories import CompletionFactory, PromptFactory, make_prompt


def lease(dataset, labeler, completions=2, criteria=None, **settings):
    for name, value in settings.items():
        setattr(dataset, name, value)
    dataset.save()
    if criteria is not None:
        dataset.criteria.exclude(key__in=criteria).delete()
    make_prompt(dataset, completions=completions)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    return assignment, [c.pk for c in assignment.display_completions()]


def post(client, assignment, data):
    data = {"request_id": str(uuid.uuid4()), "seconds_spent": "3"} | data
    return client.post(reverse("labeling:submit", args=[assignment.pk]), data)


def summary_lines(page: str) -> list[str]:
    block = re.search(r'id="error-summary".*?<ul>(.*?)</ul>', page, re.S).group(1)
    return re.findall(r"<li>(.*?)</li>", block)


def test_missing_ratings_give_one_line_per_response_naming_it(client, labeler, dataset):
    assignment, shown = lease(dataset, labeler, completions=3)
    client.force_login(labeler)
    ranks = {f"rank_{cid}": str(i + 1) for i, cid in enumerate(shown)}
    response = post(client, assignment, ranks | {f"helpful_{shown[1]}": "5"})
    assert response.status_code == 400
    lines = summary_lines(response.content.decode())
    assert lines == [
        "Response A: Rate helpful. Rate honest. Rate harmless.",
        "Response B: Rate honest. Rate harmless.",
        "Response C: Rate helpful. Rate honest. Rate harmless.",
    ]
    assert not Ranking.objects.exists()


def test_a_tied_pair_with_a_stale_strength_is_stored_as_a_tie(client, labeler, dataset):
    assignment, (a, b) = lease(dataset, labeler, criteria=[])
    client.force_login(labeler)
    response = post(client, assignment, {f"rank_{a}": "1", f"rank_{b}": "1", "strength": "better"})
    assert response.status_code == 302
    assert Ranking.objects.get().order == [sorted([a, b])]
    assert not Comparison.objects.exists()


def test_an_untied_pair_needs_its_strength_when_required(client, labeler, dataset):
    assignment, (a, b) = lease(dataset, labeler, criteria=[])
    client.force_login(labeler)
    response = post(client, assignment, {f"rank_{a}": "1", f"rank_{b}": "2"})
    assert response.status_code == 400
    assert summary_lines(response.content.decode()) == [
        "How much better is your first choice?: Say how much better your first choice is."
    ]


@pytest.mark.parametrize(("vote", "best"), [("1", 0), ("2", 1)])
def test_a_vote_button_decides_a_pair_without_scripts(client, labeler, dataset, vote, best):
    assignment, shown = lease(dataset, labeler, ratings="off", strength="optional")
    client.force_login(labeler)
    page = client.get(reverse("labeling:rank", args=[assignment.pk])).content.decode()
    assert 'data-votes="1"' in page and 'name="vote" value="tie"' in page
    assert 'name="helpful_' not in page
    assert post(client, assignment, {"vote": vote}).status_code == 302
    comparison = Comparison.objects.get()
    assert (comparison.chosen_id, comparison.strength) == (shown[best], "")


def test_a_tie_vote_stores_a_tie(client, labeler, dataset):
    assignment, shown = lease(dataset, labeler, ratings="optional", strength="optional")
    client.force_login(labeler)
    response = post(client, assignment, {"vote": "tie", f"honest_{shown[0]}": "3"})
    assert response.status_code == 302
    ranking = Ranking.objects.get()
    assert ranking.order == [sorted(shown)]
    assert ranking.rating_values == {str(shown[0]): {"honest": 3}}


def test_votes_are_off_when_ratings_or_strength_are_required(client, labeler, dataset):
    assignment, _ = lease(dataset, labeler, ratings="off", strength="required")
    client.force_login(labeler)
    page = client.get(reverse("labeling:rank", args=[assignment.pk])).content.decode()
    assert 'data-votes="0"' in page and 'name="vote"' not in page
    response = post(client, assignment, {"vote": "1"})
    assert response.status_code == 400
    assert "Response A: Give it a rank." in summary_lines(response.content.decode())


def test_strength_off_asks_none(client, labeler, dataset):
    assignment, (a, b) = lease(dataset, labeler, ratings="off", strength="off")
    client.force_login(labeler)
    page = client.get(reverse("labeling:rank", args=[assignment.pk])).content.decode()
    assert 'name="strength"' not in page
    assert post(client, assignment, {f"rank_{a}": "2", f"rank_{b}": "1"}).status_code == 302


def test_completions_render_markdown_inert_with_the_raw_text_beside(client, labeler, dataset):
    prompt = PromptFactory(dataset=dataset, messages=[{"role": "user", "content": "Use **bold**"}])
    texts = [
        "# Title\n\n**bold** and *em*\n\n- one\n- two\n\n```\nx = 1 < 2\n```\n\n"
        "| a | b |\n|---|---|\n| 1 | 2 |",
        '<script>alert("x")</script> <img src=x onerror=alert(1)> <a href="https://e.org">raw</a>',
        "[click](javascript:alert(1)) [site](https://example.org) ![px](https://t.example/p.png)",
    ]
    for position, text in enumerate(texts):
        CompletionFactory(prompt=prompt, position=position, text=text)
    assignment = leasing.lease_next_assignment(dataset=dataset, labeler=labeler)
    client.force_login(labeler)
    page = client.get(reverse("labeling:rank", args=[assignment.pk])).content.decode()
    assert "<h1>Title</h1>" in page and "<strong>bold</strong>" in page
    assert "<li>one</li>" in page and "<td>1</td>" in page
    assert "<pre><code>x = 1 &lt; 2\n</code></pre>" in page
    # Raw HTML from a model is text, in the rendered view as in the raw one.
    assert "<script>alert" not in page and "<img" not in page and 'href="javascript:' not in page
    assert '<a href="https://e.org">' not in page
    assert "&lt;a href=&quot;https://e.org&quot;&gt;raw&lt;/a&gt;" in page
    link = '<a href="https://example.org" target="_blank" rel="noopener nofollow noreferrer">'
    assert link + "site</a>" in page
    assert '<div class="text raw-text">Use **bold**</div>' in page
    assert "<strong>bold</strong>" in page.split('class="conversation"')[1]


def test_a_vote_keeps_every_flag_and_the_rationale(client, labeler, dataset):
    assignment, (a, _b) = lease(dataset, labeler, ratings="off", strength="optional")
    client.force_login(labeler)
    flags = {f"flags_{a}": ["hallucination", "harmful_advice"], "rationale": "B is safer"}
    assert post(client, assignment, {"vote": "2", **flags}).status_code == 302
    ranking = Ranking.objects.get()
    assert ranking.flags == {str(a): ["hallucination", "harmful_advice"]}
    assert ranking.rationale == "B is safer"
