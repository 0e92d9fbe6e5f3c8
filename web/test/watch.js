// Page watchers shared by the browser tests: every console error, page
// error, request to another host, failed request or HTTP error becomes a
// line in problems, unless expected names it ("<who> <status> <path>").
export function watch(page, who, origin, problems, expected = new Set()) {
  page.on("console", (msg) => {
    if (msg.type() !== "error") return;
    const text = msg.text();
    if (/status of (\d+)/.test(text) && [...expected].some((e) => e.startsWith(`${who} ${text.match(/status of (\d+)/)[1]} `))) return;
    problems.push(`${who}: console error: ${text} (${msg.location().url})`);
  });
  page.on("pageerror", (err) => problems.push(`${who}: page error: ${err.message}`));
  page.on("request", (req) => {
    const u = new URL(req.url());
    if (u.protocol === "data:" || u.protocol === "blob:") return;
    if (u.origin !== origin && u.origin !== origin.replace(/^http/, "ws")) problems.push(`${who}: request to another host: ${req.url()}`);
  });
  page.on("requestfailed", (req) => {
    const why = req.failure()?.errorText ?? "";
    if (why !== "net::ERR_ABORTED") problems.push(`${who}: request failed: ${req.url()}: ${why}`);
  });
  page.on("response", (res) => {
    if (res.status() < 400) return;
    if (expected.has(`${who} ${res.status()} ${new URL(res.url()).pathname}`)) return;
    problems.push(`${who}: HTTP ${res.status()} for ${res.url()}`);
  });
}
