// Keyboard for the ranking page. The form works without this file; it only fills its fields.
(function () {
  "use strict";
  const form = document.getElementById("ranking-form");
  if (!form) return;
  const cards = Array.from(form.querySelectorAll(".card"));
  const keymap = document.getElementById("keymap");
  const secondsField = form.querySelector("[name=seconds_spent]");
  const ratingKeys = { h: "helpful", o: "honest", a: "harmless" };
  let focused = 0;
  let pending = null; // a prefix key waiting for its number: "t", "f", "g" or a rating key
  let placements = []; // card numbers in the order they were placed, for Backspace

  // Time on task counts only while the page is visible.
  let visibleSince = document.visibilityState === "visible" ? performance.now() : null;
  let spent = 0;
  document.addEventListener("visibilitychange", function () {
    if (document.visibilityState === "visible") visibleSince = performance.now();
    else if (visibleSince !== null) { spent += performance.now() - visibleSince; visibleSince = null; }
  });
  function secondsSpent() {
    const now = visibleSince === null ? 0 : performance.now() - visibleSince;
    return ((spent + now) / 1000).toFixed(1);
  }

  function rankInput(card) { return card.querySelector(".rank input"); }
  function rankOf(card) { const value = parseInt(rankInput(card).value, 10); return isNaN(value) ? null : value; }

  // Ranks stay dense (1, 2, 2, 3...) whatever was added or taken out.
  function normalise() {
    const used = Array.from(new Set(cards.map(rankOf).filter(function (r) { return r !== null; }))).sort(function (a, b) { return a - b; });
    cards.forEach(function (card) {
      const rank = rankOf(card);
      rankInput(card).value = rank === null ? "" : used.indexOf(rank) + 1;
      card.classList.toggle("placed", rank !== null);
    });
  }
  function maxRank() { return cards.reduce(function (m, c) { return Math.max(m, rankOf(c) || 0); }, 0); }

  function place(number, tie) {
    const card = cards[number - 1];
    if (!card) return;
    if (rankOf(card) !== null) {
      rankInput(card).value = "";
      placements = placements.filter(function (n) { return n !== number; });
    } else {
      const top = maxRank();
      rankInput(card).value = tie && top > 0 ? top : top + 1;
      placements.push(number);
    }
    normalise();
    setFocus(number - 1);
  }

  function undo() {
    const number = placements.pop();
    if (number === undefined) return;
    rankInput(cards[number - 1]).value = "";
    normalise();
  }

  function clearAll() {
    cards.forEach(function (card) { rankInput(card).value = ""; });
    placements = [];
    normalise();
  }

  function setFocus(index) {
    focused = (index + cards.length) % cards.length;
    cards.forEach(function (card, i) { card.classList.toggle("focused", i === focused); });
  }

  function rate(criterion, value) {
    const box = cards[focused].querySelector('.rating[data-criterion="' + criterion + '"] input[value="' + value + '"]');
    if (box) box.checked = true;
  }

  function toggleFlag(index) {
    const card = cards[focused];
    const boxes = card.querySelectorAll(".flags input[type=checkbox]");
    const box = boxes[index - 1];
    if (!box) return;
    box.checked = !box.checked;
    card.querySelector(".flags").open = true;
    updateFlagCount(card);
  }
  function updateFlagCount(card) {
    const n = card.querySelectorAll(".flags input:checked").length;
    card.querySelector(".flag-count").textContent = n ? "(" + n + ")" : "";
  }

  function setStrength(index) {
    const radios = form.querySelectorAll("[name=strength]");
    if (radios[index - 1]) radios[index - 1].checked = true;
  }

  function setPending(key) {
    pending = key;
    cards.forEach(function (card, i) { card.classList.toggle("pending", key !== null && key !== "t" && i === focused); });
  }

  function submit() {
    secondsField.value = secondsSpent();
    const button = form.querySelector("button[type=submit]");
    if (button.disabled) return;
    button.disabled = true; // one click, one request; the request id makes a retry harmless anyway
    form.submit();
  }

  form.addEventListener("submit", function () {
    secondsField.value = secondsSpent();
    form.querySelector("button[type=submit]").disabled = true;
  });
  form.addEventListener("input", function (event) {
    if (event.target.matches(".rank input")) cards.forEach(function (c) { c.classList.toggle("placed", rankOf(c) !== null); });
    if (event.target.matches(".flags input")) updateFlagCount(event.target.closest(".card"));
  });
  cards.forEach(function (card, i) { card.addEventListener("click", function () { setFocus(i); }); });

  function typing(target) {
    return target.matches("textarea, select, input[type=text], input[type=number], input[type=password]");
  }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey && event.key === "Enter") { event.preventDefault(); submit(); return; }
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    if (event.key === "Escape") {
      if (typing(target)) target.blur();
      setPending(null);
      return;
    }
    if (keymap.open && event.key !== "?") return;
    if (typing(target)) return;
    const key = event.key;
    const digit = /^[1-9]$/.test(key) ? parseInt(key, 10) : null;

    if (pending !== null && digit !== null) {
      event.preventDefault();
      if (pending === "t") place(digit, true);
      else if (pending === "f") toggleFlag(digit);
      else if (pending === "g") setStrength(digit);
      else if (digit <= 7) rate(ratingKeys[pending], digit);
      setPending(null);
      return;
    }
    setPending(null);
    if (digit !== null) { event.preventDefault(); place(digit, false); return; }
    if (key in ratingKeys || key === "t" || key === "f" || key === "g") { event.preventDefault(); setPending(key); return; }
    switch (key) {
      case "ArrowRight": case "k": event.preventDefault(); setFocus(focused + 1); break;
      case "ArrowLeft": case "j": event.preventDefault(); setFocus(focused - 1); break;
      case "Backspace": event.preventDefault(); undo(); break;
      case "c": clearAll(); break;
      case "x": { const box = form.querySelector("[name=all_unacceptable]"); box.checked = !box.checked; break; }
      case "r": event.preventDefault(); form.querySelector("[name=rationale]").focus(); break;
      case "s": event.preventDefault(); document.querySelector(".skip select").focus(); break;
      case "?": event.preventDefault(); if (keymap.open) keymap.close(); else keymap.showModal(); break;
      case "Enter":
        if (target.tagName !== "BUTTON" && target.tagName !== "A" && target.tagName !== "SUMMARY") { event.preventDefault(); submit(); }
        break;
    }
  });

  normalise();
  setFocus(0);
})();
