// WinDI Chat in the browser, on the TypeScript SDK (vendor/windi-sdk.js,
// its browser build): REST (api.js, through the session's openapi-fetch
// client) for accounts, chats, history and membership; the all-chats
// WebSocket through the SDK's WindiConnection for live messages, read
// receipts and presence (it reconnects with backoff, resumes every chat by
// revision, queues sends, changes and reads while disconnected, re-sends
// unacknowledged messages under their client_msg_id, and hands over every
// message once, in seq order); replies, edits, deletes, reactions and
// typing in messages.js; the login's tokens in session.js (the SDK's
// WindiSession, shared by the tabs); the account dialog (devices, name,
// password) in account.js. The view keeps each chat's messages by seq, each
// in its latest state (the highest rev wins), so a history page and live
// frames that overlap never show anything twice, and a chat's view is
// always a contiguous run of seqs.
import { setupAccount } from "./account.js";
import { Api, ApiError, describeError, register } from "./api.js";
import { setupMessages } from "./messages.js";
import { setupSearch } from "./search.js";
import { Login, wrongPassword } from "./session.js";
import { FrameError, SessionEndedError, newClientMsgId } from "./vendor/windi-sdk.js";

const OPEN_KEY = "windi.open-chat";
const HISTORY_PAGE = 50;
const MAX_TEXT = 4096;

const $ = (id) => document.getElementById(id);

// h builds an element: h("li", { class: "x", dataset: { seq: 1 } }, "text", child).
function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === "class") el.className = v;
    else if (k === "dataset") {
      for (const [dk, dv] of Object.entries(v)) if (dv !== undefined && dv !== null) el.dataset[dk] = String(dv);
    }
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : String(c));
  }
  return el;
}

// --- state -------------------------------------------------------------------

const state = {
  me: null,
  users: new Map(), // id -> {id, name}
  chats: new Map(), // id -> chat (see newChat)
  online: new Set(), // user ids online now
  openId: null,
  connected: false,
  connState: "closed", // what the status line says of the connection
  everOpened: false,
  gen: 0, // counts sign-outs: work started before one stops
  starting: false,
};

// The login ends (revoked, refused, logged out in another tab): to the
// login form, with a notice.
const login = new Login({
  onEnd: (notice) => signOut(notice),
  onStart: () => startSession(),
});
const api = new Api(() => {
  if (!login.session) throw new SessionEndedError(0);
  return login.session.api;
});
// The WindiConnection while logged in; connId counts connections, so the
// callbacks of one that was stopped do nothing.
let conn = null;
let connId = 0;

// withConn runs fn with the connection (edits, reactions, typing, reads);
// after its end there is nothing to do.
function withConn(fn) {
  if (!conn) return;
  try {
    fn(conn);
  } catch (err) {
    showStatus("error", err.message);
  }
}

const ui = setupMessages({
  h,
  $,
  me: () => me(),
  userName: (id) => userName(id),
  openChat: () => openChat(),
  isOwner: (chat) => isOwner(chat),
  change: withConn,
  sendText: (text, opts) => sendText(text, opts),
  jumpTo: (chatId, seq) => jumpTo(chatId, seq),
  fetchMessage: async (chatId, seq) => (await api.history(chatId, { limit: 1, afterSeq: seq - 1 }))[0] ?? null,
  render: () => render(),
  showStatus: (kind, text) => showStatus(kind, text),
});

function newChat(id) {
  return {
    id,
    type: "private",
    name: null,
    createdAt: "",
    members: new Map(), // user id -> {user_id, role, last_read_seq}
    lastSeq: 0, // the highest seq known to exist
    lastMessage: null,
    unread: 0,
    readSeq: 0, // every message up to it is read by every member
    messages: null, // seq -> Message once history is loaded
    oldestSeq: 1, // lowest seq in messages
    loadingOlder: false,
    loading: 0, // history requests in flight: frames meanwhile wait in stash
    stash: [], // messages that arrived while history was loading
    quotes: new Map(), // seq -> replied-to messages outside the loaded pages
    pending: new Map(), // client_msg_id -> {cmid, chatId, text, replyTo, failed, error, sent}
    readSent: 0, // highest seq handed to markRead since the last connect
    activity: 0, // ms; sorts the chat list
  };
}

const me = () => state.me?.id ?? 0;
const myWatermark = (chat) => chat.members.get(me())?.last_read_seq ?? 0;

function lowestWatermark(chat) {
  let low = Infinity;
  for (const m of chat.members.values()) low = Math.min(low, m.last_read_seq);
  return low === Infinity ? 0 : low;
}

// userName: names come with chat members and search results; anyone else
// (a former member's old messages) is looked up once (GET /users/{id}).
function userName(id) {
  if (id === me()) return state.me.name;
  const u = state.users.get(id);
  if (u) return u.name;
  lookUpUser(id);
  return `User #${id}`;
}

function rememberUsers(list) {
  let changed = false;
  for (const u of list ?? []) {
    if (u.id === me() || state.users.get(u.id)?.name === u.name) continue;
    state.users.set(u.id, { id: u.id, name: u.name });
    changed = true;
  }
  if (changed) render();
}

const lookingUp = new Set();
async function lookUpUser(id) {
  if (lookingUp.has(id) || !state.me) return;
  lookingUp.add(id);
  try {
    rememberUsers([await api.user(id)]);
    lookingUp.delete(id);
  } catch (err) {
    // Unknown (404) stays "User #id" for the page's life; other failures try again later.
    if (!(err instanceof ApiError && err.status === 404)) setTimeout(() => lookingUp.delete(id), 10_000);
  }
}

function chatTitle(chat) {
  if (chat.type === "group") return chat.name ?? "Group";
  return userName(peerOf(chat) ?? me());
}

function peerOf(chat) {
  for (const id of chat.members.keys()) if (id !== me()) return id;
  return null;
}

function isOwner(chat) {
  return chat.members.get(me())?.role === "owner";
}

// mergeChat folds a Chat from the API into the state.
function mergeChat(c) {
  let chat = state.chats.get(c.id);
  if (!chat) {
    chat = newChat(c.id);
    state.chats.set(c.id, chat);
  }
  const before = [...chat.members.keys()].sort().join(",");
  chat.type = c.type;
  chat.name = c.name;
  chat.createdAt = c.created_at;
  chat.members = new Map(c.members.map((m) => [m.user_id, { ...m }]));
  const same = before === [...chat.members.keys()].sort().join(",");
  const lastSeq = c.last_seq ?? c.last_message?.seq ?? 0;
  if (lastSeq >= chat.lastSeq) {
    chat.lastSeq = lastSeq;
    chat.lastMessage = c.last_message;
    chat.unread = c.unread;
  }
  // The snapshot is the truth for this membership; with the same members,
  // a chat.read frame that overtook the response may be newer.
  chat.readSeq = same ? Math.max(chat.readSeq, lowestWatermark(chat)) : lowestWatermark(chat);
  chat.activity = Math.max(chat.activity, Date.parse(chat.lastMessage?.created_at ?? c.created_at) || 0);
  rememberUsers(c.members.map((m) => ({ id: m.user_id, name: m.name })));
  return chat;
}

function forgetChat(id, notice) {
  const chat = state.chats.get(id);
  if (!chat) return;
  state.chats.delete(id);
  if (state.openId === id) closeChat();
  if (notice) announce(notice, true);
  render();
}

const loadingChats = new Set();
const reloadChats = new Set(); // asked for again while loading
// early holds the frames of chats this page does not know yet (just
// created or joined), by chat id, until loadChat has fetched the chat.
const early = new Map();

async function loadChat(id) {
  if (loadingChats.has(id)) {
    // The answer in flight may predate the event that asked again.
    if (state.chats.has(id)) reloadChats.add(id);
    return;
  }
  loadingChats.add(id);
  try {
    const isNew = !state.chats.has(id);
    const chat = mergeChat(await api.chat(id));
    if (isNew) {
      if (chat.type === "private") announce(`New chat with ${chatTitle(chat)}.`);
      else if (!isOwner(chat)) announce(`You were added to ${chatTitle(chat)}.`);
      refreshPresence(chat);
    }
    render();
  } catch (err) {
    if (err instanceof ApiError && (err.status === 403 || err.status === 404)) forgetChat(id);
  } finally {
    loadingChats.delete(id);
    const frames = early.get(id) ?? [];
    early.delete(id);
    // Replayed in arrival order; what the fetched chat already counts is
    // recognised by seq.
    if (state.chats.has(id)) for (const f of frames) onFrame(f);
    if (reloadChats.delete(id) && state.chats.has(id)) loadChat(id);
  }
}

async function loadChats() {
  // Only chats known before the request can have been left: one that
  // arrived (member.added) while it ran may be missing from the answer.
  const before = [...state.chats.keys()];
  const list = await api.chats();
  const seen = new Set();
  for (const c of list) seen.add(mergeChat(c).id);
  for (const id of before) if (!seen.has(id)) forgetChat(id);
  render();
}

async function refreshPresence(chat) {
  try {
    const ids = new Set(await api.presence(chat.id));
    for (const id of chat.members.keys()) {
      if (ids.has(id)) state.online.add(id);
      else if (id !== me()) state.online.delete(id);
    }
    render();
  } catch {
    // presence frames keep it current from here
  }
}

// --- messages ----------------------------------------------------------------

// handleMessage applies a message from the connection (onMessage: new, own
// ones from their acks; onUpdate: a later state): a message above the last
// seq is new, any other is a state of one already there, and only a newer
// rev replaces it.
function handleMessage(m) {
  const chat = state.chats.get(m.chat_id);
  if (!chat) {
    loadChat(m.chat_id);
    return;
  }
  if (chat.loading) chat.stash.push(m);
  const mine = m.sender_id === me();
  if (mine) {
    if (chat.pending.delete(m.client_msg_id)) view.rekey(m.client_msg_id, m.seq);
    const self = chat.members.get(me());
    if (self) self.last_read_seq = Math.max(self.last_read_seq, m.seq);
  }
  if (m.read) chat.readSeq = Math.max(chat.readSeq, m.seq);
  chat.readSeq = Math.max(chat.readSeq, lowestWatermark(chat));
  storeMessage(chat, m);
  if (m.seq > chat.lastSeq) {
    chat.lastSeq = m.seq;
    chat.lastMessage = m;
    chat.activity = Date.parse(m.created_at) || Date.now();
    if (mine) {
      chat.unread = 0;
    } else {
      chat.unread++;
      ui.stoppedTyping(chat.id, m.sender_id);
      const where = chat.type === "group" ? ` in ${chatTitle(chat)}` : "";
      announce(`${userName(m.sender_id)}${where}: ${m.deleted ? "message deleted" : m.text}`);
    }
  } else if (chat.lastMessage?.seq === m.seq && m.rev > chat.lastMessage.rev) {
    chat.lastMessage = m; // edited or deleted: the chat list shows it
  }
  render();
}

// storeMessage keeps m in the loaded pages (or the quotes) unless a newer
// state is there.
function storeMessage(chat, m) {
  const into = chat.messages && m.seq >= chat.oldestSeq ? chat.messages : chat.quotes.has(m.seq) ? chat.quotes : null;
  const old = into?.get(m.seq);
  if (into && (!old || m.rev > old.rev)) into.set(m.seq, m);
}

// loaded ends a history request: what arrived meanwhile may be newer than
// the page, so it is applied again.
function loaded(chat) {
  chat.loading--;
  if (chat.loading > 0) return;
  for (const m of chat.stash.splice(0)) storeMessage(chat, m);
}

function onFrame(f) {
  const chatId = f.message?.chat_id ?? f.chat_id;
  if (chatId && f.type !== "error" && !state.chats.has(chatId)) {
    if (!early.has(chatId)) early.set(chatId, []);
    early.get(chatId).push(f);
    loadChat(chatId);
    return;
  }
  const chat = state.chats.get(f.chat_id);
  switch (f.type) {
    case "message.new":
    case "message.updated":
      handleMessage(f.message);
      break;
    case "typing":
      ui.onTyping(f);
      break;
    case "message.read": {
      if (!chat) break;
      const m = chat.members.get(f.user_id);
      if (m) m.last_read_seq = Math.max(m.last_read_seq, f.seq);
      if (f.user_id === me()) chat.unread = Math.max(0, chat.lastSeq - myWatermark(chat));
      chat.readSeq = Math.max(chat.readSeq, lowestWatermark(chat));
      render();
      break;
    }
    case "chat.read":
      if (!chat) break;
      chat.readSeq = Math.max(chat.readSeq, f.seq);
      render();
      break;
    case "presence":
      if (f.online) state.online.add(f.user_id);
      else state.online.delete(f.user_id);
      render();
      break;
    case "member.added":
      if (!chat) {
        loadChat(f.chat_id);
        break;
      }
      if (!chat.members.has(f.user_id)) {
        chat.members.set(f.user_id, { user_id: f.user_id, role: "member", last_read_seq: 0 });
        announce(`${userName(f.user_id)} joined ${chatTitle(chat)}.`);
      }
      loadChat(f.chat_id); // exact roles and watermarks
      render();
      break;
    case "member.removed":
      if (!chat) break;
      if (f.user_id === me()) {
        forgetChat(f.chat_id, `You are no longer a member of ${chatTitle(chat)}.`);
        break;
      }
      if (chat.members.delete(f.user_id)) announce(`${userName(f.user_id)} is no longer a member of ${chatTitle(chat)}.`);
      loadChat(f.chat_id);
      render();
      break;
  }
}

// onRefused takes the error frames that answer no send (a send's answer
// rejects its ack): a refused edit, delete or reaction names its message;
// one naming only a chat says the user is no longer in it.
function onRefused(err) {
  const f = err.frame;
  if (f.chat_id && f.seq === undefined && (f.code === "forbidden" || f.code === "not_found")) {
    forgetChat(f.chat_id);
    return;
  }
  showStatus("error", f.message);
}

// transmit hands a pending message to the connection, which writes it now
// or once connected, again after a reconnect until acked, under the same
// client_msg_id (so it is stored once), and retries rate_limited and
// unavailable answers itself; any other answer fails it (Retry sends it
// again, same id).
function transmit(p) {
  p.failed = false;
  p.error = "";
  if (!conn) return; // startConnection hands it over
  let sent;
  try {
    sent = conn.sendWith(p.chatId, p.text, { clientMsgId: p.cmid, replyToSeq: p.replyTo });
  } catch (err) {
    p.failed = true;
    p.error = err.message;
    return;
  }
  p.sent = sent;
  const id = connId;
  sent.ack.then(
    () => {
      // The message came through onMessage already (a duplicate's comes in
      // its place in the stream, or came before).
      const chat = state.chats.get(p.chatId);
      if (chat?.pending.get(p.cmid) !== p) return;
      chat.pending.delete(p.cmid);
      render();
    },
    (err) => {
      if (id !== connId || p.sent !== sent) return; // the connection was stopped
      p.failed = true;
      p.error = err instanceof FrameError ? err.frame.message : "Not sent: the connection ended.";
      render();
    },
  );
}

function sendText(text, { replyToSeq } = {}) {
  const chat = openChat();
  if (!chat) return false;
  text = text.trim();
  if (!text) return false;
  if ([...text].length > MAX_TEXT) {
    showStatus("error", `A message holds at most ${MAX_TEXT} characters.`);
    return false;
  }
  const p = { cmid: newClientMsgId(), chatId: chat.id, text, replyTo: replyToSeq, failed: false, error: "", sent: null };
  chat.pending.set(p.cmid, p);
  transmit(p);
  view.stickToBottom = true;
  render();
  return true;
}

// onConnected runs on every (re)connect. The connection has resumed every
// chat (by revision, in the handshake), written what waited (sends not yet
// acked, changes, reads); a read receipt written to the socket that died
// may not have arrived, so the open chat's goes again.
function onConnected() {
  const reconnect = state.everOpened;
  state.everOpened = true;
  for (const chat of state.chats.values()) chat.readSent = 0;
  markRead();
  if (reconnect) {
    // Chats joined or left while away, unread counts, members.
    loadChats().catch(() => {});
  }
  const recent = [...state.chats.values()].sort((a, b) => b.activity - a.activity).slice(0, 20);
  for (const chat of recent) refreshPresence(chat);
}

// --- history -----------------------------------------------------------------

async function loadHistory(chat) {
  // The newest page: before_seq alone pages back from the end (a plain
  // limit would give the oldest messages).
  chat.loading++;
  let msgs;
  try {
    msgs = await api.history(chat.id, { limit: HISTORY_PAGE, beforeSeq: chat.lastSeq + 1 });
  } catch (err) {
    loaded(chat);
    throw err;
  }
  if (chat.messages) return loaded(chat); // loaded meanwhile
  chat.messages = new Map();
  chat.oldestSeq = msgs.length ? msgs[0].seq : 1;
  for (const m of msgs) {
    chat.messages.set(m.seq, m);
    if (m.read) chat.readSeq = Math.max(chat.readSeq, m.seq);
    if (m.seq > chat.lastSeq) {
      chat.lastSeq = m.seq;
      chat.lastMessage = m;
    }
  }
  // Everything changed after the chat's position reaches the view through
  // the socket; what came while this page was on its way is applied again.
  loaded(chat);
}

async function loadOlder() {
  const chat = openChat();
  if (!chat?.messages || chat.oldestSeq <= 1 || chat.loadingOlder) return;
  chat.loadingOlder = true;
  chat.loading++;
  render();
  try {
    const msgs = await api.history(chat.id, { limit: HISTORY_PAGE, beforeSeq: chat.oldestSeq });
    const sc = $("messages-scroll");
    const fromBottom = sc.scrollHeight - sc.scrollTop;
    for (const m of msgs) if (!chat.messages.has(m.seq)) chat.messages.set(m.seq, m);
    chat.oldestSeq = msgs.length ? msgs[0].seq : 1;
    chat.loadingOlder = false;
    loaded(chat);
    renderNow();
    sc.scrollTop = sc.scrollHeight - fromBottom;
  } catch (err) {
    chat.loadingOlder = false;
    loaded(chat);
    showStatus("error", describeError(err));
    render();
  }
}

// --- reading -------------------------------------------------------------------

// markRead moves the watermark to the newest message from someone else
// that has been on screen while the page was visible.
function markRead() {
  const chat = openChat();
  if (!chat || document.visibilityState !== "visible") return;
  const seq = view.maxSeen;
  if (seq <= myWatermark(chat) || seq <= chat.readSent || !conn) return;
  withConn((c) => c.markRead(chat.id, seq)); // written now, or when connected
  chat.readSent = seq;
}

// --- rendering -----------------------------------------------------------------

let renderQueued = false;
function render() {
  if (renderQueued) return;
  renderQueued = true;
  queueMicrotask(renderNow);
}

function renderNow() {
  renderQueued = false;
  if (!state.me) return;
  renderChatList();
  renderChatView();
  let unread = 0;
  for (const c of state.chats.values()) unread += c.unread;
  document.title = unread > 0 ? `(${unread}) WinDI Chat` : "WinDI Chat";
}

const timeFmt = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
const dateFmt = new Intl.DateTimeFormat(undefined, { month: "short", day: "numeric", hour: "2-digit", minute: "2-digit" });
function formatTime(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  return d.toDateString() === new Date().toDateString() ? timeFmt.format(d) : dateFmt.format(d);
}

// isOnline: this page counts its own user online while its socket is.
function isOnline(userId) {
  return userId === me() ? state.connected : state.online.has(userId);
}

function presenceDot(userId) {
  const on = isOnline(userId);
  return h("span", { class: `dot ${on ? "on" : "off"}`, "aria-hidden": "true" });
}

function renderChatList() {
  const ul = $("chat-list");
  const focusedId = document.activeElement?.closest?.(".chat-item")?.dataset.chatId;
  const chats = [...state.chats.values()].sort((a, b) => b.activity - a.activity || b.id - a.id);
  ul.replaceChildren(
    ...chats.map((chat) => {
      const title = chatTitle(chat);
      const peer = chat.type === "private" ? peerOf(chat) : null;
      const last = chat.lastMessage;
      const lastText = last ? `${last.sender_id === me() ? "You" : userName(last.sender_id)}: ${last.deleted ? "message deleted" : last.text}` : "No messages yet";
      const open = chat.id === state.openId;
      const unread = open && document.visibilityState === "visible" ? 0 : chat.unread;
      const online = peer !== null && isOnline(peer);
      return h(
        "li",
        { dataset: { chatId: chat.id, online: peer !== null ? String(online) : undefined } },
        h(
          "button",
          {
            type: "button",
            class: "chat-item",
            dataset: { chatId: chat.id },
            "aria-current": open ? "true" : undefined,
            onclick: () => openChatById(chat.id),
          },
          h(
            "span",
            { class: `avatar ${chat.type}`, "aria-hidden": "true" },
            title.slice(0, 1).toUpperCase(),
            peer !== null ? presenceDot(peer) : null,
          ),
          h(
            "span",
            { class: "chat-item-main" },
            h("span", { class: "chat-item-title" }, title),
            peer !== null ? h("span", { class: "visually-hidden" }, online ? ", online" : ", offline") : null,
            chat.type === "group" ? h("span", { class: "visually-hidden" }, ", group") : null,
            h("span", { class: "chat-item-last" }, lastText),
          ),
          h(
            "span",
            { class: "chat-item-meta" },
            last ? h("time", { datetime: last.created_at }, formatTime(last.created_at)) : null,
            unread > 0 ? h("span", { class: "badge", title: `${unread} unread` }, String(unread), h("span", { class: "visually-hidden" }, " unread")) : null,
          ),
        ),
      );
    }),
  );
  $("chat-list-empty").hidden = chats.length > 0;
  if (focusedId) ul.querySelector(`.chat-item[data-chat-id="${focusedId}"]`)?.focus();
}

// view: the DOM of the open chat's messages, keyed by seq ("s12") or by a
// pending send's client_msg_id ("p…").
const view = {
  chatId: null,
  els: new Map(),
  maxSeen: 0,
  stickToBottom: true,
  observer: null,
  reset(chatId) {
    this.chatId = chatId;
    this.els.clear();
    this.maxSeen = 0;
    this.stickToBottom = true;
    this.observer?.disconnect();
    $("messages").replaceChildren();
  },
  rekey(cmid, seq) {
    const el = this.els.get("p" + cmid);
    if (!el) return;
    this.els.delete("p" + cmid);
    if (!this.els.has("s" + seq)) this.els.set("s" + seq, el);
    else el.remove();
  },
};

function messageState(chat, m, pending) {
  if (pending) return m.failed ? "failed" : "pending";
  return m.seq <= chat.readSeq || m.read ? "read" : "sent";
}

const TICKS = {
  pending: ["\u{1F551}", "Sending"],
  failed: ["!", "Not sent"],
  sent: ["\u2713", "Sent"],
  read: ["\u2713\u2713", "Read by everyone"],
};

function messageEl(chat, m, pending) {
  const mine = pending || m.sender_id === me();
  const li = h("li", { class: `msg ${mine ? "mine" : "theirs"}`, tabindex: "-1" });
  if (!mine && chat.type === "group") li.append(h("p", { class: "msg-sender" }, userName(m.sender_id)));
  li.append(h("p", { class: "msg-text" }, m.text));
  li.append(h("p", { class: "msg-meta" }));
  return li;
}

function updateMessageEl(chat, li, m, pending) {
  const mine = pending || m.sender_id === me();
  const st = mine ? messageState(chat, m, pending) : "received";
  const sender = li.querySelector(".msg-sender");
  if (sender && sender.textContent !== userName(m.sender_id)) sender.textContent = userName(m.sender_id);
  const sig = `${st}|${m.seq ?? ""}|${ui.signature(chat, m, pending)}`;
  if (li.dataset.key === sig) return;
  li.dataset.key = sig;
  li.dataset.state = st;
  if (pending) li.dataset.clientMsgId = m.cmid;
  else {
    li.dataset.seq = m.seq;
    li.dataset.clientMsgId = m.client_msg_id;
  }
  const meta = li.querySelector(".msg-meta");
  const parts = [];
  if (!pending) parts.push(h("time", { datetime: m.created_at }, formatTime(m.created_at)));
  if (mine) {
    const [glyph, label] = TICKS[st];
    parts.push(h("span", { class: `tick ${st}`, role: "img", "aria-label": label, title: label }, glyph));
    if (st === "failed") {
      parts.push(h("span", { class: "msg-error" }, m.error || "Not sent."));
      parts.push(h("button", { type: "button", class: "link retry", onclick: () => { transmit(m); render(); } }, "Retry"));
    }
  }
  ui.decorate(li, chat, m, pending, parts);
  meta.replaceChildren(...parts);
}

function renderMessages(chat) {
  const list = $("messages");
  const sc = $("messages-scroll");
  const nearBottom = sc.scrollHeight - sc.scrollTop - sc.clientHeight < 60;
  const items = [];
  if (chat.messages) {
    const seqs = [...chat.messages.keys()].sort((a, b) => a - b);
    for (const seq of seqs) items.push(["s" + seq, chat.messages.get(seq), false]);
  }
  for (const p of chat.pending.values()) items.push(["p" + p.cmid, p, true]);
  const wanted = new Set(items.map((i) => i[0]));
  for (const [key, el] of view.els) {
    if (!wanted.has(key)) {
      view.observer?.unobserve(el);
      el.remove();
      view.els.delete(key);
    }
  }
  let prev = null;
  for (const [key, m, pending] of items) {
    let el = view.els.get(key);
    if (!el) {
      el = messageEl(chat, m, pending);
      view.els.set(key, el);
    }
    updateMessageEl(chat, el, m, pending);
    if (!pending && m.sender_id !== me() && !el.dataset.observed) {
      el.dataset.observed = "1";
      view.observer?.observe(el);
    }
    const next = prev ? prev.nextSibling : list.firstChild;
    if (el !== next) list.insertBefore(el, next);
    prev = el;
  }
  const older = $("load-older");
  older.hidden = !chat.messages || chat.oldestSeq <= 1;
  older.disabled = chat.loadingOlder;
  older.textContent = chat.loadingOlder ? "Loading…" : "Load older messages";
  if (view.stickToBottom || nearBottom) sc.scrollTop = sc.scrollHeight;
  view.stickToBottom = false;
}

function renderChatView() {
  const chat = openChat();
  $("chat-placeholder").hidden = !!chat;
  $("chat-view").hidden = !chat;
  $("workspace").classList.toggle("chat-open", !!chat);
  if (!chat) return;
  $("chat-title").textContent = chatTitle(chat);
  const members = [...chat.members.values()].sort((a, b) => (a.role === "owner" ? -1 : 0) - (b.role === "owner" ? -1 : 0) || userName(a.user_id).localeCompare(userName(b.user_id)));
  const onlineCount = members.filter((m) => isOnline(m.user_id)).length;
  const peer = chat.type === "private" ? peerOf(chat) : null;
  $("chat-subtitle").textContent =
    peer !== null ? (isOnline(peer) ? "online" : "offline") : `${members.length} member${members.length === 1 ? "" : "s"}, ${onlineCount} online`;
  // Online members first; a big group shows a dozen and a count.
  const strip = [...members].sort((a, b) => isOnline(b.user_id) - isOnline(a.user_id));
  const STRIP_MAX = 12;
  const items = strip.slice(0, STRIP_MAX).map((m) => {
    const on = isOnline(m.user_id);
    return h(
      "li",
      { class: "member", dataset: { userId: m.user_id, online: String(on) } },
      presenceDot(m.user_id),
      m.user_id === me() ? `${userName(m.user_id)} (you)` : userName(m.user_id),
      h("span", { class: "visually-hidden" }, on ? ", online" : ", offline"),
    );
  });
  if (strip.length > STRIP_MAX) items.push(h("li", { class: "member more" }, `and ${strip.length - STRIP_MAX} more`));
  $("member-strip").replaceChildren(...items);
  renderMessages(chat);
  ui.renderTyping(chat);
  if (membersDialog.open) renderMembersDialog();
}

// --- live region and status ------------------------------------------------------

function announce(text, alsoStatus = false) {
  const live = $("live");
  live.append(h("p", {}, text));
  while (live.childElementCount > 5) live.firstElementChild.remove();
  if (alsoStatus) showStatus("info", text);
}

let statusTimer = 0;
function showStatus(kind, text) {
  const el = $("conn-status");
  clearTimeout(statusTimer);
  el.hidden = false;
  el.dataset.state = kind;
  el.textContent = text;
  // Then back to the connection's state ("waiting" has counted down meanwhile).
  statusTimer = setTimeout(() => setConnState(state.connState === "waiting" ? "connecting" : state.connState), 6000);
}

function setConnState(s, delay) {
  const el = $("conn-status");
  clearTimeout(statusTimer);
  state.connected = s === "open";
  state.connState = s;
  el.hidden = false;
  el.dataset.state = s;
  el.textContent = {
    open: "Connected",
    connecting: "Connecting…",
    waiting: `Connection lost. Reconnecting in ${Math.max(1, Math.round((delay ?? 0) / 1000))} s…`,
    offline: "Offline. Waiting for the network…",
    closed: "",
  }[s];
  el.hidden = s === "closed";
  render(); // this user's own presence dot follows the socket
}

// --- chats: open, close ------------------------------------------------------------

function openChat() {
  return state.openId === null ? null : (state.chats.get(state.openId) ?? null);
}

async function openChatById(id, { focus = true } = {}) {
  const chat = state.chats.get(id);
  if (!chat) return;
  if (state.openId !== id) {
    state.openId = id;
    sessionStorage.setItem(OPEN_KEY, String(id));
    view.reset(id);
    view.observer = new IntersectionObserver(onSeen, { root: $("messages-scroll"), threshold: 0 });
    $("composer-text").value = "";
    ui.reset();
  }
  render();
  if (focus) $("composer-text").focus();
  refreshPresence(chat);
  if (!chat.messages) {
    try {
      await loadHistory(chat);
    } catch (err) {
      showStatus("error", describeError(err));
    }
    view.stickToBottom = true;
    render();
  }
}

// jumpTo opens a chat at one of its messages (a search result): older
// pages are loaded until the message is in the view, then it is scrolled
// to and marked.
async function jumpTo(chatId, seq) {
  if (!state.chats.has(chatId)) await loadChat(chatId);
  const chat = state.chats.get(chatId);
  if (!chat) return;
  await openChatById(chatId, { focus: false });
  while (state.openId === chatId && chat.messages && seq < chat.oldestSeq && !chat.loadingOlder) {
    const before = chat.oldestSeq;
    await loadOlder();
    if (chat.oldestSeq === before) break; // the page failed; loadOlder said why
  }
  if (state.openId !== chatId) return;
  renderNow();
  const el = view.els.get("s" + seq);
  if (!el) return;
  for (const old of $("messages").querySelectorAll(".msg.found")) old.classList.remove("found");
  el.classList.add("found");
  el.scrollIntoView({ block: "center" });
}

function onSeen(entries) {
  for (const e of entries) {
    if (!e.isIntersecting) continue;
    const seq = Number(e.target.dataset.seq);
    if (seq > view.maxSeen) view.maxSeen = seq;
  }
  markRead();
}

function closeChat() {
  const id = state.openId;
  state.openId = null;
  sessionStorage.removeItem(OPEN_KEY);
  view.reset(null);
  render();
  if (id !== null) queueMicrotask(() => $("chat-list").querySelector(`.chat-item[data-chat-id="${id}"]`)?.focus());
}

// --- session -------------------------------------------------------------------------

// startSession shows the workspace for the stored login: the access token
// comes from a refresh (session.js: the refresh token is stored), so a
// reload, a new tab or a tab opened after the browser was closed all land
// here logged in.
async function startSession() {
  if (state.me || state.starting) return;
  const gen = ++state.gen; // signOut moves it: a start that outlived its session stops
  state.starting = true;
  try {
    await startSessionNow(gen);
  } finally {
    state.starting = false;
  }
}

async function startSessionNow(gen) {
  $("auth").hidden = true;
  $("workspace").hidden = false;
  $("account").hidden = false;
  let wait = 1000;
  for (;;) {
    try {
      const me = await api.me();
      if (gen !== state.gen) return;
      state.me = me;
      break;
    } catch (err) {
      if (gen !== state.gen || !login.active) return; // signed out
      setConnState("waiting", wait);
      await new Promise((r) => setTimeout(r, wait));
      wait = Math.min(wait * 2, 15000);
    }
  }
  $("me-name").textContent = state.me.name;
  try {
    await loadChats();
  } catch (err) {
    if (gen !== state.gen) return;
    showStatus("error", describeError(err));
  }
  if (gen !== state.gen || !login.session) return;
  startConnection();
  const last = Number(sessionStorage.getItem(OPEN_KEY));
  if (last && state.chats.has(last)) openChatById(last, { focus: false });
  render();
}

// startConnection opens the all-chats WebSocket (/ws) through the SDK,
// with the session's tokens: close 4501 (or a 401 at the handshake)
// refreshes the token and reconnects at once, 4401 ends the session (and
// so sends the page to the login form). Every chat resumes from where the
// chat list left it (its last message, by that message's revision), so
// nothing between that answer and the socket is missed. The connection
// has no view of the network, so the page pauses it on the browser's
// offline event (closing the socket rather than wait for a dead one to
// time out) and reconnects on the online event.
function startConnection() {
  const id = ++connId;
  const mine =
    (fn) =>
    (...args) => {
      if (id === connId) fn(...args);
    };
  const resume = new Map();
  for (const chat of state.chats.values()) resume.set(chat.id, { seq: chat.lastSeq, rev: chat.lastMessage?.rev ?? 0 });
  conn = login.session.start({
    resume,
    onMessage: mine((m) => onFrame({ type: "message.new", message: m })),
    onUpdate: mine((m) => onFrame({ type: "message.updated", message: m })),
    onTyping: mine((chatId, userId) => onFrame({ type: "typing", chat_id: chatId, user_id: userId })),
    onError: mine(onRefused),
    onFrame: mine(onFrame),
    onState: mine(onConnState),
    onClose: mine(onConnClosed),
  });
  if (!navigator.onLine) conn.pause();
  for (const chat of state.chats.values()) for (const p of chat.pending.values()) if (!p.failed && !p.sent) transmit(p);
}

// stopConnection closes the WebSocket; its callbacks say nothing more.
function stopConnection() {
  const c = conn;
  conn = null;
  connId++;
  c?.close();
}

function onConnState(s, err, retryInMs) {
  if (s === "connected") {
    setConnState("open");
    onConnected();
  } else if (s === "closed") {
    // onConnClosed says why
  } else if (!navigator.onLine) {
    setConnState("offline");
  } else if (s === "disconnected" && retryInMs > 0) {
    setConnState("waiting", retryInMs);
  } else {
    setConnState("connecting");
  }
}

// onConnClosed: the connection ended for good. 4401 and a refused refresh
// end the session too (the login form follows); anything else (a
// handshake refused for good, a close code that means stop) is said, and
// a reload tries again.
function onConnClosed(err) {
  conn = null; // its waiting sends fail (Retry is there for a new one)
  if (!login.session || login.session.ended) return;
  setConnState("closed");
  showStatus("error", `Disconnected (${err.message}). Reload the page to connect again.`);
}

// The browser's view of the network drives the connection's pauses.
function onOffline() {
  if (!conn) return;
  conn.pause();
  setConnState("offline");
}

function onOnline() {
  conn?.reconnect();
}

// logOut revokes this session on the server (POST /logout: every socket of
// it closes, on every replica); the socket goes first, so its 4401 brings
// no news here.
async function logOut() {
  const button = $("logout");
  button.disabled = true;
  stopConnection();
  await login.logout();
  button.disabled = false;
  signOut("You are logged out.");
}

function signOut(notice) {
  state.gen++;
  stopConnection();
  state.me = null;
  state.users.clear();
  state.chats.clear();
  state.online.clear();
  state.openId = null;
  state.everOpened = false;
  ui.clear();
  sessionStorage.removeItem(OPEN_KEY);
  view.reset(null);
  for (const d of document.querySelectorAll("dialog[open]")) d.close();
  $("chat-list").replaceChildren();
  $("workspace").hidden = true;
  $("account").hidden = true;
  $("conn-status").hidden = true;
  document.title = "WinDI Chat";
  showAuth("login", notice ?? "");
}

// deviceName names this browser in the device list: "Chrome on Linux".
function deviceName() {
  const ua = navigator.userAgent;
  const browser = /Edg\//.test(ua) ? "Edge" : /Firefox\//.test(ua) ? "Firefox" : /Chrome\//.test(ua) ? "Chrome" : /Safari\//.test(ua) ? "Safari" : "A browser";
  const os = /Android/.test(ua) ? "Android" : /iPhone|iPad/.test(ua) ? "iOS" : /Windows/.test(ua) ? "Windows" : /Mac OS X/.test(ua) ? "macOS" : /Linux/.test(ua) ? "Linux" : "";
  return os ? `${browser} on ${os}` : browser;
}

// --- auth forms ------------------------------------------------------------------------

function showAuth(which, notice = "") {
  $("auth").hidden = false;
  $("login-form").hidden = which !== "login";
  $("register-form").hidden = which !== "register";
  $("auth-title").textContent = which === "login" ? "Log in" : "Create an account";
  $("auth-notice").textContent = notice;
  $("login-error").textContent = "";
  $("register-error").textContent = "";
  (which === "login" ? ($("login-email").value ? $("login-password") : $("login-email")) : $("register-name")).focus();
}

async function submitLogin(ev) {
  ev.preventDefault();
  const email = $("login-email").value.trim();
  const password = $("login-password").value;
  const err = $("login-error");
  if (!email || !password) {
    err.textContent = "Enter your email and password.";
    return;
  }
  const button = ev.submitter ?? ev.target.querySelector("button[type=submit]");
  button.disabled = true;
  err.textContent = "";
  try {
    await login.login(email, password, deviceName());
    $("login-password").value = "";
    $("auth-notice").textContent = "";
    await startSession();
  } catch (e) {
    err.textContent = wrongPassword(e) ? "Wrong email or password." : describeError(e);
  } finally {
    button.disabled = false;
  }
}

async function submitRegister(ev) {
  ev.preventDefault();
  const name = $("register-name").value.trim();
  const email = $("register-email").value.trim();
  const password = $("register-password").value;
  const err = $("register-error");
  if (!name || !email || !password) {
    err.textContent = "Fill in your name, email and password.";
    return;
  }
  if (password.length < 8) {
    err.textContent = "The password needs at least 8 characters.";
    return;
  }
  const button = ev.submitter ?? ev.target.querySelector("button[type=submit]");
  button.disabled = true;
  err.textContent = "";
  try {
    await register(name, email, password);
    $("register-form").reset();
    $("login-email").value = email;
    showAuth("login", `Account created for ${email}. Log in to start chatting.`);
  } catch (e) {
    err.textContent = e instanceof ApiError && e.status === 409 ? "An account with this email already exists." : describeError(e);
  } finally {
    button.disabled = false;
  }
}

// --- dialogs -----------------------------------------------------------------------------

// searcher wires a search box to GET /users?q= with a short debounce and
// calls show(users) with the matches (the current user left out), or
// show(null) while the box is empty: there is no listing of everyone.
function searcher(input, show, errEl) {
  let timer = 0;
  let seq = 0;
  const run = async () => {
    const q = input.value.trim();
    const mine = ++seq;
    if (!q) {
      errEl.textContent = "";
      show(null);
      return;
    }
    try {
      const users = await api.searchUsers(q, 20);
      if (mine !== seq) return;
      rememberUsers(users);
      errEl.textContent = "";
      show(users.filter((u) => u.id !== me()));
    } catch (e) {
      if (mine === seq) errEl.textContent = describeError(e);
    }
  };
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(run, 200);
  });
  return run;
}

// Names match by prefix, emails only whole: nobody can list everyone's.
const SEARCH_HINT = "Type the beginning of a name, or a whole email address.";

const privateDialog = $("private-dialog");
const privateSearch = searcher(
  $("private-search"),
  (users) => {
    $("private-results").replaceChildren(
      ...(users === null
        ? [h("li", { class: "empty" }, SEARCH_HINT)]
        : users.length
        ? users.map((u) =>
            h("li", {}, h("button", { type: "button", class: "result", dataset: { userId: u.id }, onclick: () => startPrivate(u.id) }, h("span", { class: "result-name" }, u.name))),
          )
        : [h("li", { class: "empty" }, "Nobody found.")]),
    );
  },
  $("private-error"),
);

async function startPrivate(userId) {
  try {
    const chat = mergeChat(await api.openPrivate(userId));
    privateDialog.close();
    await openChatById(chat.id);
  } catch (e) {
    $("private-error").textContent = describeError(e);
  }
}

const groupDialog = $("group-dialog");
const picked = new Map();
function renderPicked() {
  $("group-picked").textContent = picked.size ? ["you", ...[...picked.values()].map((u) => u.name)].join(", ") : "only you";
}
let groupResults = [];
function renderGroupResults() {
  $("group-results").replaceChildren(
    ...(groupResults === null
      ? [h("li", { class: "empty" }, SEARCH_HINT)]
      : groupResults.length
      ? groupResults.map((u) => {
          const id = `pick-${u.id}`;
          return h(
            "li",
            {},
            h("input", {
              type: "checkbox",
              id,
              checked: picked.has(u.id),
              dataset: { userId: u.id },
              onchange: (ev) => {
                if (ev.target.checked) picked.set(u.id, u);
                else picked.delete(u.id);
                renderPicked();
              },
            }),
            h("label", { for: id }, h("span", { class: "result-name" }, u.name)),
          );
        })
      : [h("li", { class: "empty" }, "Nobody found.")]),
  );
}
const groupSearch = searcher(
  $("group-search"),
  (users) => {
    groupResults = users;
    renderGroupResults();
  },
  $("group-error"),
);

async function submitGroup(ev) {
  ev.preventDefault();
  const name = $("group-name").value.trim();
  if (!name) {
    $("group-error").textContent = "Give the group a name.";
    $("group-name").focus();
    return;
  }
  const button = ev.submitter ?? ev.target.querySelector("button[type=submit]");
  button.disabled = true;
  try {
    const chat = mergeChat(await api.createGroup(name, [...picked.keys()]));
    groupDialog.close();
    await openChatById(chat.id);
  } catch (e) {
    $("group-error").textContent = describeError(e);
  } finally {
    button.disabled = false;
  }
}

const membersDialog = $("members-dialog");
let memberResults = [];
function renderMembersDialog() {
  const chat = openChat();
  if (!chat) {
    membersDialog.close();
    return;
  }
  const owner = isOwner(chat) && chat.type === "group";
  $("members-title").textContent = `Members of ${chatTitle(chat)}`;
  const members = [...chat.members.values()].sort((a, b) => userName(a.user_id).localeCompare(userName(b.user_id)));
  $("members-list").replaceChildren(
    ...members.map((m) => {
      const self = m.user_id === me();
      let action = null;
      if (chat.type === "group" && m.role !== "owner" && (owner || self)) {
        const label = self ? "Leave group" : `Remove ${userName(m.user_id)}`;
        action = h("button", { type: "button", class: "btn btn-danger", onclick: () => removeMember(chat, m.user_id) }, self ? "Leave" : "Remove", h("span", { class: "visually-hidden" }, self ? " the group" : ` ${userName(m.user_id)}`));
        action.setAttribute("aria-label", label);
      }
      return h(
        "li",
        { class: "member-row", dataset: { userId: m.user_id, online: String(isOnline(m.user_id)) } },
        presenceDot(m.user_id),
        h("span", { class: "member-name" }, self ? `${userName(m.user_id)} (you)` : userName(m.user_id)),
        h("span", { class: "role" }, m.role),
        action,
      );
    }),
  );
  $("members-add").hidden = !owner;
  if (owner) {
    const candidates = memberResults.filter((u) => !chat.members.has(u.id));
    $("members-results").replaceChildren(
      ...candidates.map((u) =>
        h("li", {}, h("span", { class: "result-name" }, u.name), h("button", { type: "button", class: "btn", "aria-label": `Add ${u.name}`, onclick: () => addMember(chat, u.id) }, "Add")),
      ),
    );
  }
}
const membersSearch = searcher(
  $("members-search"),
  (users) => {
    memberResults = users ?? [];
    renderMembersDialog();
  },
  $("members-error"),
);

async function addMember(chat, userId) {
  try {
    await api.addMember(chat.id, userId);
    $("members-error").textContent = "";
    await loadChat(chat.id);
    $("members-search").focus();
  } catch (e) {
    $("members-error").textContent = describeError(e);
  }
}

async function removeMember(chat, userId) {
  try {
    await api.removeMember(chat.id, userId);
    $("members-error").textContent = "";
    if (userId === me()) {
      membersDialog.close();
      forgetChat(chat.id, `You left ${chatTitle(chat)}.`);
      return;
    }
    await loadChat(chat.id);
  } catch (e) {
    $("members-error").textContent = describeError(e);
  }
}

// --- wiring ------------------------------------------------------------------------------

function init() {
  $("login-form").addEventListener("submit", submitLogin);
  $("register-form").addEventListener("submit", submitRegister);
  $("show-register").addEventListener("click", () => showAuth("register"));
  $("show-login").addEventListener("click", () => showAuth("login"));
  $("logout").addEventListener("click", logOut);

  $("composer").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const box = $("composer-text");
    if (ui.submit(box.value)) box.value = "";
    box.focus();
  });
  $("composer-text").addEventListener("keydown", (ev) => {
    if (ev.key === "Enter" && !ev.shiftKey && !ev.isComposing) {
      ev.preventDefault();
      $("composer").requestSubmit();
    } else if (ev.key === "Escape" && ui.cancel()) {
      ev.preventDefault();
    }
  });
  $("composer-text").addEventListener("input", (ev) => ui.typed(ev.target.value));
  $("load-older").addEventListener("click", loadOlder);
  $("back").addEventListener("click", closeChat);
  document.addEventListener("visibilitychange", () => {
    // Back in view with the connection waiting for its backoff: now.
    if (document.visibilityState === "visible" && navigator.onLine && conn?.state === "disconnected") conn.reconnect();
    markRead();
    render();
  });
  window.addEventListener("offline", onOffline);
  window.addEventListener("online", onOnline);

  $("new-private").addEventListener("click", () => {
    $("private-search").value = "";
    $("private-results").replaceChildren();
    $("private-error").textContent = "";
    privateDialog.showModal();
    privateSearch();
  });
  $("private-cancel").addEventListener("click", () => privateDialog.close());
  $("private-search").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault();
    $("private-results").querySelector("button.result")?.click();
  });

  $("new-group").addEventListener("click", () => {
    $("group-form").reset();
    picked.clear();
    groupResults = [];
    renderPicked();
    $("group-results").replaceChildren();
    $("group-error").textContent = "";
    groupDialog.showModal();
    groupSearch();
  });
  $("group-form").addEventListener("submit", submitGroup);
  $("group-cancel").addEventListener("click", () => groupDialog.close());
  $("group-search").addEventListener("keydown", (ev) => {
    if (ev.key !== "Enter") return;
    ev.preventDefault(); // Enter picks the first match instead of submitting
    const box = $("group-results").querySelector("input[type=checkbox]");
    if (box) box.click();
  });

  $("show-members").addEventListener("click", () => {
    $("members-search").value = "";
    $("members-error").textContent = "";
    memberResults = [];
    renderMembersDialog();
    membersDialog.showModal();
    const chat = openChat();
    if (chat && isOwner(chat) && chat.type === "group") membersSearch();
  });
  $("members-close").addEventListener("click", () => membersDialog.close());

  const openSearch = setupSearch({
    api,
    h,
    $,
    describeError,
    formatTime,
    userName,
    chatTitle: (id) => (state.chats.has(id) ? chatTitle(state.chats.get(id)) : `Chat #${id}`),
    openChatId: () => state.openId,
    jumpTo,
  });
  $("open-search").addEventListener("click", () => openSearch());
  $("search-chat").addEventListener("click", () => openSearch({ inChat: true }));

  const openAccount = setupAccount({
    api,
    h,
    $,
    describeError,
    formatTime,
    me: () => state.me,
    onRenamed: (user) => {
      state.me = user;
      $("me-name").textContent = user.name;
      render();
    },
  });
  $("open-account").addEventListener("click", () => openAccount());

  if (login.active) startSession();
  else showAuth("login");
}

init();
