// The ranking page: keyboard, mouse (click to rank, drag to reorder), the current order strip,
// checks before submit, a draft that survives a reload, and the lease countdown. The form works
// without this file; this only fills its fields. The fields themselves are the state: the rank
// inputs hold the order, the radios and boxes the rest.
(function () {
  "use strict";
  const form = document.getElementById("ranking-form");
  if (!form) return;
  form.noValidate = true; // our checks list every problem at once, beside its field
  const cards = Array.from(form.querySelectorAll(".card"));
  const keymap = document.getElementById("keymap");
  const secondsField = form.querySelector("[name=seconds_spent]");
  const strip = document.getElementById("order-strip");
  const summary = document.getElementById("error-summary");
  const votes = form.dataset.votes === "1";
  // The dataset's criteria, in order: key, label, scale (min, max) and shortcut letter.
  const criteriaData = document.getElementById("rating-criteria");
  const scales = criteriaData ? JSON.parse(criteriaData.textContent) : [];
  const criteria = scales.map(function (c) { return c.key; });
  const ratingsRequired = form.dataset.ratings === "required";
  const strengthAsked = form.dataset.strength; // "required", "optional" or "off"
  const ratingKeys = {}; // shortcut letter -> criterion key
  scales.forEach(function (c) { if (c.shortcut) ratingKeys[c.shortcut] = c.key; });
  const draftKey = form.dataset.draft;
  let focused = 0;
  let pending = null; // a prefix waiting for its number: "t", "f", "g", "e" or a rating key
  let chain = 0; // after "e": which criterion the next digit rates
  let placements = []; // card numbers in the order they were placed, for Backspace
  let submitting = false;

  // --- Time on task counts only while the page is visible. ---
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

  // --- The order, read from and written to the rank inputs. ---
  function rankInput(card) { return card.querySelector(".rank input"); }
  function rankOf(card) { const value = parseInt(rankInput(card).value, 10); return isNaN(value) ? null : value; }
  function numberOf(card) { return parseInt(card.dataset.number, 10); }
  function letterOf(number) { return cards[number - 1].dataset.letter; }

  // Tie groups of card numbers, best first, from the ranks (dense or not).
  function groups() {
    const ranks = Array.from(new Set(cards.map(rankOf).filter(function (r) { return r !== null; }))).sort(function (a, b) { return a - b; });
    return ranks.map(function (rank) {
      return cards.filter(function (card) { return rankOf(card) === rank; }).map(numberOf);
    });
  }
  function writeGroups(order) {
    cards.forEach(function (card) { rankInput(card).value = ""; });
    order.forEach(function (group, index) {
      group.forEach(function (number) { rankInput(cards[number - 1]).value = index + 1; });
    });
    placements = placements.filter(function (n) { return rankOf(cards[n - 1]) !== null; });
    changed();
  }
  function unplaced() { return cards.filter(function (card) { return rankOf(card) === null; }).map(numberOf); }

  function place(number, tie) {
    const card = cards[number - 1];
    if (!card) return;
    const order = groups().map(function (group) { return group.filter(function (n) { return n !== number; }); }).filter(function (g) { return g.length; });
    if (rankOf(card) !== null) {
      placements = placements.filter(function (n) { return n !== number; });
    } else {
      if (tie && order.length) order[order.length - 1].push(number);
      else order.push([number]);
      placements.push(number);
    }
    writeGroups(order);
    setFocus(number - 1);
  }

  // Move a card into a tie group (`into` its index), into a new group at `before`, or out.
  function move(number, target) {
    const order = groups().map(function (group) { return group.filter(function (n) { return n !== number; }); });
    if (target.into !== undefined) order[target.into].push(number);
    else if (target.before !== undefined) order.splice(target.before, 0, [number]);
    if (target.out) placements = placements.filter(function (n) { return n !== number; });
    else if (placements.indexOf(number) < 0) placements.push(number);
    writeGroups(order.filter(function (g) { return g.length; }));
  }

  function undo() {
    const number = placements.pop();
    if (number === undefined) return;
    rankInput(cards[number - 1]).value = "";
    writeGroups(groups());
  }

  function clearAll() {
    placements = [];
    writeGroups([]);
  }

  function setFocus(index) {
    focused = (index + cards.length) % cards.length;
    cards.forEach(function (card, i) { card.classList.toggle("focused", i === focused); });
  }

  // --- Ratings, flags, strength. ---
  // A digit key's value on a criterion's scale: itself, or 10 for 0 on a scale of 1 to 10.
  function scaled(criterion, digit) {
    const scale = scales[criteria.indexOf(criterion)];
    const value = digit === 0 && scale.min > 0 && scale.max === 10 ? 10 : digit;
    return value >= scale.min && value <= scale.max ? value : null;
  }
  function rate(criterion, digit) {
    const value = scaled(criterion, digit);
    if (value === null) return;
    const box = cards[focused].querySelector('.rating[data-criterion="' + criterion + '"] input[value="' + value + '"]');
    if (box) { box.checked = true; changed(); }
  }

  function toggleFlag(index) {
    const card = cards[focused];
    const box = card.querySelectorAll(".flags input[type=checkbox]")[index - 1];
    if (!box) return;
    box.checked = !box.checked;
    card.querySelector(".flags").open = true;
    changed();
  }

  function strengthRadios() { return Array.from(form.querySelectorAll("[name=strength]")); }
  function setStrength(index) {
    const radio = strengthRadios()[index - 1];
    if (radio && !radio.disabled) { radio.checked = true; changed(); }
  }
  function strengthChosen() { return strengthRadios().some(function (r) { return r.checked; }); }

  // A tie has no strength: its radios go blank and still while the pair is tied.
  function updateStrength() {
    const radios = strengthRadios();
    if (!radios.length) return;
    const tied = groups().length === 1 && unplaced().length === 0;
    radios.forEach(function (radio) { radio.disabled = tied; if (tied) radio.checked = false; });
    form.querySelector(".strength .tie-note").hidden = !tied;
  }

  function setPending(key) {
    pending = key;
    cards.forEach(function (card, i) { card.classList.toggle("pending", key !== null && key !== "t" && key !== "g" && i === focused); });
  }

  // --- What the page shows of the state. ---
  function changed() {
    cards.forEach(function (card) {
      card.classList.toggle("placed", rankOf(card) !== null);
      const place = card.querySelector(".place");
      if (place) place.textContent = rankOf(card) === null ? "Rank next" : "Take out";
      const flagged = card.querySelectorAll(".flags input:checked").length;
      card.querySelector(".flag-count").textContent = flagged ? "(" + flagged + ")" : "";
    });
    updateStrength();
    renderStrip();
    if (!summary.hidden && summary.dataset.client === "1") check(false);
    scheduleDraft();
  }

  function chip(number) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "chip";
    button.draggable = true;
    button.dataset.number = number;
    button.textContent = number + " · " + letterOf(number);
    button.title = "Drag to reorder; click to go to response " + letterOf(number);
    return button;
  }
  function dropZone(className, target) {
    const zone = document.createElement(className === "gap" ? "li" : "div");
    zone.className = "drop " + className;
    zone.dataset.target = JSON.stringify(target);
    return zone;
  }
  function renderStrip() {
    if (!strip) return;
    strip.hidden = false;
    const list = document.getElementById("order-groups");
    const rest = document.getElementById("order-unranked");
    list.replaceChildren();
    rest.replaceChildren();
    const order = groups();
    order.forEach(function (group, index) {
      list.appendChild(dropZone("gap", { before: index }));
      const item = document.createElement("li");
      item.className = "group drop" + (group.length > 1 ? " tie" : "");
      item.dataset.target = JSON.stringify({ into: index });
      item.dataset.rank = index + 1;
      group.forEach(function (number, i) {
        if (i) { const eq = document.createElement("span"); eq.className = "eq"; eq.textContent = "="; item.appendChild(eq); }
        item.appendChild(chip(number));
      });
      list.appendChild(item);
    });
    list.appendChild(dropZone("gap", { before: order.length }));
    unplaced().forEach(function (number) { rest.appendChild(chip(number)); });
    if (!unplaced().length) rest.textContent = "none";
    rest.dataset.target = JSON.stringify({ out: true });
    rest.classList.add("drop");
  }

  // Drag a chip in the strip: onto a group to tie with it, between groups for a rank of its
  // own, onto "Not ranked" to take it out.
  if (strip) {
    strip.addEventListener("dragstart", function (event) {
      const source = event.target.closest(".chip");
      if (!source) return;
      event.dataTransfer.setData("text/plain", source.dataset.number);
      event.dataTransfer.effectAllowed = "move";
    });
    strip.addEventListener("dragover", function (event) {
      if (event.target.closest(".drop")) event.preventDefault();
    });
    strip.addEventListener("drop", function (event) {
      const zone = event.target.closest(".drop");
      const number = parseInt(event.dataTransfer.getData("text/plain"), 10);
      if (!zone || isNaN(number)) return;
      event.preventDefault();
      move(number, JSON.parse(zone.dataset.target));
    });
    strip.addEventListener("click", function (event) {
      const source = event.target.closest(".chip");
      if (!source) return;
      const card = cards[parseInt(source.dataset.number, 10) - 1];
      setFocus(cards.indexOf(card));
      card.scrollIntoView({ block: "nearest" });
    });
  }

  // --- Checks before submit, shown beside their fields and once per response on top. ---
  function problems() {
    const found = [];
    cards.forEach(function (card) {
      const missing = [];
      if (rankOf(card) === null) missing.push({ field: "rank", text: "Give it a rank." });
      if (ratingsRequired) {
        criteria.forEach(function (criterion) {
          const label = scales[criteria.indexOf(criterion)].label.toLowerCase();
          if (!card.querySelector('.rating[data-criterion="' + criterion + '"] input:checked')) missing.push({ field: criterion, text: "Rate " + label + "." });
        });
      }
      if (missing.length) found.push({ card: card, missing: missing });
    });
    const untiedPair = cards.length === 2 && groups().length === 2;
    if (strengthAsked === "required" && untiedPair && !strengthChosen()) found.push({ strength: "Say how much better your first choice is." });
    return found;
  }
  function check(focusFirst) {
    // Every message beside a field is this check's own from now on (the server's included:
    // they are about the values as they were sent).
    form.querySelectorAll(".field-errors li").forEach(function (item) { item.remove(); });
    cards.forEach(function (card) { card.classList.remove("has-errors"); });
    const found = problems();
    const lines = [];
    found.forEach(function (problem) {
      if (problem.strength) {
        addError(form.querySelector(".strength .field-errors"), problem.strength);
        lines.push("How much better is your first choice? " + problem.strength);
        return;
      }
      problem.card.classList.add("has-errors");
      problem.missing.forEach(function (item) {
        const list = item.field === "rank" ? problem.card.querySelector('.field-errors[data-for="rank"]') : problem.card.querySelector('.rating[data-criterion="' + item.field + '"] .field-errors');
        addError(list, item.text);
      });
      lines.push("Response " + problem.card.dataset.letter + ": " + problem.missing.map(function (m) { return m.text; }).join(" "));
    });
    const list = summary.querySelector("ul");
    list.replaceChildren();
    lines.forEach(function (line) { const item = document.createElement("li"); item.textContent = line; list.appendChild(item); });
    summary.hidden = !lines.length;
    summary.dataset.client = "1";
    if (lines.length && focusFirst) {
      const first = found[0].card;
      if (first) { setFocus(cards.indexOf(first)); first.scrollIntoView({ block: "nearest" }); }
      summary.scrollIntoView({ block: "nearest" });
    }
    return !lines.length;
  }
  function addError(list, text) {
    if (!list) return;
    const item = document.createElement("li");
    item.className = "client-error";
    item.textContent = text;
    list.appendChild(item);
  }

  function submit() {
    if (submitting || !check(true)) return;
    submitting = true;
    secondsField.value = secondsSpent();
    form.querySelectorAll("button[type=submit]").forEach(function (button) { button.disabled = true; });
    clearDraft();
    form.submit(); // one request; the request id makes a retry harmless anyway
  }
  function vote(choice) {
    const order = choice === "tie" ? [[1, 2]] : choice === "1" ? [[1], [2]] : [[2], [1]];
    placements = order.flat();
    writeGroups(order);
    submit();
  }

  form.addEventListener("submit", function (event) {
    // A click on Submit or a vote button (Enter and the vote keys call submit() directly).
    event.preventDefault();
    const submitter = event.submitter;
    if (submitter && submitter.name === "vote") vote(submitter.value);
    else submit();
  });
  form.addEventListener("input", function (event) {
    if (event.target.matches(".rank input")) placements = placements.filter(function (n) { return rankOf(cards[n - 1]) !== null; });
    changed();
  });
  cards.forEach(function (card, i) {
    card.addEventListener("click", function () { setFocus(i); });
    const button = card.querySelector(".place");
    if (!votes && button) {
      button.hidden = false;
      button.addEventListener("click", function (event) { place(i + 1, event.shiftKey); });
    }
  });
  // After a mouse click on a panel's summary or a button, Enter must submit, not click again.
  document.addEventListener("click", function (event) {
    const target = event.target.closest("summary, button[type=button]");
    if (target && event.detail > 0) target.blur();
  });

  // --- Markdown or raw text. ---
  const rawToggle = document.getElementById("raw-toggle");
  function showRaw(raw) {
    document.body.classList.toggle("show-raw", raw);
    rawToggle.textContent = raw ? "Show formatted text " : "Show raw text ";
    const key = document.createElement("kbd"); key.textContent = "m"; rawToggle.appendChild(key);
    try { localStorage.setItem("preflab-raw", raw ? "1" : ""); } catch (e) { /* private mode */ }
  }
  rawToggle.hidden = false;
  rawToggle.addEventListener("click", function () { showRaw(!document.body.classList.contains("show-raw")); });

  // --- A draft in this browser, per task, until it is submitted. Written a moment after the
  // last change (a burst of keys writes once), and at once when the page is left or hidden.
  let draftTimer = null;
  function scheduleDraft() {
    if (draftTimer === null) draftTimer = setTimeout(saveDraft, 250);
  }
  window.addEventListener("pagehide", function () { saveDraft(); });
  document.addEventListener("visibilitychange", function () { if (document.visibilityState === "hidden") saveDraft(); });
  function saveDraft() {
    if (draftTimer !== null) { clearTimeout(draftTimer); draftTimer = null; }
    if (!draftKey || submitting) return;
    const draft = { saved: Date.now(), placements: placements, fields: {} };
    form.querySelectorAll("input, textarea").forEach(function (field) {
      if (field.type === "hidden" || !field.name) return;
      if (field.type === "radio" || field.type === "checkbox") { if (field.checked) draft.fields[field.name + "=" + field.value] = true; }
      else if (field.value) draft.fields[field.name] = field.value;
    });
    try { localStorage.setItem(draftKey, JSON.stringify(draft)); } catch (e) { /* storage full or off */ }
  }
  function restoreDraft() {
    let draft = null;
    try { draft = JSON.parse(localStorage.getItem(draftKey) || "null"); } catch (e) { draft = null; }
    if (!draft || !draft.fields) return false;
    form.querySelectorAll("input, textarea").forEach(function (field) {
      if (field.type === "hidden" || !field.name) return;
      if (field.type === "radio" || field.type === "checkbox") field.checked = !!draft.fields[field.name + "=" + field.value];
      else if (draft.fields[field.name] !== undefined) field.value = draft.fields[field.name];
    });
    placements = Array.isArray(draft.placements) ? draft.placements : [];
    return true;
  }
  function clearDraft() { try { localStorage.removeItem(draftKey); } catch (e) { /* off */ } }
  function pruneDrafts() {
    try {
      for (let i = localStorage.length - 1; i >= 0; i--) {
        const key = localStorage.key(i);
        if (!key || key.indexOf("preflab-draft-") !== 0 || key === draftKey) continue;
        const draft = JSON.parse(localStorage.getItem(key) || "{}");
        if (!draft.saved || Date.now() - draft.saved > 86400000) localStorage.removeItem(key);
      }
    } catch (e) { /* off */ }
  }

  // --- The lease: a countdown, a warning two minutes before it ends, and after. ---
  const lease = document.getElementById("lease");
  const warning = document.getElementById("lease-warning");
  const leaseEnds = performance.now() + parseInt(lease.dataset.seconds, 10) * 1000;
  function clock(seconds) {
    const m = Math.floor(seconds / 60), s = seconds % 60;
    return m + ":" + (s < 10 ? "0" : "") + s;
  }
  function tick() {
    const left = Math.max(0, Math.round((leaseEnds - performance.now()) / 1000));
    lease.textContent = left > 0 ? "Lease ends in " + clock(left) : "Lease ended";
    lease.classList.toggle("ending", left <= 120);
    if (left === 0) {
      warning.textContent = "Your lease on this task has ended. Submitting still works unless the task went to another labeler; your draft stays in this browser.";
      warning.hidden = false;
      return;
    }
    if (left <= 120) {
      warning.textContent = "Your lease ends in " + clock(left) + ": submit soon, or the task may go to another labeler.";
      warning.hidden = false;
    }
    setTimeout(tick, 1000);
  }

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
    // Shift+digit by the key's place, whatever the keyboard layout prints on it.
    const shifted = event.shiftKey && /^Digit[1-9]$/.test(event.code) ? parseInt(event.code.slice(5), 10) : null;
    if (shifted !== null) { event.preventDefault(); setPending(null); setStrength(shifted); return; }
    const rating = pending === "e" || pending in ratingKeys;
    const digit = (rating ? /^[0-9]$/ : /^[1-9]$/).test(key) ? parseInt(key, 10) : null;

    if (pending !== null && digit !== null) {
      event.preventDefault();
      if (pending === "t") place(digit, true);
      else if (pending === "f") toggleFlag(digit);
      else if (pending === "g") setStrength(digit);
      else if (pending === "e") {
        rate(criteria[chain], digit);
        chain += 1;
        if (chain < criteria.length) return; // still waiting for the next criterion's digit
        setPending(null);
        setFocus(focused + 1);
        return;
      } else rate(ratingKeys[pending], digit);
      setPending(null);
      return;
    }
    setPending(null);
    if (votes && (key === "1" || key === "2" || key === "t")) { event.preventDefault(); vote(key === "t" ? "tie" : key); return; }
    if (digit !== null) { event.preventDefault(); place(digit, false); return; }
    if (key === "e" && criteria.length) { event.preventDefault(); chain = 0; setPending("e"); return; }
    if (key in ratingKeys || key === "t" || key === "f" || key === "g") { event.preventDefault(); setPending(key); return; }
    switch (key) {
      case "ArrowRight": case "k": event.preventDefault(); setFocus(focused + 1); break;
      case "ArrowLeft": case "j": event.preventDefault(); setFocus(focused - 1); break;
      case "Backspace": event.preventDefault(); undo(); break;
      case "c": clearAll(); break;
      case "x": { const box = form.querySelector("[name=all_unacceptable]"); box.checked = !box.checked; changed(); break; }
      case "m": showRaw(!document.body.classList.contains("show-raw")); break;
      case "r": event.preventDefault(); form.querySelector("[name=rationale]").focus(); break;
      case "s": event.preventDefault(); document.querySelector(".skip select").focus(); break;
      case "?": event.preventDefault(); if (keymap.open) keymap.close(); else keymap.showModal(); break;
      case "Enter":
        if (target.tagName !== "BUTTON" && target.tagName !== "A" && target.tagName !== "SUMMARY") { event.preventDefault(); submit(); }
        break;
    }
  });

  // Back after a submit must not show this form as if it were still live.
  window.addEventListener("pageshow", function (event) { if (event.persisted) window.location.reload(); });

  // A page the server sent back with errors keeps its values; otherwise the draft, if any.
  if (form.dataset.bound !== "1") restoreDraft();
  // Backspace undoes placements in rank order when they were not made on this page.
  const known = placements.filter(function (n) { return cards[n - 1] && rankOf(cards[n - 1]) !== null; });
  groups().flat().forEach(function (n) { if (known.indexOf(n) < 0) known.push(n); });
  placements = known;
  let raw = false;
  try { raw = localStorage.getItem("preflab-raw") === "1"; } catch (e) { raw = false; }
  showRaw(raw);
  pruneDrafts();
  changed();
  setFocus(0);
  tick();
})();
