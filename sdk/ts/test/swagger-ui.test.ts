// Swagger UI at /docs in headless Chromium, against a running server
// (WINDI_URL): the page loads from the server alone, Authorize with the
// OAuth2 password flow works, and Try it out on GET /users/me answers 200.
import assert from "node:assert/strict";
import { randomUUID } from "node:crypto";
import { mkdirSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { after, before, test } from "node:test";

import { chromium, type Browser, type Page } from "playwright-core";

const BASE = process.env.WINDI_URL ?? "";
if (!BASE) throw new Error("WINDI_URL is not set: start a server and point WINDI_URL at it");
const CHROMIUM = process.env.CHROMIUM ?? "/usr/bin/chromium";
const SCREENSHOT = resolve(process.env.WINDI_SCREENSHOT ?? "../../.ci/out/swagger-ui.png");
const origin = new URL(BASE).origin;

let browser: Browser;
let page: Page;
const problems: string[] = [];
const email = `swagger-${randomUUID().slice(0, 8)}@example.com`;
const password = `pw-${randomUUID()}`;

const isFavicon = (url: string) => /\/favicon[^/]*$/.test(new URL(url).pathname);

before(async () => {
  const res = await fetch(new URL("/register", BASE), {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ name: "Swagger User", email, password }),
  });
  assert.equal(res.status, 201, `register: ${await res.text()}`);

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
  page = await browser.newPage({ viewport: { width: 1280, height: 1000 } });
  page.setDefaultTimeout(30_000); // two cores, often busy with other CI steps
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const url = msg.location().url;
    if (url && isFavicon(url)) return;
    problems.push(`console error: ${msg.text()} (${url})`);
  });
  page.on("pageerror", (err) => problems.push(`page error: ${err.message}`));
  page.on("request", (req) => {
    const u = new URL(req.url());
    if (u.protocol === "data:" || u.protocol === "blob:") return;
    if (u.origin !== origin) problems.push(`request to another host: ${req.url()}`);
  });
  page.on("requestfailed", (req) => {
    if (!isFavicon(req.url())) problems.push(`request failed: ${req.url()}: ${req.failure()?.errorText}`);
  });
  page.on("response", (res) => {
    if (res.status() >= 400 && !isFavicon(res.url())) problems.push(`HTTP ${res.status()} for ${res.url()}`);
  });
});

after(async () => {
  await browser?.close();
});

test("Swagger UI lists the operations from /openapi.yaml", async () => {
  const t0 = Date.now();
  const res = await page.goto(new URL("/docs", BASE).toString(), { waitUntil: "load" });
  assert.equal(res?.status(), 200);
  const t1 = Date.now();
  await page.locator(".opblock").first().waitFor();
  console.log(`page loaded in ${t1 - t0} ms, operations shown after ${Date.now() - t0} ms`);
  assert.equal(await page.locator(".info .title").first().textContent().then((t) => t?.includes("WinDI Chat API")), true);
  const paths = await page.locator(".opblock-summary-path").evaluateAll((els) => els.map((e) => e.getAttribute("data-path")));
  for (const want of ["/register", "/login", "/users/me", "/chats", "/chats/{chat_id}/messages", "/history/{chat_id}"]) {
    assert.ok(paths.includes(want), `operation ${want} not listed; have ${paths.join(", ")}`);
  }
  assert.deepEqual(problems, []);
});

test("Authorize with the OAuth2 password flow, then Try it out on GET /users/me", async () => {
  await page.locator(".scheme-container button.authorize").click();
  const dialog = page.locator(".dialog-ux .modal-ux");
  await dialog.waitFor();
  // The container keeps its scheme name; its inputs go once authorized.
  const oauth = dialog.locator(".auth-container").filter({ hasText: "oauth2Password" });
  await oauth.locator("#oauth_username").fill(email);
  await oauth.locator("#oauth_password").fill(password);
  const token = page.waitForResponse((r) => new URL(r.url()).pathname === "/login" && r.request().method() === "POST");
  await oauth.locator("button.authorize").click();
  const login = await token;
  assert.equal(login.status(), 200, `POST /login from Swagger UI: ${await login.text()}`);
  // Authorized: the dialog says so and offers Logout (aria-label "Remove
  // authorization") instead of Authorize.
  await oauth.locator("h6", { hasText: "Authorized" }).waitFor();
  await oauth.locator("button", { hasText: "Logout" }).waitFor();
  assert.equal(await oauth.locator(".errors").count(), 0, "the dialog shows an error");
  await dialog.locator("button.btn-done").first().click();
  await dialog.waitFor({ state: "detached" });
  await page.locator(".scheme-container button.authorize.locked").waitFor();

  const op = page.locator("#operations-users-getMe");
  await op.locator(".opblock-summary").first().click();
  await op.locator("button.try-out__btn").click();
  const me = page.waitForResponse((r) => new URL(r.url()).pathname === "/users/me");
  await op.locator("button.execute").click();
  const meRes = await me;
  assert.equal(meRes.status(), 200);
  assert.match((await meRes.request().headerValue("authorization")) ?? "", /^Bearer \S+/);

  const live = op.locator(".live-responses-table .response");
  await live.first().waitFor();
  assert.equal((await live.locator(".response-col_status").first().textContent())?.trim(), "200");
  const body = await live.locator(".response-col_description").first().textContent();
  assert.ok(body?.includes(email), `the response body shown lacks ${email}: ${body}`);

  // The page from its top (title, Authorize locked) down to the live
  // response of GET /users/me.
  const box = await live.first().boundingBox();
  assert.ok(box);
  const scroll = await page.evaluate(() => window.scrollY);
  mkdirSync(dirname(SCREENSHOT), { recursive: true });
  await page.screenshot({
    path: SCREENSHOT,
    fullPage: true,
    clip: { x: 0, y: 0, width: 1280, height: Math.ceil(box.y + scroll + box.height + 24) },
  });
  console.log(`screenshot: ${SCREENSHOT}`);
  assert.deepEqual(problems, []);
});

test("the authorization persists across a reload (persistAuthorization)", async () => {
  await page.reload({ waitUntil: "load" });
  await page.locator(".opblock").first().waitFor();
  await page.locator(".scheme-container button.authorize.locked").waitFor();
  assert.deepEqual(problems, []);
});
