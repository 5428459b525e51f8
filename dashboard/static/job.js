// The job page: test result and chosen rate, curves, trials, result, configuration, artifacts, error, and
// Cancel/Retry, polled while it runs.
import {
  ACTIVE_STATUSES, api, bytes, count, dateTime, decimal, duration, el, milliseconds, millions, pageId, percent, poll,
  postJSON, progress, showAlert, statusBadge,
} from "./tlbench.js";
import { axis, colour, draw, epochAxis, epochLine, layout, percentAxis } from "./charts.js";

const jobId = pageId("jobId");
const POLL_MS = 1000;
const DASH = "–";
const alertBox = document.getElementById("alert");
const view = { signature: "", polling: false };

/** Replace a <dl> with label/value pairs. */
function fillPairs(list, pairs) {
  list.replaceChildren(...pairs.flatMap(([label, value]) => [el("dt", {}, label), el("dd", {}, value)]));
}

/** Title, link back to the benchmark, status and timings. */
function renderHeader(job) {
  document.getElementById("title").textContent = `${job.backbone}: job ${job.id}`;
  document.title = `${job.backbone} (job ${job.id}) · tlbench`;
  document.getElementById("back").replaceChildren(el("a", { href: `/benchmarks/${job.benchmark_id}` }, `← Benchmark ${job.benchmark_id}`));
  const items = [
    el("li", {}, statusBadge(job.status)),
    el("li", {}, `Attempt ${job.attempt}`),
    job.trials_total > 1 && el("li", { className: "trials-done" }, `${job.trials_done}/${job.trials_total} trials`),
    job.worker && el("li", {}, `Worker ${job.worker}`),
    job.phase && el("li", {}, job.phase),
    el("li", {}, `Created ${dateTime(job.created_at)}`),
    job.started_at && el("li", {}, `Started ${dateTime(job.started_at)}`),
    job.finished_at && el("li", {}, `Finished ${dateTime(job.finished_at)}`),
    ACTIVE_STATUSES.has(job.status) && el("li", {}, `Last heartbeat ${dateTime(job.heartbeat_at)}`),
  ];
  document.getElementById("meta").replaceChildren(...items.filter(Boolean));
  document.getElementById("progress").replaceChildren(...progress(job));
}

/** Cancel while it is queued or running, Retry once it failed or was cancelled. */
function renderButtons(job) {
  const cancel = document.getElementById("cancel");
  cancel.hidden = !ACTIVE_STATUSES.has(job.status);
  cancel.disabled = job.cancel_requested;
  cancel.textContent = job.cancel_requested ? "Cancelling after this epoch…" : "Cancel";
  document.getElementById("retry").hidden = !["failed", "cancelled"].includes(job.status);
}

/** The error and the traceback's tail of a failed job. */
function renderFailure(job) {
  document.getElementById("failure").hidden = !job.error;
  document.getElementById("error").textContent = job.error ?? "";
  document.getElementById("traceback").textContent = job.traceback ?? "";
}

/** Accuracy and loss over epochs of the shown trial, train (solid) and validation (dashed). */
function renderCurves(epochs) {
  const axisX = epochAxis(Math.max(1, epochs.length));
  for (const metric of ["accuracy", "loss"]) {
    const traces = [
      epochLine("Train", epochs, metric, colour(0)),
      epochLine("Validation", epochs, `val_${metric}`, colour(1), "dash"),
    ];
    const yaxis = metric === "accuracy" ? percentAxis("Accuracy") : axis("Loss", { rangemode: "tozero" });
    draw(document.getElementById(`chart-${metric}`), traces, layout(axisX, yaxis));
  }
}

/**
 * The trial the curves show: the selected one once the job chose it, trial 0 until then (as the benchmark
 * page's curves do). Trials train side by side, so one line per chart keeps them readable.
 */
function shownTrial(job) {
  return job.summary?.selected_trial ?? 0;
}

/** Which trial the curves are of, said only when there are several to choose from. */
function renderCurvesNote(job, trials) {
  const note = document.getElementById("curves-note");
  const trial = trials.find((row) => row.number === shownTrial(job));
  note.hidden = trials.length < 2 || !trial;
  if (note.hidden) return;
  const which = trial.selected ? "the selected trial" : "the first trial, until the job selects one";
  note.textContent = `Trial ${trial.number} (${which}): learning rate ${rate(trial.learning_rate)}, repeat ${trial.repeat}.`;
}

/** A learning rate as typed, e.g. 0.0003 → "0.0003", 1e-7 → "1e-7". */
function rate(value) {
  return value == null ? DASH : String(value);
}

/** A fraction as a percentage without the unit, for interval bounds: 0.781 → "78.1". */
function points(fraction) {
  return (100 * fraction).toFixed(1);
}

/** The rates the job tries: the summary's grid once it finished, else its spec's (one rate or a list). */
function jobRates(job) {
  const rates = job.summary?.learning_rates ?? job.spec.learning_rate;
  return Array.isArray(rates) ? rates : [rates];
}

/**
 * The job's test result: the mean test accuracy over its repeats with its interval, or why there is none.
 * Jobs from before held-out test sets have no "test" in their summary: they say so rather than show a number.
 */
function renderTestResult(job) {
  const { summary } = job;
  const cell = document.getElementById("test-result");
  cell.removeAttribute("title");
  if (!summary) {
    cell.replaceChildren(ACTIVE_STATUSES.has(job.status) ? "when the job finishes" : `none: job ${job.status}`);
    return;
  }
  const { test } = summary;
  if (!test) {
    // A job with a test split and no result ended before testing; one without a split never had test images.
    const split = Boolean(job.spec.test_split);
    cell.replaceChildren(el("span", { className: "test-accuracy" }, split ? "not tested" : "no test set"),
      el("span", { className: "small" }, split ? ` the job ended (${job.status}) before its test`
        : " this job ran without held-out test images"));
    return;
  }
  const confidence = `${Math.round(100 * (test.confidence ?? 0.95))} %`;
  const interval = test.ci_low == null || test.ci_high == null ? "" : ` [${points(test.ci_low)}, ${points(test.ci_high)}]`;
  const repeats = test.accuracies?.length ?? summary.repeats ?? 1;
  cell.title = [
    test.accuracies?.length && `Each repeat: ${test.accuracies.map((value) => percent(value)).join(", ")}`,
    test.method,
  ].filter(Boolean).join("\n");
  cell.replaceChildren(
    el("span", { className: "test-accuracy" }, `${percent(test.accuracy_mean)}${interval}`),
    el("span", { className: "small" },
      ` mean of ${count(repeats)} ${repeats === 1 ? "repeat" : "repeats"} on ${count(test.images)} test images, ${confidence} confidence interval`));
}

/** The learning rate the job kept, and the mean best validation accuracy of each rate it chose from. */
function renderChosenRate(job) {
  const rates = jobRates(job);
  const chosen = job.summary?.chosen_learning_rate ?? (rates.length === 1 ? rates[0] : null);
  const cell = document.getElementById("chosen-rate");
  if (chosen == null) {
    cell.replaceChildren(`chosen when the job finishes, from ${rates.map(rate).join(", ")}`);
    return;
  }
  const byRate = job.summary?.mean_best_val_accuracy_by_rate ?? [];
  const basis = rates.length > 1 && byRate.length > 0 && el("span", { className: "small" },
    ` chosen by mean best validation accuracy: ${byRate.map((entry) => `${rate(entry.learning_rate)} → ${percent(entry.mean_best_val_accuracy)}`).join(", ")}`);
  cell.replaceChildren(el("span", { className: "rate" }, rate(chosen)), basis);
}

/** One trial: its rate, repeat and seed, its progress, and its results; the selected trial is marked. */
function trialRow(trial, job) {
  const mark = trial.selected && el("span", { className: "best-mark" }, "★ selected");
  return el("tr", { className: trial.selected ? "best" : "" },
    el("td", { className: "num" }, String(trial.number), mark),
    el("td", { className: "num" }, rate(trial.learning_rate)),
    el("td", { className: "num" }, count(trial.repeat)),
    el("td", { className: "num" }, count(trial.seed)),
    el("td", {}, statusBadge(trial.status)),
    el("td", { className: "num" }, `${count(trial.epochs_done)}/${count(job.epochs)}`),
    el("td", { className: "num" }, percent(trial.best_val_accuracy)),
    el("td", { className: "num" }, count(trial.best_epoch)),
    el("td", { className: "num" }, percent(trial.test_accuracy)),
    el("td", {}, trial.worker ?? "–"),
  );
}

/** The trials table and the line above it that says how the job chooses among them. */
function renderTrials(job, trials, testSet) {
  const rates = jobRates(job).length;
  const repeats = trials.length / Math.max(1, rates);
  const plan = `${rates} ${rates === 1 ? "learning rate" : "learning rates"} × ${repeats} ${repeats === 1 ? "repeat" : "repeats"}`;
  const choice = rates > 1 ? "; the rate with the highest mean best validation accuracy over its repeats is kept" : "";
  const tested = testSet ? "" : ". No held-out test set";
  document.getElementById("trials-note").textContent = `${plan}${choice}${tested}.`;
  document.querySelector("#trials tbody").replaceChildren(...trials.map((trial) => trialRow(trial, job)));
}

/** The summary of a finished job, or why there is none. */
function renderSummary(job) {
  const { summary } = job;
  if (!summary) {
    const why = ACTIVE_STATUSES.has(job.status) ? "when the job finishes" : `none: job ${job.status}`;
    fillPairs(document.getElementById("summary"), [["Result", why]]);
    return;
  }
  const repeats = summary.repeats ?? 1;
  const images = [`${count(summary.n_train)} train`, `${count(summary.n_validation)} validation`,
    summary.n_test != null && `${count(summary.n_test)} test`].filter(Boolean).join(", ");
  fillPairs(document.getElementById("summary"), [
    ["Best val accuracy", `${percent(summary.best_val_accuracy)}${repeats > 1 ? `, mean of ${repeats} repeats` : ""}`],
    ["Val loss at best", decimal(summary.best_val_loss, 3)],
    ["Best epoch", `${count(summary.best_epoch)} of ${count(summary.epochs_run)} run`],
    ["Ended", summary.cancelled ? "cancelled" : summary.stopped_early ? "stopped early" : "all epochs"],
    ["Training time", duration(summary.train_seconds)],
    ["Parameters", `${millions(summary.params_total)} (${millions(summary.params_trainable)} trainable)`],
    ["Model size", bytes(summary.model_bytes)],
    ["Latency per image", milliseconds(summary.latency_ms_per_image)],
    ["Images", `${images}, ${summary.image_size} px`],
    ["Classes", summary.classes.join(", ")],
  ]);
}

/** The job's configuration as submitted. */
function renderSpec(spec) {
  fillPairs(document.getElementById("spec"), Object.entries(spec).map(([name, value]) => [
    name.replaceAll("_", " "), typeof value === "object" && value !== null ? JSON.stringify(value) : String(value),
  ]));
}

/** The artifact download link: each path segment escaped, the slashes kept. */
function artifactUrl(name) {
  return `/api/v1/jobs/${jobId}/artifacts/${name.split("/").map(encodeURIComponent).join("/")}`;
}

/** The files the job wrote, with download links and sizes. */
async function renderArtifacts() {
  const { artifacts } = await api(`/jobs/${jobId}/artifacts`);
  document.getElementById("no-artifacts").textContent = "None: the job wrote no files.";
  document.getElementById("no-artifacts").hidden = artifacts.length > 0;
  document.getElementById("artifacts-wrap").hidden = artifacts.length === 0;
  document.querySelector("#artifacts tbody").replaceChildren(...artifacts.map((artifact) => el("tr", {},
    el("td", {}, el("a", { href: artifactUrl(artifact.name), download: artifact.name.split("/").pop() }, artifact.name)),
    el("td", { className: "num" }, bytes(artifact.bytes)))));
}

/** Fetch the job, its trials and the shown trial's epochs; redraw when something changed; answer whether it is still active. */
async function refresh() {
  const [job, { trials, test_set: testSet }] = await Promise.all([api(`/jobs/${jobId}`), api(`/jobs/${jobId}/trials`)]);
  const { epochs } = await api(`/jobs/${jobId}/epochs?trial=${shownTrial(job)}`);
  const active = ACTIVE_STATUSES.has(job.status);
  view.polling = active;
  const current = [job.status, job.attempt, job.phase, job.cancel_requested, epochs.length, job.heartbeat_at,
    JSON.stringify(trials)].join("|");
  if (current === view.signature) return active;
  view.signature = current;
  renderHeader(job);
  renderButtons(job);
  renderFailure(job);
  renderTestResult(job);
  renderChosenRate(job);
  renderCurves(epochs);
  renderCurvesNote(job, trials);
  renderTrials(job, trials, testSet);
  renderSummary(job);
  renderSpec(job.spec);
  if (!active) await renderArtifacts();
  return active;
}

/** Poll until the job is finished. */
function startPolling() {
  view.polling = true;
  poll(refresh, POLL_MS, (message) => showAlert(alertBox, message));
}

/** Send a Cancel or Retry, then show its effect (and follow the job again after a retry). */
async function act(action, button) {
  const state = document.getElementById("action-state");
  button.disabled = true;
  try {
    await postJSON(`/jobs/${jobId}/${action}`);
    state.textContent = action === "cancel" ? "Cancel requested." : "Queued again.";
    showAlert(alertBox, null);
    if (view.polling) return;
    startPolling();
  } catch (error) {
    showAlert(alertBox, error.message);
  } finally {
    button.disabled = false;
  }
}

for (const action of ["cancel", "retry"]) {
  const button = document.getElementById(action);
  button.addEventListener("click", () => act(action, button));
}
startPolling();
