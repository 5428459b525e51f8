// The benchmark page: a live, sortable comparison table and Plotly charts, polled while jobs run.
import {
  ACTIVE_STATUSES, api, bytes, count, dateTime, decimal, duration, el, jobLink, mean, milliseconds, millions, pageId,
  percent, poll, progress, showAlert, statusBadge,
} from "./tlbench.js";
import { axis, bandTraces, colour, draw, epochAxis, epochLine, layout, percentAxis } from "./charts.js";
import { renderErrors } from "./errors.js";

const benchmarkId = pageId("benchmarkId");
const POLL_MS = 1000;
const DASH = "–";
const SPLITS = {
  validation: { label: "Validation", accuracy: "val_accuracy", loss: "val_loss" },
  train: { label: "Train", accuracy: "accuracy", loss: "loss" },
};
// The standing column sorts the leader first, then the others by p-value (the likeliest ties first).
const LEADER_STANDING = 2;
const view = { rows: [], sortKey: null, descending: false, split: "validation", signature: "", leaderId: null, live: false,
  cost: "latency_ms_per_image", frontier: {} };
// The costs accuracy is weighed against (the API's `frontier` keys): the row value, axis title and words.
const COSTS = {
  latency_ms_per_image: { row: "latency", axis: "Latency per image (ms)", words: "latency per image" },
  params_total: { row: "parameters", axis: "Parameters", words: "parameters" },
  model_bytes: { row: "modelBytes", axis: "Model size (bytes)", words: "model size" },
  train_seconds: { row: "trainSeconds", axis: "Training time (s)", words: "training time" },
};

/** The epoch with the best validation accuracy (the first of equals, as the summary picks it). */
function bestEpoch(epochs) {
  return epochs.reduce((best, row) => (row.val_accuracy != null && (best == null || row.val_accuracy > best.val_accuracy) ? row : best), null);
}

/** A configured learning rate as a list: one rate, or the grid of rates the trials cover. */
function rateList(learningRate) {
  if (learningRate == null) return [];
  return Array.isArray(learningRate) ? learningRate : [learningRate];
}

/** A learning rate as typed, e.g. 0.0003 → "0.0003", 1e-7 → "1e-7". */
function rate(value) {
  return value == null ? DASH : String(value);
}

/**
 * The test result of a job: its mean, interval and repeats, or why there is none. Jobs from before held-out
 * test sets have a summary without "test": they say so rather than show a number they never measured.
 */
function testResult(job) {
  if (!job.summary) return null;
  return job.summary.test ?? { missing: true };
}

/**
 * The comparison's verdict on a job: 2 for the leader, else its p-value against the leader (null when not
 * tested); `tied` when it is not significantly worse than the leader.
 */
function standing(job, leaderId, comparison) {
  if (job.id === leaderId) return { value: LEADER_STANDING, leader: true };
  const test = comparison?.tests?.[String(job.id)];
  if (!test) return { value: null };
  return { value: test.p_value, test, tied: comparison.tied_with_leader.includes(job.id) };
}

/** A table row's values: live from the shown trial's epochs while the job runs, from its summary once it has one. */
function rowValues(job, index, line, benchmark) {
  const summary = job.summary ?? {};
  const epochs = line?.epochs ?? [];
  const best = bestEpoch(epochs);
  const test = testResult(job);
  const rates = summary.learning_rates ?? rateList(benchmark.config.learning_rate);
  const verdict = standing(job, view.leaderId, benchmark.comparison);
  return {
    job, index, epochs, test, verdict, rates,
    band: line?.band ?? [],
    backbone: job.backbone,
    progress: job.epochs_done / job.epochs,
    testAccuracy: test?.accuracy_mean ?? null,
    standing: verdict.value,
    // One rate needs no choosing: it is the job's rate from the start.
    learningRate: summary.chosen_learning_rate ?? (rates.length === 1 ? rates[0] : null),
    repeats: summary.repeats ?? benchmark.config.repeats ?? 1,
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
    trainSeconds: summary.train_seconds ?? null,
  };
}

/** The line under a job's status: its error, or while it runs, its phase and the time left. */
function statusDetail(row) {
  const { job } = row;
  if (job.error) return job.error.length > 80 ? `${job.error.slice(0, 80)}…` : job.error;
  if (job.status !== "running" && job.status !== "queued") return null;
  // The API's estimate, from earlier jobs like this one; none before there are any.
  const left = job.eta_seconds == null ? null : `about ${duration(job.eta_seconds)} ${job.status === "queued" ? "to run" : "left"}`;
  return [job.status === "running" && job.phase, left].filter(Boolean).join(" · ") || null;
}

/** The benchmark's time left in words, with what it rests on; nothing once it has finished. */
function etaText(benchmark) {
  if (!ACTIVE_STATUSES.has(benchmark.status)) return null;
  if (benchmark.eta_seconds == null) return `Time left: unknown (${benchmark.eta_basis?.replace(/^unknown: /, "") ?? "not estimated"})`;
  return `Time left: about ${duration(benchmark.eta_seconds)} (${benchmark.eta_basis})`;
}

/** How many trials a job runs, and how many ended once any has (they end together when they train together). */
function trialsLine(job) {
  const total = job.trials_total ?? 1;
  if (total <= 1) return null;
  const text = job.trials_done ? `${job.trials_done}/${total} trials` : `${total} trials`;
  return el("div", { className: "small trials-done" }, text);
}

/** The status cell: the word, a progress bar, "x/N epochs", the trials when there are several, and the detail. */
function statusCell(row) {
  const { job } = row;
  const detail = statusDetail(row);
  const trials = trialsLine(job);
  return el("td", { className: "wrap" },
    statusBadge(job.status),
    progress(job),
    trials,
    detail && el("div", { className: "small", title: job.error ?? "" }, detail));
}

/** A fraction as a percentage without the unit, for interval bounds: 0.781 → "78.1". */
function points(fraction) {
  return (100 * fraction).toFixed(1);
}

/** The test accuracy cell: "83.0 % [78.1, 87.9]", with the repeats and the method in its tooltip. */
function testCell(row) {
  const { test } = row;
  if (test == null) return el("td", { className: "num" }, DASH);
  if (test.missing) return el("td", { className: "num small", title: "This job ran before held-out test sets" }, "no test set");
  const confidence = `${Math.round(100 * (test.confidence ?? 0.95))} %`;
  const details = [
    `${confidence} confidence interval: ${percent(test.ci_low)} to ${percent(test.ci_high)}`,
    test.accuracies?.length && `Each repeat: ${test.accuracies.map((value) => percent(value)).join(", ")}`,
    test.images != null && `${count(test.images)} test images`,
    test.method,
  ].filter(Boolean).join("\n");
  const interval = test.ci_low == null || test.ci_high == null ? "" : ` [${points(test.ci_low)}, ${points(test.ci_high)}]`;
  return el("td", { className: "num test-accuracy", title: details }, `${percent(test.accuracy_mean)}${interval}`);
}

/** A p-value in a few characters: "p = 0.41", "p = 0.003", "p < 0.001". */
function pValue(p) {
  if (p < 0.001) return "p < 0.001";
  return `p = ${p < 0.01 ? p.toFixed(3) : p.toFixed(2)}`;
}

/** The standing cell: "leader", "tied with leader" or "worse", with the p-value of the test against the leader. */
function standingCell(row) {
  const { verdict } = row;
  if (verdict.leader) return el("td", {}, el("span", { className: "best-mark" }, "leader"));
  if (!verdict.test) return el("td", {}, DASH);
  const { test } = verdict;
  const title = [`${test.test} against the leader, ${pValue(test.p_value)}`,
    test.difference != null && `Difference in test accuracy: ${points(test.difference)} points`,
  ].filter(Boolean).join("\n");
  return el("td", { title },
    verdict.tied ? el("span", { className: "tie-mark" }, "tied with leader") : el("span", {}, "worse"),
    el("div", { className: "small" }, pValue(test.p_value)));
}

/** The learning-rate cell: the rate the job chose (or its only one), and how many it chose from. */
function rateCell(row) {
  const grid = row.rates.length > 1;
  return el("td", { className: "num", title: grid ? `Chosen from ${row.rates.map(rate).join(", ")}` : "" },
    rate(row.learningRate),
    grid && el("span", { className: "small" }, ` of ${row.rates.length}`));
}

/** One comparison row; the leader and the backbones tied with it are marked. */
function tableRow(row, best) {
  const mark = best && el("span", { className: "best-mark" }, view.leaderId == null ? "★ best so far" : "★ leader");
  const frontier = (view.frontier[view.cost] ?? []).includes(row.job.id) && el("span", {
    className: "frontier-mark", title: `No other backbone is both more accurate and lower in ${COSTS[view.cost].words}`,
  }, "◆ on the frontier");
  const backbone = el("td", {}, jobLink(row.job), mark, frontier);
  return el("tr", { className: best ? "best" : row.verdict.tied ? "tied" : "" },
    backbone,
    statusCell(row),
    testCell(row),
    standingCell(row),
    rateCell(row),
    el("td", { className: "num" }, count(row.repeats)),
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

/** The row to highlight: the API's leader once there is one; until then the best validation accuracy so far. */
function highlightedRow() {
  if (view.leaderId != null) return view.rows.find((row) => row.job.id === view.leaderId) ?? null;
  const scored = view.rows.filter((row) => row.bestAccuracy != null);
  return scored.length ? scored.reduce((a, b) => (b.bestAccuracy > a.bestAccuracy ? b : a)) : null;
}

/** Redraw the table in the chosen order, marking the leader. */
function renderTable() {
  const leader = highlightedRow();
  const ordered = view.sortKey ? [...view.rows].sort(compareRows) : view.rows;
  document.querySelector("#comparison tbody").replaceChildren(...ordered.map((row) => tableRow(row, row === leader)));
  for (const header of document.querySelectorAll("#comparison th")) {
    if (header.dataset.key === view.sortKey) header.setAttribute("aria-sort", view.descending ? "descending" : "ascending");
    else header.removeAttribute("aria-sort");
  }
}

/** The comparison's sentence, or why there is none yet. */
function renderVerdict(benchmark) {
  const verdict = document.getElementById("verdict");
  let text = benchmark.comparison?.sentence ?? null;
  if (!text && benchmark.leader?.by === "val_accuracy") {
    text = `${benchmark.leader.backbone} leads by validation accuracy. This benchmark ran before held-out test sets, so no test compares the backbones.`;
  } else if (!text && view.live) {
    text = "The test-set comparison appears as the jobs finish.";
  }
  verdict.textContent = text ?? "";
  verdict.hidden = !text;
}

/** Sort by a clicked column: a new column starts with the better values first, a second click flips it. */
function sortBy(header) {
  const key = header.dataset.key;
  view.descending = key === view.sortKey ? !view.descending : "higherIsBetter" in header.dataset;
  view.sortKey = key;
  renderTable();
}

/** The traces of one backbone: the band of its repeats behind (validation accuracy only), then its line. */
function backboneTraces(row, metric, split) {
  const line = epochLine(row.backbone, row.epochs, split[metric], colour(row.index));
  const banded = metric === "accuracy" && view.split === "validation";
  return [...(banded ? bandTraces(row.backbone, row.band, colour(row.index)) : []), line];
}

/** The accuracy and loss curves for the chosen split, one line per backbone on shared axes. */
function renderCurves() {
  const split = SPLITS[view.split];
  const lastEpoch = Math.max(1, ...view.rows.map((row) => row.epochs.length));
  for (const metric of ["accuracy", "loss"]) {
    const title = `${split.label} ${metric}`;
    document.getElementById(`${metric}-title`).textContent = `${title} per epoch`;
    const traces = view.rows.flatMap((row) => backboneTraces(row, metric, split));
    const yaxis = metric === "accuracy" ? percentAxis(title) : axis(title, { rangemode: "tozero" });
    draw(document.getElementById(`chart-${metric}`), traces, layout(epochAxis(lastEpoch), yaxis));
  }
  document.getElementById("band-note").hidden = view.split !== "validation" || !view.rows.some((row) => row.band.length);
}

/** What the summary charts plot: the mean test accuracy where the jobs have one, else the best val accuracy. */
function summaryMetric() {
  if (view.rows.some((row) => row.testAccuracy != null)) {
    return { key: "testAccuracy", label: "Mean test accuracy", interval: true };
  }
  return { key: "bestAccuracy", label: "Best val accuracy", interval: false };
}

/** Error bars from each row's confidence interval (zero where a row has none). */
function intervalBars(rows) {
  const above = rows.map((row) => (row.test?.ci_high == null ? 0 : row.test.ci_high - row.testAccuracy));
  const below = rows.map((row) => (row.test?.ci_low == null ? 0 : row.testAccuracy - row.test.ci_low));
  return { type: "data", symmetric: false, array: above, arrayminus: below, color: "#57606a", thickness: 1.5 };
}

/** Bar chart of the headline accuracy, and the accuracy/latency trade-off of finished jobs. */
function renderSummaries() {
  const metric = summaryMetric();
  document.getElementById("best-title").textContent = metric.interval ? "Mean test accuracy (95 % CI)" : "Best validation accuracy";
  draw(document.getElementById("chart-best"), [{
    type: "bar",
    x: view.rows.map((row) => row.backbone),
    y: view.rows.map((row) => row[metric.key]),
    marker: { color: view.rows.map((row) => colour(row.index)) },
    ...(metric.interval ? { error_y: intervalBars(view.rows) } : {}),
    text: view.rows.map((row) => percent(row[metric.key])),
    // With error bars on top, the labels go inside at the foot of each bar, clear of them.
    textposition: metric.interval ? "inside" : "outside",
    insidetextanchor: "start",
    hovertemplate: "%{x}: %{y:.1%}<extra></extra>",
  }], layout(axis(""), percentAxis(metric.label), { showlegend: false }));

  renderTradeoff(metric);
}

/** Accuracy (with its interval) against the chosen cost, and the Pareto frontier through the backbones on it. */
function renderTradeoff(metric) {
  const cost = COSTS[view.cost];
  document.getElementById("tradeoff-title").textContent = `Accuracy against ${cost.words}`;
  const measured = view.rows.filter((row) => row[cost.row] != null && row[metric.key] != null);
  document.getElementById("tradeoff-note").hidden = measured.length > 0;
  const byJob = new Map(measured.map((row) => [row.job.id, row]));
  const front = (view.frontier[view.cost] ?? []).map((id) => byJob.get(id)).filter(Boolean);  // cheapest first
  const points = measured.map((row) => ({
    type: "scatter",
    mode: "markers+text",
    name: row.backbone,
    x: [row[cost.row]],
    y: [row[metric.key]],
    ...(metric.interval ? { error_y: intervalBars([row]) } : {}),
    text: [row.backbone],
    textposition: "top center",
    marker: { size: 12, color: colour(row.index) },
    hovertemplate: `${row.backbone}<br>${cost.words} %{x:.4~g}, %{y:.1%}<extra></extra>`,
  }));
  const frontier = {
    type: "scatter", mode: "lines", name: "Pareto frontier", x: front.map((row) => row[cost.row]),
    y: front.map((row) => row[metric.key]), line: { dash: "dot", color: "#57606a" }, hoverinfo: "skip",
  };
  draw(document.getElementById("chart-tradeoff"), [frontier, ...points],
    layout(axis(cost.axis, { rangemode: "tozero" }), percentAxis(metric.label), { showlegend: false }));
}

/** The learning rates and repeats each backbone trains with, in words. */
function trialsText(config) {
  const rates = rateList(config.learning_rate);
  const rateText = rates.length > 1 ? `learning rates ${rates.map(rate).join(", ")} (best by validation accuracy)` : `learning rate ${rate(rates[0])}`;
  const repeats = config.repeats ?? 1;
  return `${rateText} · ${repeats} ${repeats === 1 ? "repeat" : "repeats"}`;
}

/** How the images were split: counts when the API has them, else the configured fractions. */
function splitText(benchmark) {
  const { splits, config } = benchmark;
  if (splits) {
    const part = (name) => `${count(splits[name]?.images)} ${name}`;
    return `Split: ${part("train")} · ${part("validation")} · ${part("test")} images`;
  }
  const fraction = (value) => `${Math.round(100 * value)} %`;
  const validation = config.validation_split == null ? "" : `validation ${fraction(config.validation_split)}`;
  const test = config.test_split ? `test ${fraction(config.test_split)}` : "no test set";
  return `Split: ${[validation, test].filter(Boolean).join(", ")}`;
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
    el("li", {}, `${config.epochs} epochs, batch ${config.batch_size}, patience ${config.patience}`),
    el("li", {}, trialsText(config)),
    el("li", {}, splitText(benchmark)),
    el("li", {}, `Image size: ${size} px · weights: ${config.weights}${config.augment ? " · augmented" : ""}`),
    // replaceChildren writes null as the text "null": only an element, or nothing.
    ...(etaText(benchmark) ? [el("li", { className: "eta" }, etaText(benchmark))] : []),
  );
}

/** What the page shows, in a few characters: when it is unchanged, nothing is redrawn. */
function signature(benchmark, series) {
  // Times left count down every poll: redraw for them every ten seconds or so, not every second.
  const jobs = benchmark.jobs.map((job) => [job.id, job.status, job.epochs_done, job.phase, job.trials_done,
    job.summary ? 1 : 0, Math.round((job.eta_seconds ?? -10) / 10)].join(":"));
  const lines = series.map((line) => `${line.job_id}:${line.trial}:${line.epochs.length}:${line.band?.length ?? 0}`);
  return [...jobs, ...lines, benchmark.leader?.job_id, benchmark.comparison?.sentence,
    Math.round((benchmark.eta_seconds ?? -10) / 10), benchmark.eta_basis].join("|");
}

/** Fetch the benchmark and its epochs; redraw what changed; answer whether any job is still active. */
async function refresh() {
  const [benchmark, { series }] = await Promise.all([api(`/benchmarks/${benchmarkId}`), api(`/benchmarks/${benchmarkId}/epochs`)]);
  view.live = benchmark.jobs.some((job) => ACTIVE_STATUSES.has(job.status));
  document.getElementById("live").textContent = view.live ? "Live: updates every second" : "All jobs finished";
  const current = signature(benchmark, series);
  if (current === view.signature) return view.live;
  view.signature = current;
  view.leaderId = benchmark.leader?.job_id ?? null;
  view.frontier = benchmark.frontier ?? {};
  const seriesByJob = new Map(series.map((line) => [line.job_id, line]));
  view.rows = benchmark.jobs.map((job, index) => rowValues(job, index, seriesByJob.get(job.id), benchmark));
  renderHeader(benchmark);
  renderVerdict(benchmark);
  renderTable();
  renderCurves();
  renderSummaries();
  await renderErrors(benchmark);
  return view.live;
}

for (const header of document.querySelectorAll("#comparison th")) {
  header.querySelector("button").addEventListener("click", () => sortBy(header));
}
document.getElementById("tradeoff-cost").addEventListener("change", (event) => {
  view.cost = event.target.value;
  renderTable();
  renderTradeoff(summaryMetric());
});
for (const input of document.querySelectorAll('input[name="split"]')) {
  input.addEventListener("change", () => { view.split = input.value; renderCurves(); });
}
poll(refresh, POLL_MS, (message) => showAlert(document.getElementById("alert"), message));
