// Fill the benchmarks table from the JSON API and refresh it every two seconds.
"use strict";

function cell(text, className) {
  const td = document.createElement("td");
  td.textContent = text;
  if (className) td.className = className;
  return td;
}

function row(benchmark) {
  const tr = document.createElement("tr");
  const leader = benchmark.leader;
  tr.append(
    cell(benchmark.id), cell(benchmark.name), cell(benchmark.status), cell(benchmark.dataset.name),
    cell(leader ? leader.backbone : "–"),
    cell(leader ? (100 * leader.best_val_accuracy).toFixed(1) + " %" : "–", "num"),
    cell(new Date(benchmark.created_at).toLocaleString()),
  );
  return tr;
}

async function refresh() {
  const response = await fetch("/api/v1/benchmarks");
  const { benchmarks } = await response.json();
  document.querySelector("#benchmarks tbody").replaceChildren(...benchmarks.map(row));
  document.getElementById("empty").hidden = benchmarks.length > 0;
}

refresh();
setInterval(refresh, 2000);
