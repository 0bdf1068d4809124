// The review page's keyboard, like the ranking page's: numbers place completions in order, "t"
// then a number ties, Backspace undoes, "a" takes the consensus, "g" ticks gold, "n" the note,
// Enter saves (and the server opens the next prompt). The form works without this file; this
// only fills its rank inputs, which are the state.
(function () {
  "use strict";
  const form = document.getElementById("review-form");
  if (!form) return;
  const cards = Array.from(form.querySelectorAll(".card"));
  const line = document.getElementById("review-order");
  const keymap = document.getElementById("keymap");
  const consensusNode = document.getElementById("consensus-order");
  const consensus = consensusNode ? JSON.parse(consensusNode.textContent) : [];
  let placements = []; // card numbers in the order they were placed, for Backspace
  let pending = null; // "t" waiting for its number
  let saving = false;

  function input(number) { return cards[number - 1].querySelector(".rank input"); }
  function rankOf(number) { const value = parseInt(input(number).value, 10); return isNaN(value) ? null : value; }
  function numbers() { return cards.map(function (card) { return parseInt(card.dataset.number, 10); }); }

  // Tie groups of card numbers, best first, from the ranks.
  function groups() {
    const ranks = Array.from(new Set(numbers().map(rankOf).filter(function (r) { return r !== null; }))).sort(function (a, b) { return a - b; });
    return ranks.map(function (rank) { return numbers().filter(function (n) { return rankOf(n) === rank; }); });
  }
  function write(order) {
    numbers().forEach(function (n) { input(n).value = ""; });
    order.forEach(function (group, index) { group.forEach(function (n) { input(n).value = index + 1; }); });
    placements = placements.filter(function (n) { return rankOf(n) !== null; });
    show();
  }
  function show() {
    cards.forEach(function (card) { card.classList.toggle("placed", rankOf(parseInt(card.dataset.number, 10)) !== null); });
    const order = groups();
    line.hidden = false;
    line.textContent = order.length ? "Order: " + order.map(function (g) { return g.join(" = "); }).join(" > ") : "Order: none yet";
  }

  function place(number, tie) {
    if (number > cards.length) return;
    const order = groups().map(function (g) { return g.filter(function (n) { return n !== number; }); }).filter(function (g) { return g.length; });
    if (rankOf(number) !== null) {
      placements = placements.filter(function (n) { return n !== number; });
    } else {
      if (tie && order.length) order[order.length - 1].push(number);
      else order.push([number]);
      placements.push(number);
    }
    write(order);
  }
  function undo() {
    const number = placements.pop();
    if (number === undefined) return;
    input(number).value = "";
    write(groups());
  }
  function takeConsensus() {
    if (!consensus.length) return;
    placements = consensus.flat();
    write(consensus);
  }
  function save() {
    if (saving) return;
    saving = true;
    form.requestSubmit(document.getElementById("save-button"));
  }
  form.addEventListener("submit", function () { saving = true; });
  form.addEventListener("input", function () { show(); });

  function typing(target) { return target.matches("textarea, input[type=text], input[type=number]"); }

  document.addEventListener("keydown", function (event) {
    if (event.ctrlKey && event.key === "Enter") { event.preventDefault(); save(); return; }
    if (event.altKey || event.ctrlKey || event.metaKey) return;
    const target = event.target;
    if (event.key === "Escape") { if (typing(target)) target.blur(); pending = null; return; }
    if (keymap.open && event.key !== "?") return;
    if (typing(target)) return;
    const key = event.key;
    const digit = /^[1-9]$/.test(key) ? parseInt(key, 10) : null;
    if (digit !== null) { event.preventDefault(); place(digit, pending === "t"); pending = null; return; }
    pending = null;
    switch (key) {
      case "t": event.preventDefault(); pending = "t"; break;
      case "Backspace": event.preventDefault(); undo(); break;
      case "a": event.preventDefault(); takeConsensus(); break;
      case "g": { event.preventDefault(); const box = form.querySelector("[name=gold]"); box.checked = !box.checked; break; }
      case "n": event.preventDefault(); form.querySelector("[name=note]").focus(); break;
      case "?": event.preventDefault(); if (keymap.open) keymap.close(); else keymap.showModal(); break;
      case "Enter":
        if (target.tagName !== "BUTTON" && target.tagName !== "A" && target.tagName !== "SUMMARY") { event.preventDefault(); save(); }
        break;
    }
  });

  // Back after a save must not show this form as if it were still open.
  window.addEventListener("pageshow", function (event) { if (event.persisted) window.location.reload(); });
  groups().flat().forEach(function (n) { placements.push(n); });
  show();
})();
