// The job page: curves, result, configuration, artifacts, error, and Cancel/Retry, polled while it runs.
import {
  ACTIVE_STATUSES, api, bytes, count, dateTime, decimal, duration, el, milliseconds, millions, pageId, percent, poll,
  postJSON, progress, showAlert, statusBadge,
} from "./tlbench.js";
import { axis, colour, draw, epochAxis, epochLine, layout, percentAxis } from "./charts.js";

const jobId = pageId("jobId");
const POLL_MS = 1000;
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

/** Accuracy and loss over epochs, train (solid) and validation (dashed). */
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

/** The summary of a finished job, or why there is none. */
function renderSummary(job) {
  const { summary } = job;
  if (!summary) {
    const why = ACTIVE_STATUSES.has(job.status) ? "when the job finishes" : `none: job ${job.status}`;
    fillPairs(document.getElementById("summary"), [["Result", why]]);
    return;
  }
  fillPairs(document.getElementById("summary"), [
    ["Best val accuracy", percent(summary.best_val_accuracy)],
    ["Val loss at best", decimal(summary.best_val_loss, 3)],
    ["Best epoch", `${count(summary.best_epoch)} of ${count(summary.epochs_run)} run`],
    ["Ended", summary.cancelled ? "cancelled" : summary.stopped_early ? "stopped early" : "all epochs"],
    ["Training time", duration(summary.train_seconds)],
    ["Parameters", `${millions(summary.params_total)} (${millions(summary.params_trainable)} trainable)`],
    ["Model size", bytes(summary.model_bytes)],
    ["Latency per image", milliseconds(summary.latency_ms_per_image)],
    ["Images", `${count(summary.n_train)} train, ${count(summary.n_validation)} validation, ${summary.image_size} px`],
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

/** Fetch the job and its epochs; redraw when something changed; answer whether it is still active. */
async function refresh() {
  const [job, { epochs }] = await Promise.all([api(`/jobs/${jobId}`), api(`/jobs/${jobId}/epochs`)]);
  const active = ACTIVE_STATUSES.has(job.status);
  view.polling = active;
  const current = [job.status, job.attempt, job.phase, job.cancel_requested, epochs.length, job.heartbeat_at].join("|");
  if (current === view.signature) return active;
  view.signature = current;
  renderHeader(job);
  renderButtons(job);
  renderFailure(job);
  renderCurves(epochs);
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
