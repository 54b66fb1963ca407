// Offline queue of field results. A result form marked data-field-queue is sent with
// fetch; when the network fails, the form (photos included) is kept in IndexedDB and
// resent until the server answers. Each result carries the submission id the server put
// into the form, so a resend after a lost answer is applied only once.
(function () {
  "use strict";

  var DB_NAME = "heatflow-field";
  var STORE = "outbox";
  var RETRY_MS = 15000;
  var banner = document.getElementById("field-queue");

  function openDb() {
    return new Promise(function (resolve, reject) {
      var request = indexedDB.open(DB_NAME, 1);
      request.onupgradeneeded = function () {
        request.result.createObjectStore(STORE, { keyPath: "submissionId" });
      };
      request.onsuccess = function () { resolve(request.result); };
      request.onerror = function () { reject(request.error); };
    });
  }

  function withStore(mode, action) {
    return openDb().then(function (db) {
      return new Promise(function (resolve, reject) {
        var transaction = db.transaction(STORE, mode);
        var result = action(transaction.objectStore(STORE));
        transaction.oncomplete = function () { resolve(result && result.result); };
        transaction.onerror = function () { reject(transaction.error); };
      });
    });
  }

  // The banner's texts come translated from the page, in data attributes with {name} placeholders.
  function message(name, values) {
    var text = banner ? banner.dataset[name] || "" : "";
    return text.replace(/\{(\w+)\}/g, function (whole, key) { return key in values ? String(values[key]) : whole; });
  }

  function show(text, isError) {
    if (!banner) { return; }
    banner.hidden = !text;
    banner.textContent = text || "";
    banner.className = "field-queue" + (isError ? " error" : "");
  }

  function entryOf(form) {
    var fields = [];
    new FormData(form).forEach(function (value, name) {
      if (value instanceof File) {
        if (value.name) { fields.push({ name: name, file: value, filename: value.name }); }
      } else {
        fields.push({ name: name, value: value });
      }
    });
    var id = form.querySelector("input[name=submission_id]").value;
    return { submissionId: id, url: form.action || window.location.href, label: form.dataset.label || "", fields: fields };
  }

  function bodyOf(entry, csrfToken) {
    var data = new FormData();
    entry.fields.forEach(function (field) {
      if (field.file) {
        data.append(field.name, field.file, field.filename);
      } else if (field.name === "csrf_token" && csrfToken) {
        data.append(field.name, csrfToken);
      } else {
        data.append(field.name, field.value);
      }
    });
    return data;
  }

  // Resolves to {ok, message, redirect} when the server decided, rejects when it could not be reached.
  function send(entry, csrfToken) {
    return fetch(entry.url, {
      method: "POST", body: bodyOf(entry, csrfToken), credentials: "same-origin",
      headers: { "Accept": "application/json" }
    }).then(function (response) {
      var type = response.headers.get("Content-Type") || "";
      if (response.status >= 500) { throw new Error("server " + response.status); }
      if (type.indexOf("application/json") === -1) {
        // A CSRF token that expired while the phone was offline: fetch a fresh one and send again.
        if (response.status === 400 && !csrfToken) {
          return fetch("/field/csrf", { credentials: "same-origin", headers: { "Accept": "application/json" } })
            .then(function (reply) { return reply.json(); })
            .then(function (reply) { return send(entry, reply.csrf_token); });
        }
        throw new Error("unexpected answer " + response.status);
      }
      return response.json();
    });
  }

  function pending() {
    return withStore("readonly", function (store) { return store.getAll(); });
  }

  function remove(id) {
    return withStore("readwrite", function (store) { return store.delete(id); });
  }

  function showPending() {
    return pending().then(function (entries) {
      if (entries.length) {
        show(message("pending", { count: entries.length }) +
             entries.map(function (e) { return e.label; }).join(message("separator", {})), false);
      } else {
        show("", false);
      }
      return entries;
    });
  }

  var flushing = false;
  function flush() {
    if (flushing) { return Promise.resolve(); }
    flushing = true;
    return pending().then(function (entries) {
      return entries.reduce(function (previous, entry) {
        return previous.then(function () {
          return send(entry).then(function (answer) {
            if (!answer.ok) {
              show(message("rejected", { label: entry.label, message: answer.message }), true);
            }
            return remove(entry.submissionId);
          }, function () { /* still offline: keep it for the next attempt */ });
        });
      }, Promise.resolve());
    }).then(function () {
      flushing = false;
      return showPending();
    }, function () { flushing = false; });
  }

  document.querySelectorAll("form[data-field-queue]").forEach(function (form) {
    form.addEventListener("submit", function (event) {
      event.preventDefault();
      var entry = entryOf(form);
      var button = form.querySelector("button[type=submit]");
      button.disabled = true;
      send(entry).then(function (answer) {
        if (answer.ok) {
          window.location.assign(answer.redirect);
        } else {
          button.disabled = false;
          show(answer.message, true);
        }
      }, function () {
        withStore("readwrite", function (store) { return store.put(entry); }).then(function () {
          show(message("offline", {}), false);
          form.hidden = true;
          return showPending();
        });
      });
    });
  });

  window.addEventListener("online", flush);
  window.setInterval(function () { if (navigator.onLine) { flush(); } }, RETRY_MS);
  showPending().then(function (entries) { if (entries.length && navigator.onLine) { flush(); } });
})();
