"use strict";
// The login link carries the token in the URL fragment (#token=...), which browsers never send to
// the server, so it stays out of access logs and Referer headers. We post it once, get an HttpOnly
// session cookie back, and drop the fragment from the address bar and history.
(function () {
  const status = document.getElementById("login-status");
  const form = document.getElementById("login-form");

  async function login(token) {
    status.textContent = "Logging in…";
    const res = await fetch("/api/login", {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      credentials: "same-origin",
      body: JSON.stringify({ token: token.trim() }),
    });
    if (res.ok) {
      window.location.replace("/");
    } else {
      status.textContent = res.status === 401 ? "That token is not valid." : "Login failed (" + res.status + ").";
      status.className = "error";
    }
  }

  const match = /[#&]token=([^&]+)/.exec(window.location.hash);
  if (match) {
    history.replaceState(null, "", window.location.pathname);
    login(decodeURIComponent(match[1]));
  }
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    login(document.getElementById("token").value);
  });
})();
