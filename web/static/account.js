// The account dialog: the devices (sessions) logged in as this user, each
// with "Sign out" (DELETE /sessions/{id}: its sockets close with 4401 on
// every replica and its page goes to the login form), the user's name
// (PATCH /users/me) and the password (POST /users/me/password, which signs
// out every other device).

export function setupAccount(deps) {
  const { api, h, $, describeError, formatTime } = deps;
  const dialog = $("account-dialog");
  let loading = 0;

  async function loadDevices() {
    const mine = ++loading;
    const list = $("devices");
    try {
      const sessions = await api.sessions();
      if (mine !== loading) return;
      $("devices-error").textContent = "";
      // This device first, then the most recently used.
      sessions.sort((a, b) => Number(b.current) - Number(a.current) || Date.parse(b.last_used_at) - Date.parse(a.last_used_at));
      list.replaceChildren(...sessions.map(deviceRow));
    } catch (e) {
      if (mine === loading) $("devices-error").textContent = describeError(e);
    }
  }

  function deviceRow(s) {
    const name = s.device || "Unknown device";
    return h(
      "li",
      { class: "device", dataset: { sessionId: s.id, current: String(s.current) } },
      h(
        "div",
        { class: "device-text" },
        h("span", { class: "device-name" }, name),
        s.current ? h("span", { class: "this-device" }, "This device") : null,
        h(
          "span",
          { class: "device-times" },
          "Signed in ",
          h("time", { datetime: s.created_at }, formatTime(s.created_at)),
          ", last active ",
          h("time", { datetime: s.last_used_at }, formatTime(s.last_used_at)),
        ),
      ),
      s.current
        ? null
        : h("button", { type: "button", class: "btn btn-danger", "aria-label": `Sign out ${name}`, onclick: (ev) => signOutDevice(s, ev.currentTarget) }, "Sign out"),
    );
  }

  async function signOutDevice(s, button) {
    button.disabled = true;
    try {
      await api.revokeSession(s.id);
      notice(`${s.device || "The device"} is signed out.`);
    } catch (e) {
      // 404: it had ended already; the list below no longer has it.
      if (e.status !== 404) $("devices-error").textContent = describeError(e);
    }
    await loadDevices();
  }

  function notice(text) {
    $("account-notice").textContent = text;
  }

  async function rename(ev) {
    ev.preventDefault();
    const name = $("rename-name").value.trim();
    const err = $("rename-error");
    if (!name) {
      err.textContent = "Enter a name.";
      return;
    }
    const button = ev.submitter ?? ev.target.querySelector("button[type=submit]");
    button.disabled = true;
    err.textContent = "";
    try {
      deps.onRenamed(await api.rename(name));
      notice(`Your name is now ${name}.`);
    } catch (e) {
      err.textContent = describeError(e);
    } finally {
      button.disabled = false;
    }
  }

  async function changePassword(ev) {
    ev.preventDefault();
    const current = $("password-current").value;
    const next = $("password-new").value;
    const err = $("password-error");
    if (!current || !next) {
      err.textContent = "Enter your current and your new password.";
      return;
    }
    if (next.length < 8) {
      err.textContent = "The new password needs at least 8 characters.";
      return;
    }
    const button = ev.submitter ?? ev.target.querySelector("button[type=submit]");
    button.disabled = true;
    err.textContent = "";
    try {
      await api.changePassword(current, next);
      $("password-form").reset();
      notice("Password changed. Your other devices are signed out.");
      await loadDevices();
    } catch (e) {
      err.textContent = e.status === 401 ? "The current password is wrong." : describeError(e);
    } finally {
      button.disabled = false;
    }
  }

  $("rename-form").addEventListener("submit", rename);
  $("password-form").addEventListener("submit", changePassword);
  $("account-close").addEventListener("click", () => dialog.close());

  // open shows the dialog with a fresh device list.
  return function open() {
    for (const id of ["devices-error", "rename-error", "password-error", "account-notice"]) $(id).textContent = "";
    $("password-form").reset();
    $("rename-name").value = deps.me()?.name ?? "";
    $("password-user").value = deps.me()?.email ?? "";
    $("devices").replaceChildren();
    dialog.showModal();
    loadDevices();
  };
}
