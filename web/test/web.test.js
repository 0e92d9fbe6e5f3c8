// The web client (GET /) in headless Chromium, two users on two replicas:
// Alice's browser talks to the first server of WINDI_WEB_URLS, Bob's (a
// 390×844 phone viewport) to the second; Redis carries everything between
// them. Both register and log in through the UI, Alice creates a group with
// Bob, they talk both ways, read ticks turn ✓✓, Bob's network drops and
// comes back (nothing lost or repeated), they reply, react, edit, delete
// and see each other type, and what Alice changes while Bob is offline
// reaches him when he is back (resume by revision), Alice adds and removes a member,
// opens a private chat and pages back through its history, both search
// messages (a hit opens its chat at the message), Alice reloads, and sees
// Bob go offline when he closes his page. No console errors anywhere.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync, readFileSync } from "node:fs";
import { join, resolve } from "node:path";
import { after, before, test } from "node:test";

import { chromium } from "playwright-core";
import { watch as watchPage } from "./watch.js";

const URLS = (process.env.WINDI_WEB_URLS ?? process.env.WINDI_URL ?? "").split(",").filter(Boolean);
if (!URLS.length) throw new Error("set WINDI_WEB_URLS (two servers, comma separated) or WINDI_URL");
const [URL_A, URL_B = URL_A] = URLS;
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SHOTS = resolve(process.env.WINDI_SCREENSHOT_DIR ?? "../../.ci/out");
mkdirSync(SHOTS, { recursive: true });

const run = randomUUID().slice(0, 8);
const user = (name) => ({
  name: `${name} ${run}`,
  email: `${name.toLowerCase()}-${run}@example.com`,
  password: `pw-${name.toLowerCase()}-${randomUUID()}`,
});
const alice = user("Alice");
const bob = user("Bob");
const carol = user("Carol");
const groupName = `Weekend plans ${run}`;

let browser;
const problems = [];
let A; // Alice: { context, page }
let B; // Bob


async function openBrowser(base, viewport, who) {
  const context = await browser.newContext({ baseURL: base, viewport, deviceScaleFactor: 1, locale: "en-GB", timezoneId: "UTC" });
  const page = await context.newPage();
  page.setDefaultTimeout(15_000);
  watchPage(page, who, new URL(base).origin, problems);
  return { context, page, base, who };
}

async function shot(page, name) {
  await page.evaluate(() => document.activeElement?.blur()); // no focus ring in the picture
  await page.screenshot({ path: join(SHOTS, `web-${name}.png`) });
}

// step is test() that saves both pages' screenshots when it fails.
function step(name, fn) {
  test(name, async () => {
    try {
      await fn();
    } catch (err) {
      for (const [who, p] of [["alice", A?.page], ["bob", B?.page]]) {
        if (p && !p.isClosed()) await p.screenshot({ path: join(SHOTS, `web-failed-${who}.png`) }).catch(() => {});
      }
      throw err;
    }
  });
}

// overview puts Alice's desktop and Bob's phone side by side (the README
// screenshot), from the two screenshots just taken.
async function overview() {
  const context = await browser.newContext({ viewport: { width: 1742, height: 900 }, deviceScaleFactor: 1 });
  const page = await context.newPage();
  const img = (f) => `data:image/png;base64,${readFileSync(join(SHOTS, f)).toString("base64")}`;
  const fig = (src, caption) =>
    `<figure style="margin:0"><img src="${src}" style="display:block;border-radius:8px;box-shadow:0 4px 20px rgb(0 0 0 / .18)">` +
    `<figcaption style="margin-top:8px;text-align:center">${caption}</figcaption></figure>`;
  await page.setContent(
    `<body style="margin:0;padding:24px;background:#e3e8f0;display:flex;gap:24px;align-items:flex-start;font:15px system-ui,sans-serif;color:#334">` +
      fig(img("web-alice-group.png"), "Alice, 1280&times;800, on replica 1") +
      fig(img("web-bob-mobile-chat.png"), "Bob, 390&times;844, on replica 2") +
      `</body>`,
  );
  await page.screenshot({ path: join(SHOTS, "web-overview.png"), fullPage: true });
  await context.close();
}

function noProblems() {
  assert.deepEqual(problems, [], problems.join("\n"));
}

async function rest(base, method, path, { token, body, form } = {}) {
  const headers = {};
  if (token) headers.Authorization = `Bearer ${token}`;
  let payload;
  if (form) payload = new URLSearchParams(form);
  else if (body) {
    headers["Content-Type"] = "application/json";
    payload = JSON.stringify(body);
  }
  const res = await fetch(new URL(path, base), { method, headers, body: payload });
  const text = await res.text();
  assert.ok(res.ok, `${method} ${path}: ${res.status} ${text}`);
  return text ? JSON.parse(text) : null;
}

async function registerAndLogin({ page }, u) {
  await page.goto("/");
  await page.getByRole("heading", { name: "Log in" }).waitFor();
  await page.getByRole("button", { name: "Create an account" }).click();
  const form = page.locator("#register-form");
  await form.getByLabel("Name").fill(u.name);
  await form.getByLabel("Email").fill(u.email);
  await form.getByLabel("Password").fill(u.password);
  await form.getByRole("button", { name: "Create account" }).click();
  await page.getByText(`Account created for ${u.email}`).waitFor();

  const login = page.locator("#login-form");
  assert.equal(await login.getByLabel("Email").inputValue(), u.email, "the login form has the new email");
  await login.getByLabel("Password").fill(u.password);
  await login.getByLabel("Password").press("Enter"); // Enter submits
  await page.locator("#workspace").waitFor();
  await page.locator('#conn-status[data-state="open"]').waitFor();
  assert.equal(await page.locator("#me-name").textContent(), u.name);
  // The refresh token, not the access token, is kept (so the login outlives the tab).
  const kept = await page.evaluate(() => ({ local: { ...localStorage }, session: { ...sessionStorage } }));
  assert.ok(JSON.parse(kept.local["windi.session"] ?? "{}").refresh_token, "the refresh token is in localStorage");
  assert.doesNotMatch(JSON.stringify(kept), /eyJ/, "no JWT (access token) in any storage");
}

// msg finds a message bubble by its exact text.
const escape = (s) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
const msg = (page, text) => page.locator(".msg", { has: page.locator(".msg-text", { hasText: new RegExp(`^${escape(text)}$`) }) });

async function send(page, text) {
  const box = page.getByRole("textbox", { name: "Message" });
  await box.fill(text);
  await box.press("Enter");
  assert.equal(await box.inputValue(), "", "the box is cleared after sending");
}

async function seqsOnScreen(page) {
  return page.locator(".msg[data-seq]").evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
}

function assertContiguous(seqs, what) {
  for (let i = 1; i < seqs.length; i++) assert.equal(seqs[i], seqs[i - 1] + 1, `${what}: seqs ${seqs.join(",")}`);
}

before(async () => {
  browser = await chromium.launch({
    executablePath: CHROMIUM,
    headless: true,
    args: [
      "--headless",
      "--no-sandbox",
      "--disable-gpu",
      "--disable-quic",
      "--no-first-run",
      "--disable-background-networking",
      "--disable-component-update",
      "--disable-sync",
    ],
  });
  A = await openBrowser(URL_A, { width: 1280, height: 800 }, "alice");
  B = await openBrowser(URL_B, { width: 390, height: 844 }, "bob");
  console.log(`alice on ${URL_A}, bob on ${URL_B} (390×844)`);
});

after(async () => {
  await browser?.close();
});

step("both register and log in through the UI, each on a replica of its own", async () => {
  await Promise.all([registerAndLogin(A, alice), registerAndLogin(B, bob)]);
  const [ra, rb] = await Promise.all([fetch(new URL("/readyz", URL_A)), fetch(new URL("/readyz", URL_B))]);
  if (URL_A !== URL_B) assert.notEqual(ra.headers.get("x-windi-replica"), rb.headers.get("x-windi-replica"), "two different replicas");
  noProblems();
});

step("Alice creates a group with Bob; it appears in Bob's list live", async () => {
  const a = A.page;
  await a.getByRole("button", { name: "New group" }).click();
  const dlg = a.getByRole("dialog", { name: "New group" });
  await dlg.getByLabel("Group name").fill(groupName);
  await dlg.getByLabel("Add people").fill(bob.name);
  await dlg.getByRole("checkbox", { name: bob.name }).check();
  await dlg.getByText(`Members: you, ${bob.name}`).waitFor();
  await dlg.getByRole("button", { name: "Create group" }).click();
  await dlg.waitFor({ state: "hidden" });
  await a.locator("#chat-title", { hasText: groupName }).waitFor();
  await a.locator("#chat-subtitle", { hasText: "2 members" }).waitFor();

  // Bob's list gets it through member.added on his WebSocket.
  await B.page.locator(".chat-item", { hasText: groupName }).waitFor();
  noProblems();
});

step("messages go both ways live; ticks turn ✓✓ when the other reads", async () => {
  const a = A.page;
  const b = B.page;
  await send(a, "Hello Bob!");
  const hello = msg(a, "Hello Bob!");
  await hello.and(a.locator('[data-state="sent"]')).waitFor(); // acked, not read yet
  assert.equal(await hello.locator(".tick").getAttribute("aria-label"), "Sent");
  assert.equal((await hello.locator(".tick").textContent()).trim(), "\u2713");

  // Bob is on his chat list (phone layout): unread badge and last message.
  const item = b.locator(".chat-item", { hasText: groupName });
  await item.locator(".badge", { hasText: "1" }).waitFor();
  await item.getByText(`${alice.name}: Hello Bob!`).waitFor();
  await shot(b, "bob-mobile-list");

  await item.click();
  await b.locator("#chat-title", { hasText: groupName }).waitFor();
  assert.equal(await b.locator("#chat-list").isVisible(), false, "the chat list collapses on a phone");
  await msg(b, "Hello Bob!").and(b.locator(".msg.theirs")).waitFor();

  // Bob saw it: Alice's tick becomes ✓✓.
  await hello.and(a.locator('[data-state="read"]')).waitFor();
  assert.equal(await hello.locator(".tick").getAttribute("aria-label"), "Read by everyone");

  await send(b, "Hi Alice, count me in.");
  await msg(a, "Hi Alice, count me in.").and(a.locator(".msg.theirs")).waitFor();
  await a.locator("#live", { hasText: "Hi Alice, count me in." }).waitFor({ state: "attached" });
  // Alice has the chat open: Bob's message is read at once.
  await msg(b, "Hi Alice, count me in.").and(b.locator('[data-state="read"]')).waitFor();

  await send(a, "Saturday at 9?");
  await msg(b, "Saturday at 9?").waitFor();
  await send(b, "Perfect");
  await msg(a, "Perfect").waitFor();
  await msg(a, "Saturday at 9?").and(a.locator('[data-state="read"]')).waitFor();

  // Presence: each sees the other online in the member strip.
  await a.locator('#member-strip li[data-online="true"]', { hasText: bob.name }).waitFor();
  await b.locator('#member-strip li[data-online="true"]', { hasText: alice.name }).waitFor();

  assertContiguous(await seqsOnScreen(a), "alice");
  assertContiguous(await seqsOnScreen(b), "bob");
  const width = await b.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal scrolling at 390 px (scrollWidth ${width})`);
  await shot(a, "alice-group");
  await shot(b, "bob-mobile-chat");
  await overview();
  noProblems();
});

step("keyboard only: Tab order, Enter sends, Shift+Enter starts a new line", async () => {
  const a = A.page;
  const describe = () =>
    a.evaluate(() => {
      const el = document.activeElement;
      return el?.id || el?.getAttribute("aria-label") || el?.textContent.trim().slice(0, 40) || el?.tagName;
    });
  await a.getByRole("button", { name: "Log out" }).focus();
  const order = [];
  for (let i = 0; i < 10; i++) {
    await a.keyboard.press("Tab");
    order.push(await describe());
    if (order.at(-1) === "composer-text") break;
  }
  const want = ["new-private", "new-group", "open-search", groupName, "search-chat", "show-members", "messages-scroll", "composer-text"];
  let at = -1;
  for (const w of want) {
    const i = order.findIndex((o, j) => j > at && o.includes(w));
    assert.ok(i > at, `Tab order ${order.join(" > ")} lacks ${w} after position ${at}`);
    at = i;
  }
  await a.keyboard.type("Line one");
  await a.keyboard.press("Shift+Enter");
  await a.keyboard.type("line two");
  await a.keyboard.press("Enter");
  const sent = a.locator(".msg.mine .msg-text", { hasText: "Line one" });
  await sent.waitFor();
  assert.equal(await sent.innerText(), "Line one\nline two");
  assert.equal(await a.evaluate(() => document.activeElement?.id), "composer-text", "focus stays in the box");
  await B.page.locator(".msg.theirs .msg-text", { hasText: "Line one" }).waitFor();
  noProblems();
});

step("Bob's network drops; he reconnects and resyncs without losing or repeating anything", async () => {
  const a = A.page;
  const b = B.page;
  await B.context.setOffline(true);
  await b.locator('#conn-status[data-state="offline"]').waitFor();
  // His only connection closed: Alice sees him go offline.
  await a.locator('#member-strip li[data-online="false"]', { hasText: bob.name }).waitFor();

  for (const t of ["While you were away 1", "While you were away 2", "While you were away 3"]) await send(a, t);
  await msg(a, "While you were away 3").and(a.locator('[data-state="sent"]')).waitFor();

  await B.context.setOffline(false);
  await b.locator('#conn-status[data-state="open"]').waitFor();
  for (const t of ["While you were away 1", "While you were away 2", "While you were away 3"]) await msg(b, t).waitFor();
  await a.locator('#member-strip li[data-online="true"]', { hasText: bob.name }).waitFor();
  await msg(a, "While you were away 3").and(a.locator('[data-state="read"]')).waitFor();

  // A moment for any duplicate to show up, then: each message once, in order.
  await b.waitForTimeout(500);
  const seqs = await seqsOnScreen(b);
  assert.equal(new Set(seqs).size, seqs.length, `duplicates in ${seqs}`);
  assertContiguous(seqs, "bob after the reconnect");
  assert.deepEqual(seqs, await seqsOnScreen(a), "both see the same messages");
  assert.equal(await b.locator(".msg").count(), seqs.length, "no pending leftovers");
  noProblems();
});

// actions opens a message's actions on page (its "⋯" button).
async function actions(page, text) {
  const m = msg(page, text);
  const more = m.getByRole("button", { name: "Message actions" });
  if ((await more.getAttribute("aria-expanded")) !== "true") await more.click();
  const group = m.getByRole("group", { name: "Actions", exact: true });
  await group.waitFor();
  return group;
}

step("replies: Bob answers on his phone; the quote shows on both sides and jumps to the original", async () => {
  const a = A.page;
  const b = B.page;
  await send(a, "Who brings the map?");
  await msg(b, "Who brings the map?").waitFor();
  const original = await msg(a, "Who brings the map?").getAttribute("data-seq");

  await (await actions(b, "Who brings the map?")).getByRole("button", { name: "Reply" }).click();
  const bar = b.locator("#compose-context");
  await bar.getByText(`Replying to ${alice.name}: Who brings the map?`).waitFor();
  assert.equal(await b.evaluate(() => document.activeElement?.id), "composer-text", "the box has the focus");
  await send(b, "I will");
  await bar.waitFor({ state: "hidden" });

  for (const page of [a, b]) {
    const quote = msg(page, "I will").locator(".msg-quote");
    await quote.waitFor();
    assert.equal(await quote.getAttribute("data-reply-to"), original, "the quote names the original's seq");
    assert.equal(await quote.locator(".msg-quote-sender").textContent(), alice.name);
    assert.equal(await quote.locator(".msg-quote-text").textContent(), "Who brings the map?");
  }
  // Escape leaves reply mode.
  await (await actions(b, "Who brings the map?")).getByRole("button", { name: "Reply" }).click();
  await bar.waitFor();
  await b.getByRole("textbox", { name: "Message" }).press("Escape");
  await bar.waitFor({ state: "hidden" });

  // Clicking the quote shows the original, marked.
  await msg(a, "I will").locator(".msg-quote").click();
  await a.locator(`.msg.found[data-seq="${original}"]`).waitFor();
  noProblems();
});

step("reactions: counts and who reacted, live on the other replica", async () => {
  const a = A.page;
  const b = B.page;
  await (await actions(a, "I will")).getByRole("button", { name: "React with 👍" }).click();
  const chipB = msg(b, "I will").locator(".reaction", { hasText: "👍" });
  await chipB.filter({ hasText: "👍 1" }).waitFor();
  assert.equal(await chipB.getAttribute("title"), alice.name, "who reacted");
  assert.equal(await chipB.getAttribute("aria-pressed"), "false", "not Bob's");

  await chipB.click(); // Bob adds his
  const chipA = msg(a, "I will").locator(".reaction", { hasText: "👍" });
  await chipA.filter({ hasText: "👍 2" }).waitFor();
  assert.equal(await chipA.getAttribute("title"), `${alice.name}, ${bob.name}`);
  assert.equal(await chipA.getAttribute("aria-label"), `👍 2: ${alice.name}, ${bob.name}`);
  await chipB.filter({ hasText: "👍 2" }).waitFor();
  assert.equal(await chipB.getAttribute("aria-pressed"), "true");

  await chipB.click(); // and takes it back
  await chipA.filter({ hasText: "👍 1" }).waitFor();
  assert.equal(await chipA.getAttribute("title"), alice.name);
  noProblems();
});

step("edit: Alice edits her message; Bob sees the new text, marked edited", async () => {
  const a = A.page;
  const b = B.page;
  await send(a, "Meet at 8");
  await msg(b, "Meet at 8").waitFor();
  const seq = await msg(a, "Meet at 8").getAttribute("data-seq");
  assert.equal(await (await actions(b, "Meet at 8")).getByRole("button", { name: "Edit" }).count(), 0, "Bob cannot edit Alice's message");
  await b.keyboard.press("Escape");

  await (await actions(a, "Meet at 8")).getByRole("button", { name: "Edit" }).click();
  await a.locator("#compose-context").getByText("Editing your message").waitFor();
  const box = a.getByRole("textbox", { name: "Message" });
  assert.equal(await box.inputValue(), "Meet at 8", "the box holds the text to edit");
  await box.fill("Meet at 8:30");
  await box.press("Enter");
  for (const page of [a, b]) {
    const edited = page.locator(`.msg[data-seq="${seq}"]`);
    await edited.locator(".msg-text", { hasText: /^Meet at 8:30$/ }).waitFor();
    await edited.locator(".edited").waitFor();
  }
  assert.equal(await b.locator(".msg-text", { hasText: /^Meet at 8$/ }).count(), 0, "no copy of the old text");
  noProblems();
});

step("delete: Bob deletes his message, the owner deletes one of Bob's; both see tombstones", async () => {
  const a = A.page;
  const b = B.page;
  await send(b, "Oops, wrong chat");
  await send(b, "Alice, delete this one");
  await msg(a, "Alice, delete this one").waitFor();
  const own = await msg(b, "Oops, wrong chat").getAttribute("data-seq");
  const other = await msg(b, "Alice, delete this one").getAttribute("data-seq");

  // Bob may delete only his own.
  const onAlices = await actions(b, "Meet at 8:30");
  assert.equal(await onAlices.getByRole("button", { name: "Delete" }).count(), 0, "Bob may not delete Alice's message");
  await b.keyboard.press("Escape");
  b.once("dialog", (d) => d.accept());
  await (await actions(b, "Oops, wrong chat")).getByRole("button", { name: "Delete" }).click();
  // Alice owns the group: she may delete Bob's.
  a.once("dialog", (d) => d.accept());
  await (await actions(a, "Alice, delete this one")).getByRole("button", { name: "Delete" }).click();

  for (const page of [a, b]) {
    for (const seq of [own, other]) {
      const tomb = page.locator(`.msg.deleted[data-seq="${seq}"]`);
      await tomb.waitFor();
      assert.equal(await tomb.locator(".msg-text").textContent(), "message deleted");
      assert.equal(await tomb.locator(".reaction").count(), 0);
    }
    assertContiguous(await seqsOnScreen(page), "after the deletes");
  }
  assert.equal(await msg(a, "Oops, wrong chat").count(), 0);
  noProblems();
});

step("typing: each sees the other type, never themselves; the line goes after about 5 s", async () => {
  const a = A.page;
  const b = B.page;
  // Bob types for about 3 s (a typing frame every 2 s at most; his send in
  // an earlier step may hold the first one back).
  const bbox = b.getByRole("textbox", { name: "Message" });
  const line = a.locator("#typing");
  await bbox.pressSequentially("I am typing a long answer", { delay: 120 });
  await line.getByText(`${bob.name} is typing…`).waitFor();
  assert.equal((await b.locator("#typing").textContent()).trim(), "", "Bob does not see himself typing");
  const stopped = Date.now();
  await line.getByText(`${bob.name} is typing…`).waitFor({ state: "detached", timeout: 10_000 });
  const gone = (Date.now() - stopped) / 1000;
  assert.ok(gone > 2.5 && gone < 8, `the typing line went ${gone} s after Bob stopped, want 3..5 s (5 s after his last frame)`);
  await bbox.fill("");

  await a.getByRole("textbox", { name: "Message" }).pressSequentially("Typing back", { delay: 30 });
  await b.locator("#typing").getByText(`${alice.name} is typing…`).waitFor();
  await send(a, "Typing back");
  // Her message ends it at once.
  await b.locator("#typing").getByText(`${alice.name} is typing…`).waitFor({ state: "detached", timeout: 2_000 });
  noProblems();
});

step("Bob is offline while Alice edits, reacts and deletes; back online, he has every change once", async () => {
  const a = A.page;
  const b = B.page;
  await B.context.setOffline(true);
  await b.locator('#conn-status[data-state="offline"]').waitFor();
  const map = await msg(a, "Who brings the map?").getAttribute("data-seq");

  await (await actions(a, "Meet at 8:30")).getByRole("button", { name: "Edit" }).click();
  const box = a.getByRole("textbox", { name: "Message" });
  await box.fill("Meet at 9");
  await box.press("Enter");
  await msg(a, "Meet at 9").waitFor();
  await (await actions(a, "I will")).getByRole("button", { name: "React with 🎉" }).click();
  await msg(a, "I will").locator(".reaction", { hasText: "🎉 1" }).waitFor();
  a.once("dialog", (d) => d.accept());
  await (await actions(a, "Who brings the map?")).getByRole("button", { name: "Delete" }).click();
  await a.locator(`.msg.deleted[data-seq="${map}"]`).waitFor();
  await send(a, "Did you see my changes?");

  await B.context.setOffline(false);
  await b.locator('#conn-status[data-state="open"]').waitFor();
  await msg(b, "Did you see my changes?").waitFor();
  await msg(b, "Meet at 9").locator(".edited").waitFor();
  await msg(b, "I will").locator(".reaction", { hasText: "🎉 1" }).waitFor();
  await b.locator(`.msg.deleted[data-seq="${map}"]`).waitFor();
  await msg(b, "I will").locator(".msg-quote-text", { hasText: "message deleted" }).waitFor();
  await b.waitForTimeout(500); // time for a repeat to show up
  const seqs = await seqsOnScreen(b);
  assert.equal(new Set(seqs).size, seqs.length, `duplicates in ${seqs}`);
  assertContiguous(seqs, "bob after the changes");
  assert.deepEqual(seqs, await seqsOnScreen(a), "both see the same messages");
  assert.deepEqual(await msg(b, "I will").locator(".reaction").allTextContents(), ["👍 1", "🎉 1"], "Alice's 👍 from before and her 🎉");
  const width = await b.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal scrolling at 390 px (scrollWidth ${width})`);
  await shot(b, "bob-mobile-conversation");
  noProblems();
});

step("the owner adds and removes a member; everyone sees it", async () => {
  const a = A.page;
  const b = B.page;
  await rest(URL_A, "POST", "/register", { body: carol });

  await a.getByRole("button", { name: "Members" }).click();
  const dlg = a.getByRole("dialog", { name: `Members of ${groupName}` });
  await dlg.getByLabel("Add a member").fill(carol.name);
  await dlg.getByRole("button", { name: `Add ${carol.name}` }).click();
  await dlg.locator(".member-row", { hasText: carol.name }).waitFor();
  await b.locator("#member-strip li", { hasText: carol.name }).waitFor(); // Bob, on the other replica
  await b.getByText("3 members").waitFor();

  await dlg.getByRole("button", { name: `Remove ${carol.name}` }).click();
  await dlg.locator(".member-row", { hasText: carol.name }).waitFor({ state: "detached" });
  await b.locator("#member-strip li", { hasText: carol.name }).waitFor({ state: "detached" });
  await b.getByText("2 members").waitFor();
  // Bob is no owner: he may only leave, not remove Alice.
  await dlg.getByRole("button", { name: "Close" }).click();
  await b.getByRole("button", { name: "Members" }).click();
  const bdlg = b.getByRole("dialog", { name: `Members of ${groupName}` });
  assert.equal(await bdlg.getByRole("button", { name: /^Remove/ }).count(), 0);
  await bdlg.getByRole("button", { name: "Leave group" }).waitFor();
  await b.keyboard.press("Escape");
  await bdlg.waitFor({ state: "hidden" });
  noProblems();
});

step("a private chat from user search, with older history paged in", async () => {
  const a = A.page;
  // Bob has written 55 messages to Alice from another device (REST).
  const { access_token: token } = await rest(URL_B, "POST", "/login", { form: { username: bob.email, password: bob.password } });
  const [found] = await rest(URL_B, "GET", `/users?q=${encodeURIComponent(alice.email)}`, { token });
  const chat = await rest(URL_B, "POST", "/chats", { token, body: { type: "private", user_id: found.id } });
  for (let i = 1; i <= 55; i++) {
    await rest(URL_B, "POST", `/chats/${chat.id}/messages`, { token, body: { client_msg_id: `older-${i}`, text: `Older ${i}` } });
  }
  const item = a.locator(".chat-item", { hasText: bob.name });
  await item.locator(".badge", { hasText: "55" }).waitFor();

  await a.getByRole("button", { name: "New chat" }).click();
  const dlg = a.getByRole("dialog", { name: "New chat" });
  await dlg.getByLabel("Find a person by name or email").fill(bob.name.slice(0, 6));
  const result = dlg.getByRole("button", { name: bob.name });
  await result.waitFor();
  assert.equal(await dlg.locator(".result", { hasText: "@" }).count(), 0, "no email in the results");
  await result.click();
  await dlg.waitFor({ state: "hidden" });
  await a.locator("#chat-title", { hasText: bob.name }).waitFor();
  await msg(a, "Older 55").waitFor();
  assert.equal(await a.locator(".msg").count(), 50, "the newest 50 first");
  await a.getByRole("button", { name: "Load older messages" }).click();
  await msg(a, "Older 1").waitFor();
  assert.equal(await a.locator(".msg").count(), 55);
  assertContiguous(await seqsOnScreen(a), "private chat");
  await a.getByRole("button", { name: "Load older messages" }).waitFor({ state: "hidden" });
  await item.locator(".badge").waitFor({ state: "detached" }); // read
  await send(a, "Got them all");
  await msg(a, "Got them all").and(a.locator('[data-state="sent"], [data-state="read"]')).waitFor();

  // Back to the group for the rest.
  await a.locator(".chat-item", { hasText: groupName }).click();
  await a.locator("#chat-title", { hasText: groupName }).waitFor();
  noProblems();
});

step("search: prefixes in any case and script, across replicas and chats; a hit opens its chat at the message", async () => {
  const a = A.page;
  const b = B.page;
  await send(b, "Привет из Москвы, Алиса!");
  await msg(a, "Привет из Москвы, Алиса!").waitFor();

  // Alice (replica 1) finds Bob's message (replica 2) by two prefixes.
  await a.getByRole("button", { name: "Search messages" }).click();
  const dlg = a.getByRole("dialog", { name: "Search messages" });
  const box = dlg.getByLabel("Words, or their beginnings");
  await box.fill("прив МОСК");
  const hit = dlg.locator(".search-hit", { hasText: "Привет из Москвы" });
  await hit.waitFor();
  assert.equal(await dlg.locator(".search-hit").count(), 1);
  assert.deepEqual(await hit.locator("mark").allTextContents(), ["Привет", "Москвы"]);
  assert.match(await hit.innerText(), new RegExp(`${escape(groupName)}[\\s\\S]*${escape(bob.name)}`), "the hit names its chat and sender");

  // 55 older messages in the private chat, newest first, paged by 20.
  await box.fill("OLDER");
  await dlg.getByText("20+ messages found.").waitFor();
  await dlg.getByRole("button", { name: "More results" }).click();
  await dlg.getByText("40+ messages found.").waitFor();
  await dlg.getByRole("button", { name: "More results" }).click();
  await dlg.getByText("55 messages found.").waitFor();
  await dlg.getByRole("button", { name: "More results" }).waitFor({ state: "hidden" });
  const texts = await dlg.locator(".search-hit-text").allTextContents();
  assert.deepEqual(texts, Array.from({ length: 55 }, (_, i) => `${bob.name}: Older ${55 - i}`));

  // Punctuation is no syntax: it only separates words.
  await box.fill(`"older" & !(5*`);
  await dlg.getByText("7 messages found.").waitFor(); // Older 5 and 50…55
  await dlg.getByRole("button", { name: "Close" }).click();
  await dlg.waitFor({ state: "hidden" });

  // Only in this chat: the group does not hold the older messages.
  await a.getByRole("button", { name: "Search this chat" }).click();
  await dlg.getByLabel(`Only in ${groupName}`).waitFor();
  assert.equal(await dlg.getByLabel(`Only in ${groupName}`).isChecked(), true);
  await box.fill("older");
  await dlg.getByText("No messages found.").waitFor();
  await dlg.getByLabel(`Only in ${groupName}`).uncheck();
  await dlg.getByText("20+ messages found.").waitFor();
  await a.keyboard.press("Escape");
  await dlg.waitFor({ state: "hidden" });

  // Bob, on his phone, has never opened the private chat: a hit deep in
  // its history opens it there, older pages loaded on the way.
  await b.getByRole("button", { name: "Back to chats" }).click();
  await b.getByRole("button", { name: "Search messages" }).click();
  const bdlg = b.getByRole("dialog", { name: "Search messages" });
  await bdlg.getByLabel("Words, or their beginnings").fill("older 2");
  await bdlg.getByText("11 messages found.").waitFor(); // Older 2, 20…29
  await shot(b, "bob-mobile-search");
  await bdlg.locator(".search-hit", { has: b.locator(".search-hit-text", { hasText: /: Older 2$/ }) }).click();
  await bdlg.waitFor({ state: "hidden" });
  await b.locator("#chat-title", { hasText: alice.name }).waitFor();
  const found = b.locator(".msg.found");
  await found.waitFor();
  assert.equal(await found.locator(".msg-text").textContent(), "Older 2");
  const inView = await found.evaluate((el) => {
    const r = el.getBoundingClientRect();
    const s = document.getElementById("messages-scroll").getBoundingClientRect();
    return r.top >= s.top && r.bottom <= s.bottom;
  });
  assert.ok(inView, "the message found is scrolled into view");
  const seqs = await seqsOnScreen(b);
  assert.ok(seqs[0] <= 2, `older pages were loaded (first seq on screen ${seqs[0]})`);
  assertContiguous(seqs, "bob's private chat after the jump");
  const width = await b.evaluate(() => document.documentElement.scrollWidth);
  assert.ok(width <= 390, `no horizontal scrolling at 390 px (scrollWidth ${width})`);
  noProblems();
});

step("Alice reloads: still logged in, the open chat and its history are back", async () => {
  const a = A.page;
  await a.reload();
  await a.locator('#conn-status[data-state="open"]').waitFor();
  await a.locator("#chat-title", { hasText: groupName }).waitFor();
  for (const t of ["Hello Bob!", "Hi Alice, count me in.", "Saturday at 9?", "Perfect", "While you were away 3"]) await msg(a, t).waitFor();
  await msg(a, "Hello Bob!").and(a.locator('[data-state="read"]')).waitFor();
  assertContiguous(await seqsOnScreen(a), "alice after the reload");
  await a.locator('#member-strip li[data-online="true"]', { hasText: bob.name }).waitFor();
  await shot(a, "alice-reloaded");
  noProblems();
});

step("Bob closes his page: Alice's presence dot for him turns off", async () => {
  const a = A.page;
  await B.page.close();
  await a.locator('#member-strip li[data-online="false"]', { hasText: bob.name }).waitFor();
  await a.getByText("2 members, 1 online").waitFor();
  await shot(a, "alice-bob-offline");
  noProblems();
});
