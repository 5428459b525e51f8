// The benchmark page: a live, sortable comparison table and Plotly charts, polled while jobs run.
import {
  ACTIVE_STATUSES, api, bytes, count, dateTime, decimal, duration, el, jobLink, mean, milliseconds, millions, pageId,
  percent, poll, progress, showAlert, statusBadge,
} from "./tlbench.js";
import { axis, colour, draw, epochAxis, epochLine, layout, percentAxis } from "./charts.js";

const benchmarkId = pageId("benchmarkId");
const POLL_MS = 1000;
const SPLITS = {
  validation: { label: "Validation", accuracy: "val_accuracy", loss: "val_loss" },
  train: { label: "Train", accuracy: "accuracy", loss: "loss" },
};
const view = { rows: [], sortKey: null, descending: false, split: "validation", signature: "" };

/** The epoch with the best validation accuracy (the first of equals, as the summary picks it). */
function bestEpoch(epochs) {
  return epochs.reduce((best, row) => (row.val_accuracy != null && (best == null || row.val_accuracy > best.val_accuracy) ? row : best), null);
}

/** A table row's values: live from the epochs while the job runs, from its summary once it has one. */
function rowValues(job, index, epochs) {
  const summary = job.summary ?? {};
  const best = bestEpoch(epochs);
  return {
    job, index, epochs,
    backbone: job.backbone,
    progress: job.epochs_done / job.epochs,
    bestAccuracy: summary.best_val_accuracy ?? best?.val_accuracy ?? null,
    lossAtBest: summary.best_val_loss ?? best?.val_loss ?? null,
    bestEpoch: summary.best_epoch ?? best?.epoch ?? null,
    epochsRun: summary.epochs_run ?? epochs.length,
    secondsPerEpoch: mean(epochs.map((row) => row.seconds)),
    imagesPerSecond: mean(epochs.map((row) => row.images_per_second)),
    parameters: summary.params_total ?? null,
    trainable: summary.params_trainable ?? null,
    modelBytes: summary.model_bytes ?? null,
    latency: summary.latency_ms_per_image ?? null,
  };
}

/** The line under a job's status: its error, or while it runs, its phase and the time left. */
function statusDetail(row) {
  const { job } = row;
  if (job.error) return job.error.length > 80 ? `${job.error.slice(0, 80)}…` : job.error;
  if (job.status !== "running") return null;
  // Early stopping may end it sooner: this is the most it will take at the pace so far.
  const left = row.secondsPerEpoch == null ? null : `about ${duration((job.epochs - job.epochs_done) * row.secondsPerEpoch)} left`;
  return [job.phase, left].filter(Boolean).join(" · ") || null;
}

/** The status cell: the word, a progress bar, "x/N epochs", and the detail line. */
function statusCell(row) {
  const detail = statusDetail(row);
  return el("td", { className: "wrap" },
    statusBadge(row.job.status),
    progress(row.job),
    detail && el("div", { className: "small", title: row.job.error ?? "" }, detail));
}

/** One comparison row; `best` marks the leader. */
function tableRow(row, best) {
  const backbone = el("td", {}, jobLink(row.job), best && el("span", { className: "best-mark" }, "★ best"));
  return el("tr", { className: best ? "best" : "" },
    backbone,
    statusCell(row),
    el("td", { className: "num" }, percent(row.bestAccuracy)),
    el("td", { className: "num" }, decimal(row.lossAtBest, 3)),
    el("td", { className: "num" }, count(row.bestEpoch)),
    el("td", { className: "num" }, count(row.epochsRun)),
    el("td", { className: "num" }, decimal(row.secondsPerEpoch, 2)),
    el("td", { className: "num" }, count(row.imagesPerSecond)),
    el("td", { className: "num", title: row.trainable == null ? "" : `${count(row.trainable)} trainable` }, millions(row.parameters)),
    el("td", { className: "num" }, bytes(row.modelBytes)),
    el("td", { className: "num" }, milliseconds(row.latency)),
  );
}

/** Compare two rows by the sort column; rows without a value go last either way. */
function compareRows(a, b) {
  const [x, y] = [a[view.sortKey], b[view.sortKey]];
  if (x == null || y == null) return (x == null) - (y == null);
  const order = typeof x === "string" ? x.localeCompare(y) : x - y;
  return view.descending ? -order : order;
}

/** Redraw the table in the chosen order, marking the row with the best validation accuracy. */
function renderTable() {
  const scored = view.rows.filter((row) => row.bestAccuracy != null);
  const leader = scored.length ? scored.reduce((a, b) => (b.bestAccuracy > a.bestAccuracy ? b : a)) : null;
  const ordered = view.sortKey ? [...view.rows].sort(compareRows) : view.rows;
  document.querySelector("#comparison tbody").replaceChildren(...ordered.map((row) => tableRow(row, row === leader)));
  for (const header of document.querySelectorAll("#comparison th")) {
    if (header.dataset.key === view.sortKey) header.setAttribute("aria-sort", view.descending ? "descending" : "ascending");
    else header.removeAttribute("aria-sort");
  }
}

/** Sort by a clicked column: a new column starts with the better values first, a second click flips it. */
function sortBy(header) {
  const key = header.dataset.key;
  view.descending = key === view.sortKey ? !view.descending : "higherIsBetter" in header.dataset;
  view.sortKey = key;
  renderTable();
}

/** The accuracy and loss curves for the chosen split, one line per backbone on shared axes. */
function renderCurves() {
  const split = SPLITS[view.split];
  const lastEpoch = Math.max(1, ...view.rows.map((row) => row.epochs.length));
  for (const metric of ["accuracy", "loss"]) {
    const title = `${split.label} ${metric}`;
    document.getElementById(`${metric}-title`).textContent = `${title} per epoch`;
    const traces = view.rows.map((row) => epochLine(row.backbone, row.epochs, split[metric], colour(row.index)));
    const yaxis = metric === "accuracy" ? percentAxis(title) : axis(title, { rangemode: "tozero" });
    draw(document.getElementById(`chart-${metric}`), traces, layout(epochAxis(lastEpoch), yaxis));
  }
}

/** Bar chart of the best validation accuracy, and the accuracy/latency trade-off of finished jobs. */
function renderSummaries() {
  draw(document.getElementById("chart-best"), [{
    type: "bar",
    x: view.rows.map((row) => row.backbone),
    y: view.rows.map((row) => row.bestAccuracy),
    marker: { color: view.rows.map((row) => colour(row.index)) },
    text: view.rows.map((row) => percent(row.bestAccuracy)),
    textposition: "outside",
    hovertemplate: "%{x}: %{y:.1%}<extra></extra>",
  }], layout(axis(""), percentAxis("Best val accuracy"), { showlegend: false }));

  const measured = view.rows.filter((row) => row.latency != null && row.bestAccuracy != null);
  document.getElementById("tradeoff-note").hidden = measured.length > 0;
  draw(document.getElementById("chart-tradeoff"), measured.map((row) => ({
    type: "scatter",
    mode: "markers+text",
    name: row.backbone,
    x: [row.latency],
    y: [row.bestAccuracy],
    text: [row.backbone],
    textposition: "top center",
    marker: { size: 12, color: colour(row.index) },
    hovertemplate: `${row.backbone}<br>%{x:.2f} ms per image, %{y:.1%}<extra></extra>`,
  })), layout(axis("Latency per image (ms)", { rangemode: "tozero" }), percentAxis("Best val accuracy"), { showlegend: false }));
}

/** The name, status, dataset and settings above the table. */
function renderHeader(benchmark) {
  document.getElementById("title").textContent = benchmark.name;
  document.title = `${benchmark.name} · tlbench`;
  const config = benchmark.config;
  const size = typeof config.image_size === "object" && config.image_size
    ? Object.entries(config.image_size).map(([name, px]) => `${name} ${px}`).join(", ")
    : config.image_size ?? "each backbone's default";
  document.getElementById("meta").replaceChildren(
    el("li", {}, statusBadge(benchmark.status)),
    el("li", {}, `Dataset: ${benchmark.dataset.name}`),
    el("li", {}, `Created ${dateTime(benchmark.created_at)}`),
    el("li", {}, `${config.epochs} epochs, batch ${config.batch_size}, learning rate ${config.learning_rate}, patience ${config.patience}`),
    el("li", {}, `Image size: ${size} px · weights: ${config.weights}${config.augment ? " · augmented" : ""}`),
  );
}

/** What the page shows, in a few characters: when it is unchanged, nothing is redrawn. */
function signature(benchmark, series) {
  const jobs = benchmark.jobs.map((job) => `${job.id}:${job.status}:${job.epochs_done}:${job.phase}:${job.summary ? 1 : 0}`);
  return jobs.concat(series.map((line) => `${line.job_id}:${line.epochs.length}`)).join("|");
}

/** Fetch the benchmark and its epochs; redraw what changed; answer whether any job is still active. */
async function refresh() {
  const [benchmark, { series }] = await Promise.all([api(`/benchmarks/${benchmarkId}`), api(`/benchmarks/${benchmarkId}/epochs`)]);
  const active = benchmark.jobs.some((job) => ACTIVE_STATUSES.has(job.status));
  document.getElementById("live").textContent = active ? "Live: updates every second" : "All jobs finished";
  const current = signature(benchmark, series);
  if (current === view.signature) return active;
  view.signature = current;
  const epochsByJob = new Map(series.map((line) => [line.job_id, line.epochs]));
  view.rows = benchmark.jobs.map((job, index) => rowValues(job, index, epochsByJob.get(job.id) ?? []));
  renderHeader(benchmark);
  renderTable();
  renderCurves();
  renderSummaries();
  return active;
}

for (const header of document.querySelectorAll("#comparison th")) {
  header.querySelector("button").addEventListener("click", () => sortBy(header));
}
for (const input of document.querySelectorAll('input[name="split"]')) {
  input.addEventListener("change", () => { view.split = input.value; renderCurves(); });
}
poll(refresh, POLL_MS, (message) => showAlert(document.getElementById("alert"), message));
