// Conversation features of SPEC §11 in the browser: replies (a quoted
// preview that jumps to the message), edits and deletes of one's own
// messages (the group's owner deletes any), reactions from a small fixed
// set with counts and who reacted, and the typing line. app.js renders the
// messages and calls in here for their conversation parts; the changes go
// out through the SDK's connection (which queues them while disconnected
// and writes them in order), and everything the server answers comes back
// as message.updated frames, which app.js applies in place.

export const EMOJI = ["👍", "❤️", "😂", "🎉", "😮", "😢"];

// How long another member's typing shows after their last frame (the SDK
// writes this page's at most every 2 s).
const TYPING_SHOW_MS = 5000;

// setupMessages wires the conversation features. deps: h and $ (DOM
// helpers), me() (the user's id), userName(id), chatTitle(chat),
// openChat(), isOwner(chat), change(fn) (runs fn with the connection, whose
// edit, delete, react, unreact and typing queue or write the frame),
// sendText(text, {replyToSeq}), jumpTo(chatId, seq), fetchMessage(chatId,
// seq) (one message from history), render(), showStatus(kind, text).
export function setupMessages(deps) {
  const { h, $ } = deps;

  // The composer's mode: null (a new message), or replying to or editing
  // a message of the chat it was started in.
  let compose = null; // { mode: "reply" | "edit", chatId, seq }
  // The message whose actions are open, and the one the arrow keys are
  // on (its controls are the ones Tab reaches), in the open chat.
  let openSeq = null;
  let activeSeq = null;
  const typing = new Map(); // chat id -> Map(user id -> shown until, ms)
  const fetching = new Set(); // "chat:seq" of quotes being fetched
  let typingTimer = 0;

  function lookup(chat, seq) {
    return chat.messages?.get(seq) ?? chat.quotes.get(seq) ?? null;
  }

  function snippet(m) {
    if (m.deleted) return "message deleted";
    const t = m.text.replace(/\s+/g, " ");
    return t.length > 80 ? `${t.slice(0, 79)}…` : t;
  }

  // quoteOf returns the replied-to message, fetching it once when it is
  // not loaded (it may lie before the pages in view).
  function quoteOf(chat, seq) {
    const q = lookup(chat, seq);
    if (q) return q;
    const key = `${chat.id}:${seq}`;
    if (!fetching.has(key)) {
      fetching.add(key);
      deps
        .fetchMessage(chat.id, seq)
        .then((m) => {
          if (m && !lookup(chat, seq)) chat.quotes.set(seq, m);
          deps.render();
        })
        .catch(() => {})
        .finally(() => fetching.delete(key));
    }
    return null;
  }

  function reactedByMe(m, emoji) {
    return m.reactions.some((r) => r.emoji === emoji && r.user_ids.includes(deps.me()));
  }

  function toggleReaction(chat, m, emoji) {
    const mine = reactedByMe(m, emoji);
    deps.change((conn) => (mine ? conn.unreact(chat.id, m.seq, emoji) : conn.react(chat.id, m.seq, emoji)));
  }

  function canEdit(chat, m) {
    return !m.deleted && m.sender_id === deps.me();
  }

  function canDelete(chat, m) {
    return !m.deleted && (m.sender_id === deps.me() || (chat.type === "group" && deps.isOwner(chat)));
  }

  function remove(chat, m) {
    const whose = m.sender_id === deps.me() ? "your message" : `${deps.userName(m.sender_id)}'s message`;
    if (!confirm(`Delete ${whose}? Everyone in the chat will see "message deleted".`)) return;
    openSeq = null;
    deps.change((conn) => conn.delete(chat.id, m.seq));
    deps.render();
  }

  function startCompose(mode, chat, m) {
    compose = { mode, chatId: chat.id, seq: m.seq };
    openSeq = null;
    const box = $("composer-text");
    if (mode === "edit") box.value = m.text;
    renderCompose();
    deps.render();
    box.focus();
    if (mode === "edit") box.setSelectionRange(box.value.length, box.value.length);
  }

  function renderCompose() {
    const bar = $("compose-context");
    const chat = deps.openChat();
    if (!compose || !chat || compose.chatId !== chat.id) {
      bar.hidden = true;
      bar.replaceChildren();
      return;
    }
    const m = lookup(chat, compose.seq);
    const label =
      compose.mode === "edit"
        ? h("span", { class: "compose-label" }, "Editing your message")
        : h("span", { class: "compose-label" }, "Replying to ", h("strong", {}, m ? deps.userName(m.sender_id) : "a message"), m ? `: ${snippet(m)}` : "");
    bar.hidden = false;
    bar.replaceChildren(
      label,
      h("button", { type: "button", class: "btn btn-quiet compose-cancel", "aria-label": compose.mode === "edit" ? "Cancel editing" : "Cancel reply", onclick: () => cancel() }, "✕"),
    );
  }

  function cancel() {
    if (!compose) return false;
    const wasEdit = compose.mode === "edit";
    compose = null;
    if (wasEdit) $("composer-text").value = "";
    renderCompose();
    $("composer-text").focus();
    return true;
  }

  // submit sends what the composer holds: an edit in edit mode, else a new
  // message (a reply in reply mode). It reports whether the box may be
  // cleared.
  function submit(text) {
    const chat = deps.openChat();
    if (!chat) return false;
    const c = compose && compose.chatId === chat.id ? compose : null;
    if (c?.mode === "edit") {
      const m = lookup(chat, c.seq);
      const t = text.trim();
      if (!t) {
        deps.showStatus("error", "A message cannot be empty. Delete it instead.");
        return false;
      }
      if (m && !m.deleted && t !== m.text) deps.change((conn) => conn.edit(chat.id, c.seq, t));
      compose = null;
      renderCompose();
      return true;
    }
    if (!deps.sendText(text, c?.mode === "reply" ? { replyToSeq: c.seq } : {})) return false;
    compose = null;
    renderCompose();
    return true;
  }

  // typed runs on every input in the composer: the user types, while there
  // is text and it is not an edit (the SDK writes a typing frame at most
  // every 2 s per chat, and none while disconnected).
  function typed(text) {
    const chat = deps.openChat();
    if (!chat || !text.trim() || compose?.mode === "edit") return;
    deps.change((conn) => conn.typing(chat.id));
  }

  function onTyping(f) {
    if (f.user_id === deps.me()) return;
    if (!typing.has(f.chat_id)) typing.set(f.chat_id, new Map());
    typing.get(f.chat_id).set(f.user_id, Date.now() + TYPING_SHOW_MS);
    scheduleTyping();
    deps.render();
  }

  // stoppedTyping: the member's message arrived, so they no longer type.
  function stoppedTyping(chatId, userId) {
    if (typing.get(chatId)?.delete(userId)) deps.render();
  }

  function scheduleTyping() {
    clearTimeout(typingTimer);
    let next = Infinity;
    const now = Date.now();
    for (const users of typing.values()) {
      for (const [id, until] of users) {
        if (until <= now) users.delete(id);
        else next = Math.min(next, until);
      }
    }
    if (next !== Infinity) {
      typingTimer = setTimeout(() => {
        scheduleTyping();
        deps.render();
      }, next - now + 20);
    }
  }

  function renderTyping(chat) {
    const now = Date.now();
    const names = [...(typing.get(chat.id) ?? new Map())].filter(([, until]) => until > now).map(([id]) => deps.userName(id));
    let text = "";
    if (names.length === 1) text = `${names[0]} is typing…`;
    else if (names.length === 2) text = `${names[0]} and ${names[1]} are typing…`;
    else if (names.length > 2) text = `${names.length} people are typing…`;
    const el = $("typing");
    if (el.textContent !== text) el.textContent = text;
    renderCompose();
  }

  // signature says what a message's conversation parts show, so a render
  // with nothing new leaves them (and the focus in them) alone.
  function signature(chat, m, pending) {
    if (pending) return `p|${m.replyTo ?? ""}|${m.replyTo ? JSON.stringify(quoteOf(chat, m.replyTo)?.rev ?? null) : ""}`;
    const q = m.reply_to_seq ? quoteOf(chat, m.reply_to_seq) : null;
    const names = m.reactions.map((r) => `${r.emoji}:${r.user_ids.map(deps.userName).join(",")}`).join(";");
    return [m.rev, m.deleted, q?.rev ?? "", q ? deps.userName(q.sender_id) : "", names, openSeq === m.seq, activeSeq === m.seq, canDelete(chat, m)].join("|");
  }

  // decorate renders a message's quote, text, reactions and actions, and
  // adds its meta parts (edited, the actions button) to parts.
  function decorate(li, chat, m, pending, parts) {
    const active = !pending && activeSeq === m.seq;
    const tab = active ? "0" : "-1";
    const replyTo = pending ? m.replyTo : m.reply_to_seq;
    if (!pending) {
      if (m.edited_at && !m.deleted) parts.push(h("span", { class: "edited", title: `Edited ${new Date(m.edited_at).toLocaleString()}` }, "edited"));
      parts.push(
        h(
          "button",
          {
            type: "button",
            class: "btn-icon msg-more",
            tabindex: tab,
            dataset: { key: "more" },
            "aria-label": "Message actions",
            "aria-expanded": openSeq === m.seq ? "true" : "false",
            onclick: () => {
              openSeq = openSeq === m.seq ? null : m.seq;
              activeSeq = m.seq;
              deps.render();
            },
          },
          "⋯",
        ),
      );
    }
    const focusKey = li.contains(document.activeElement) ? document.activeElement.dataset?.key : undefined;
    const sig = signature(chat, m, pending);
    if (li.dataset.sig !== sig) {
      li.dataset.sig = sig;
      li.classList.toggle("deleted", !pending && m.deleted);
      li.tabIndex = -1;
      const text = li.querySelector(".msg-text");
      text.textContent = !pending && m.deleted ? "message deleted" : m.text;

      li.querySelector(".msg-quote")?.remove();
      if (replyTo) {
        const q = quoteOf(chat, replyTo);
        const quote = h(
          "button",
          { type: "button", class: "msg-quote", tabindex: tab, dataset: { key: "quote", replyTo }, "aria-label": `Reply to ${q ? deps.userName(q.sender_id) : "a message"}: ${q ? snippet(q) : "…"}. Show it`, onclick: () => deps.jumpTo(chat.id, replyTo) },
          h("span", { class: "msg-quote-sender" }, q ? deps.userName(q.sender_id) : "…"),
          h("span", { class: "msg-quote-text" }, q ? snippet(q) : ""),
        );
        text.before(quote);
      }

      li.querySelector(".msg-reactions")?.remove();
      if (!pending && m.reactions.length) {
        const row = h(
          "div",
          { class: "msg-reactions", role: "group", "aria-label": "Reactions" },
          m.reactions.map((r) => {
            const names = r.user_ids.map(deps.userName);
            const mine = r.user_ids.includes(deps.me());
            return h(
              "button",
              {
                type: "button",
                class: "reaction",
                tabindex: tab,
                dataset: { key: `r${r.emoji}`, emoji: r.emoji },
                "aria-pressed": mine ? "true" : "false",
                "aria-label": `${r.emoji} ${r.count}: ${names.join(", ")}`,
                title: names.join(", "),
                onclick: () => toggleReaction(chat, m, r.emoji),
              },
              `${r.emoji} ${r.count}`,
            );
          }),
        );
        text.after(row);
      }

      li.querySelector(".msg-actions")?.remove();
      if (!pending && openSeq === m.seq) {
        const buttons = [h("button", { type: "button", class: "btn", dataset: { key: "reply" }, onclick: () => startCompose("reply", chat, m) }, "Reply")];
        if (!m.deleted) {
          buttons.push(
            h(
              "span",
              { class: "emoji-row", role: "group", "aria-label": "React" },
              EMOJI.map((e) =>
                h("button", { type: "button", class: "btn emoji", dataset: { key: `e${e}` }, "aria-label": `React with ${e}`, "aria-pressed": reactedByMe(m, e) ? "true" : "false", onclick: () => { toggleReaction(chat, m, e); closeActions(); } }, e),
              ),
            ),
          );
        }
        if (canEdit(chat, m)) buttons.push(h("button", { type: "button", class: "btn", dataset: { key: "edit" }, onclick: () => startCompose("edit", chat, m) }, "Edit"));
        if (canDelete(chat, m)) buttons.push(h("button", { type: "button", class: "btn btn-danger", dataset: { key: "delete" }, onclick: () => remove(chat, m) }, "Delete"));
        li.querySelector(".msg-meta").before(h("div", { class: "msg-actions", role: "group", "aria-label": "Actions" }, buttons));
      }
    }
    if (focusKey) {
      // The parts were rebuilt under the focus: put it back.
      queueMicrotask(() => li.querySelector(`[data-key="${CSS.escape(focusKey)}"]`)?.focus());
    }
  }

  // closeActions closes the open actions and puts the focus on their
  // message's actions button.
  function closeActions() {
    const seq = openSeq;
    openSeq = null;
    deps.render();
    queueMicrotask(() => $("messages").querySelector(`.msg[data-seq="${seq}"] .msg-more`)?.focus());
  }

  // keydown on the message list: the arrow keys move between messages
  // (the one they are on is where Tab goes next), Enter opens its actions,
  // Escape closes them.
  function onListKey(ev) {
    const list = $("messages");
    const items = [...list.querySelectorAll(".msg[data-seq]")];
    if (!items.length) return;
    const cur = ev.target.closest?.(".msg[data-seq]");
    if (ev.key === "ArrowDown" || ev.key === "ArrowUp") {
      if (ev.target.closest?.(".msg-actions")) return; // buttons there take Tab
      ev.preventDefault();
      let i = cur ? items.indexOf(cur) : ev.key === "ArrowUp" ? items.length : -1;
      i = Math.max(0, Math.min(items.length - 1, i + (ev.key === "ArrowDown" ? 1 : -1)));
      activeSeq = Number(items[i].dataset.seq);
      deps.render();
      items[i].focus();
    } else if (ev.key === "Enter" && cur && ev.target === cur) {
      ev.preventDefault();
      openSeq = openSeq === Number(cur.dataset.seq) ? null : Number(cur.dataset.seq);
      activeSeq = Number(cur.dataset.seq);
      deps.render();
      queueMicrotask(() => cur.querySelector(".msg-actions button")?.focus());
    } else if (ev.key === "Escape" && openSeq !== null) {
      ev.preventDefault();
      closeActions();
    }
  }
  $("messages-scroll").addEventListener("keydown", onListKey);

  return {
    decorate,
    signature,
    submit,
    cancel,
    typed,
    onTyping,
    stoppedTyping,
    renderTyping,
    // reset forgets the open chat's modes (another chat opens).
    reset() {
      compose = null;
      openSeq = null;
      activeSeq = null;
      renderCompose();
    },
    // clear forgets everything (signed out).
    clear() {
      this.reset();
      typing.clear();
      clearTimeout(typingTimer);
    },
  };
}
