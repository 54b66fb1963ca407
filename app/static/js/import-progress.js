// Poll the import's progress until it finishes, then reload to show the summary and errors.
(function () {
  var box = document.getElementById("import-status");
  if (!box || box.dataset.finished === "true") return;
  var bar = document.getElementById("import-progress");
  var text = document.getElementById("progress-text");
  var label = document.getElementById("status-label");
  function poll() {
    fetch(box.dataset.progressUrl, { credentials: "same-origin" })
      .then(function (response) { return response.json(); })
      .then(function (data) {
        label.textContent = data.status_label;
        bar.max = data.data_rows || 1;
        bar.value = data.processed_rows;
        text.textContent = data.progress_text;
        if (data.finished) { window.location.reload(); } else { setTimeout(poll, 700); }
      })
      .catch(function () { setTimeout(poll, 2000); });
  }
  setTimeout(poll, 300);
})();
