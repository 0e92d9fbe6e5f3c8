// Message search (GET /search) in a dialog: results as the user types,
// newest first, the words that matched marked; "More results" pages back
// with before_id; a result opens its chat at the message. Everywhere, or
// only in the open chat.

// The server's notion of a word (SPEC §11.5, README): letters, marks and
// digits. Used to mark matches and to refuse what the server would.
const WORD = /[\p{L}\p{N}\p{M}]+/gu;
const HAS_WORD = /[\p{L}\p{N}]/u;
const MAX_WORDS = 16;
const PAGE = 20;

export function searchWords(q) {
  return (q.match(WORD) ?? []).filter((w) => HAS_WORD.test(w));
}

// markMatches splits text into strings and <mark> elements: every word
// that begins with one of words, compared case-insensitively.
export function markMatches(h, text, words) {
  const lower = words.map((w) => w.toLocaleLowerCase());
  const out = [];
  let last = 0;
  for (const m of text.matchAll(WORD)) {
    const w = m[0].toLocaleLowerCase();
    if (!lower.some((t) => w.startsWith(t))) continue;
    if (m.index > last) out.push(text.slice(last, m.index));
    out.push(h("mark", {}, m[0]));
    last = m.index + m[0].length;
  }
  if (last < text.length) out.push(text.slice(last));
  return out;
}

// setupSearch wires the search dialog of index.html. deps: api (Api),
// h and $ (DOM helpers), chatTitle(chatId), userName(id), formatTime(iso),
// openChatId() (the open chat's id or null), jumpTo(chatId, seq),
// describeError(err). It returns open({ inChat }).
export function setupSearch(deps) {
  const { api, h, $, describeError } = deps;
  const dialog = $("search-dialog");
  const input = $("search-q");
  const scope = $("search-scope");
  const list = $("search-results");
  const more = $("search-more");
  const status = $("search-status");
  const error = $("search-error");

  let timer = 0;
  let run = 0; // the newest query; answers to older ones are dropped
  let current = null; // { q, words, chatId, hits, done }

  function reset(text = "") {
    current = null;
    list.replaceChildren();
    more.hidden = true;
    status.textContent = text;
    error.textContent = "";
  }

  function resultEl(hit, words) {
    const m = hit.message;
    const where = deps.chatTitle(hit.chat_id);
    return h(
      "li",
      {},
      h(
        "button",
        { type: "button", class: "result search-hit", dataset: { chatId: hit.chat_id, seq: m.seq }, onclick: () => choose(hit) },
        h("span", { class: "search-hit-head" }, h("span", { class: "result-name" }, where), h("time", { class: "result-email", datetime: m.created_at }, deps.formatTime(m.created_at))),
        h("span", { class: "search-hit-text" }, h("span", { class: "search-hit-sender" }, `${deps.userName(m.sender_id)}: `), markMatches(h, m.text, words)),
      ),
    );
  }

  function show() {
    const { hits, words, done } = current;
    list.replaceChildren(...hits.map((hit) => resultEl(hit, words)));
    more.hidden = done;
    status.textContent = hits.length ? `${hits.length}${done ? "" : "+"} message${hits.length === 1 ? "" : "s"} found.` : "No messages found.";
  }

  async function fetchPage() {
    const mine = ++run;
    const c = current;
    const params = { q: c.q, limit: PAGE };
    if (c.chatId !== null) params.chatId = c.chatId;
    if (c.hits.length) params.beforeId = c.hits.at(-1).message.id;
    more.disabled = true;
    try {
      const page = await api.searchMessages(params);
      if (mine !== run || c !== current) return;
      c.hits.push(...page);
      c.done = page.length < PAGE;
      error.textContent = "";
      show();
    } catch (err) {
      if (mine === run) error.textContent = describeError(err);
    } finally {
      more.disabled = false;
    }
  }

  function search() {
    clearTimeout(timer);
    const q = input.value.trim();
    const words = searchWords(q);
    const chatId = !scope.closest("label").hidden && scope.checked ? deps.openChatId() : null;
    if (!q) {
      run++;
      reset();
      return;
    }
    if (!words.length) {
      run++;
      reset("Type a word, or the beginning of one.");
      return;
    }
    if (words.length > MAX_WORDS) {
      run++;
      reset(`Search for at most ${MAX_WORDS} words.`);
      return;
    }
    if (current && current.q === q && current.chatId === chatId) return;
    current = { q, words, chatId, hits: [], done: false };
    fetchPage();
  }

  async function choose(hit) {
    dialog.close();
    await deps.jumpTo(hit.chat_id, hit.message.seq);
  }

  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(search, 250);
  });
  input.addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    search();
  });
  scope.addEventListener("change", () => {
    current = null;
    search();
  });
  more.addEventListener("click", fetchPage);
  $("search-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    search();
  });
  $("search-close").addEventListener("click", () => dialog.close());

  // open shows the dialog; inChat narrows it to the open chat.
  return function open({ inChat = false } = {}) {
    const chatId = deps.openChatId();
    const label = scope.closest("label");
    label.hidden = chatId === null;
    scope.checked = inChat && chatId !== null;
    $("search-scope-name").textContent = chatId === null ? "" : deps.chatTitle(chatId);
    reset(); // nothing of an earlier search (or an earlier user) shows
    if (!dialog.open) dialog.showModal();
    input.select();
    search();
  };
}
