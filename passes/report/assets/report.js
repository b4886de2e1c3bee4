// Page through identical rewrites. The first instance of each group is already in the
// page; the others come from the JSON island #region-data. No libraries, no network.
(function () {
  "use strict";
  var island = document.getElementById("region-data");
  if (!island) { return; }
  var data = JSON.parse(island.textContent);

  function renderLines(pre, lines) {
    while (pre.firstChild) { pre.removeChild(pre.firstChild); }
    lines.forEach(function (line) {
      var span = document.createElement("span");
      span.className = line[0];
      span.textContent = line[1];
      if (line[2]) { span.title = line[2]; }
      pre.appendChild(span);
      pre.appendChild(document.createTextNode("\n"));
    });
  }

  function show(group, position) {
    var instances = data[group.dataset.pass][group.dataset.group];
    position = Math.max(0, Math.min(instances.length - 1, position));
    var instance = instances[position];
    group.dataset.position = String(position);
    renderLines(group.querySelector(".pane.before pre"), instance.before);
    renderLines(group.querySelector(".pane.after pre"), instance.after);
    group.querySelector(".anchor").textContent = instance.anchor;
    group.querySelector(".position").textContent = String(position + 1);
    group.querySelector("button.prev").disabled = position === 0;
    group.querySelector("button.next").disabled = position === instances.length - 1;
  }

  document.querySelectorAll("details.group[data-pass]").forEach(function (group) {
    var prev = group.querySelector("button.prev");
    var next = group.querySelector("button.next");
    if (!prev || !next) { return; }
    prev.addEventListener("click", function () { show(group, Number(group.dataset.position) - 1); });
    next.addEventListener("click", function () { show(group, Number(group.dataset.position) + 1); });
    show(group, 0);
  });
})();
