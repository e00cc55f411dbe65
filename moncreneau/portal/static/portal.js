// MonCréneau integrator portal: local times, copy buttons, confirmations, live lists.
"use strict";

function localTimes(root) {
  const format = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "medium" });
  for (const el of root.querySelectorAll("time[datetime]")) {
    const when = new Date(el.getAttribute("datetime"));
    if (!isNaN(when)) {
      el.textContent = format.format(when);
      el.title = el.getAttribute("datetime").replace("T", " ").replace("Z", "") + " UTC";
    }
  }
}

function refreshLater(live) {
  const seconds = Number(live.dataset.refresh);
  setTimeout(async () => {
    try {
      const response = await fetch(location.href, { credentials: "same-origin" });
      const page = new DOMParser().parseFromString(await response.text(), "text/html");
      const fresh = page.getElementById("live");
      if (fresh) {
        live.replaceWith(fresh);
        localTimes(fresh);
        if (fresh.dataset.refresh) refreshLater(fresh);
        return;
      }
    } catch (_error) { /* try again */ }
    refreshLater(live);
  }, seconds * 1000);
}

document.addEventListener("DOMContentLoaded", () => {
  localTimes(document);
  const open = document.querySelector("form[data-autosubmit]");
  if (open) open.submit();
  document.addEventListener("click", async (event) => {
    const button = event.target.closest("[data-copy]");
    if (!button) return;
    const text = document.querySelector(button.dataset.copy).textContent;
    try {
      await navigator.clipboard.writeText(text);
    } catch (_error) {
      const range = document.createRange();
      range.selectNodeContents(document.querySelector(button.dataset.copy));
      getSelection().removeAllRanges();
      getSelection().addRange(range);
      document.execCommand("copy");
    }
    button.textContent = "Copied";
  });
  document.addEventListener("submit", (event) => {
    const message = event.target.dataset.confirm;
    if (message && !confirm(message)) event.preventDefault();
  });
  const live = document.getElementById("live");
  if (live && live.dataset.refresh) refreshLater(live);
});
