// The benchmark page's "where each backbone goes wrong": F1 per class, a confusion matrix per backbone whose
// cells open the test images behind them, and the images on which the backbones disagree. Everything is the
// selected trial of each succeeded job, on the benchmark's test images (GET /jobs/<id>/predictions).

import { axis, draw, layout } from "./charts.js";
import { api, el, percent } from "./tlbench.js";

const THUMBNAIL_PX = 96;
// Enough images to see a pattern without loading hundreds of thumbnails at once.
const GALLERY_LIMIT = 40;
const DISAGREEMENT_LIMIT = 30;
const errors = { jobs: [], predictions: new Map(), key: "", shownJobId: null, cell: null };

/** The jobs with a class-by-class test result (older benchmarks and jobs without a test set have none). */
function evaluatedJobs(benchmark) {
  return benchmark.jobs.filter((job) => job.status === "succeeded" && job.summary?.evaluation);
}

/** Fetch each evaluated job's predictions once per finished attempt. */
async function loadPredictions(jobs) {
  const missing = jobs.filter((job) => !errors.predictions.has(predictionsKey(job)));
  const fetched = await Promise.all(missing.map((job) => api(`/jobs/${job.id}/predictions`)));
  missing.forEach((job, index) => errors.predictions.set(predictionsKey(job), fetched[index]));
}

function predictionsKey(job) {
  return `${job.id}@${job.finished_at}`;
}

function predictionsOf(job) {
  return errors.predictions.get(predictionsKey(job));
}

/** A dataset image as a small picture with a caption, as the gallery and the disagreement view show it. */
function thumbnail(datasetId, index, caption) {
  return el("figure", { className: "thumb" },
    el("img", { src: `/api/v1/datasets/${datasetId}/images/${index}?size=${THUMBNAIL_PX}`, alt: `test image ${index}`,
      width: THUMBNAIL_PX }),
    el("figcaption", {}, caption));
}

/** F1 per class, one row per backbone; the best of each class is marked (all of them when tied). */
function renderClassGrid(jobs) {
  const classes = jobs[0].summary.evaluation.classes;
  const f1 = (job, index) => job.summary.evaluation.per_class[index].f1;
  const best = classes.map((_, index) => Math.max(...jobs.map((job) => f1(job, index))));
  document.querySelector("#class-f1 thead tr").replaceChildren(
    el("th", { scope: "col" }, "Backbone"),
    ...classes.map((name) => el("th", { scope: "col", className: "num" }, name)),
    el("th", { scope: "col", className: "num", title: "Mean of the per-class F1" }, "Macro-F1"),
    el("th", { scope: "col", className: "num", title: "Mean recall over the classes" }, "Balanced accuracy"),
    el("th", { scope: "col", className: "num", title: "Expected calibration error: lower is better" }, "Calibration error"));
  document.querySelector("#class-f1 tbody").replaceChildren(...jobs.map((job) => el("tr", {},
    el("th", { scope: "row" }, job.backbone),
    ...classes.map((_, index) => el("td", { className: `num${f1(job, index) === best[index] ? " best" : ""}` },
      percent(f1(job, index)))),
    el("td", { className: "num" }, percent(job.summary.evaluation.macro_f1)),
    el("td", { className: "num" }, percent(job.summary.evaluation.balanced_accuracy)),
    el("td", { className: "num" }, percent(job.summary.evaluation.expected_calibration_error)))));
}

/** Counts of (true class, predicted class) over a job's test predictions. */
function confusionMatrix(shown) {
  const matrix = shown.classes.map(() => shown.classes.map(() => 0));
  for (const prediction of shown.predictions) matrix[prediction.true][prediction.predicted] += 1;
  return matrix;
}

/** The backbone selector, kept on the backbone chosen as jobs finish. */
function renderSelector(jobs) {
  const select = document.getElementById("confusion-backbone");
  if (!jobs.some((job) => job.id === errors.shownJobId)) errors.shownJobId = jobs[0].id;
  select.replaceChildren(...jobs.map((job) => el("option", { value: job.id, selected: job.id === errors.shownJobId },
    job.backbone)));
}

/** Open a cell's images on click; Plotly adds `on` to the element when it first draws there. */
function listenForCellClicks(element) {
  if (element.dataset.listening) return;
  element.dataset.listening = "yes";
  element.on("plotly_click", (event) => {
    const [point] = event.points;
    errors.cell = [point.y, point.x];
    renderGallery();
  });
}

/** The shown backbone's confusion matrix as a heatmap: true classes down, predictions across. */
async function renderConfusion() {
  const job = errors.jobs.find((candidate) => candidate.id === errors.shownJobId);
  const shown = predictionsOf(job);
  const matrix = confusionMatrix(shown);
  const element = document.getElementById("chart-confusion");
  await draw(element, [{
    type: "heatmap",
    x: shown.classes,
    y: shown.classes,
    z: matrix,
    text: matrix.map((row) => row.map(String)),
    texttemplate: "%{text}",
    colorscale: [[0, "#f6f8fa"], [1, "#0072b2"]],
    showscale: false,
    hovertemplate: "true %{y}, predicted %{x}: %{z} images<extra></extra>",
  }], layout(axis("Predicted class", { type: "category" }),
    axis("True class", { type: "category", autorange: "reversed" }), { showlegend: false }));
  element.dataset.jobId = String(job.id);
  listenForCellClicks(element);
}

/** The test images behind one confusion cell, with their true and predicted class and the confidence. */
function renderGallery() {
  const job = errors.jobs.find((candidate) => candidate.id === errors.shownJobId);
  const gallery = document.getElementById("gallery");
  const note = document.getElementById("gallery-note");
  if (!errors.cell || !job) {
    note.textContent = "Click a cell of the confusion matrix to see its test images.";
    gallery.replaceChildren();
    return;
  }
  const shown = predictionsOf(job);
  const [trueClass, predictedClass] = errors.cell;
  const images = shown.predictions.filter((p) => shown.classes[p.true] === trueClass && shown.classes[p.predicted] === predictedClass);
  const verdict = trueClass === predictedClass ? "right" : "wrong";
  note.textContent = `${job.backbone}: ${images.length} test image${images.length === 1 ? "" : "s"} of ${trueClass} `
    + `predicted ${predictedClass} (${verdict})${images.length > GALLERY_LIMIT ? `, the first ${GALLERY_LIMIT} shown` : ""}.`;
  gallery.replaceChildren(...images.slice(0, GALLERY_LIMIT).map((p) => thumbnail(shown.dataset_id, p.index,
    `${shown.classes[p.true]} → ${shown.classes[p.predicted]} (${percent(p.confidence, 0)})`)));
}

/**
 * Test images on which the backbones do not all agree, or that every backbone gets wrong (possible label
 * noise): those first, then by how many backbones got them wrong.
 */
function disagreements(jobs) {
  const shownBy = jobs.map((job) => predictionsOf(job));
  const byImage = new Map();
  shownBy.forEach((shown, column) => {
    for (const prediction of shown.predictions) {
      if (!byImage.has(prediction.index)) byImage.set(prediction.index, { index: prediction.index, true: prediction.true, by: [] });
      byImage.get(prediction.index).by[column] = prediction;
    }
  });
  const rows = [...byImage.values()].map((row) => {
    const wrong = row.by.filter((p) => p && p.predicted !== row.true).length;
    return { ...row, wrong, wrongByAll: wrong === jobs.length, agree: new Set(row.by.map((p) => p?.predicted)).size === 1 };
  });
  return rows.filter((row) => !row.agree || row.wrongByAll)
    .sort((a, b) => Number(b.wrongByAll) - Number(a.wrongByAll) || b.wrong - a.wrong || a.index - b.index);
}

/** The disagreement table: the image, its true class, each backbone's prediction. */
function renderDisagreements(jobs) {
  const shown = predictionsOf(jobs[0]);
  const rows = disagreements(jobs);
  const noise = rows.filter((row) => row.wrongByAll).length;
  document.getElementById("disagreement-note").textContent = rows.length
    ? `${rows.length} test image${rows.length === 1 ? "" : "s"} where the backbones disagree or all go wrong`
      + `${noise ? `; ${noise} wrong by every backbone (possible label noise)` : ""}`
      + `${rows.length > DISAGREEMENT_LIMIT ? `; the first ${DISAGREEMENT_LIMIT} shown` : ""}.`
    : "Every backbone predicts every test image alike.";
  document.querySelector("#disagreements thead tr").replaceChildren(
    el("th", { scope: "col" }, "Image"), el("th", { scope: "col" }, "True class"),
    ...jobs.map((job) => el("th", { scope: "col" }, job.backbone)));
  document.querySelector("#disagreements tbody").replaceChildren(...rows.slice(0, DISAGREEMENT_LIMIT).map((row) =>
    el("tr", { className: row.wrongByAll ? "label-noise" : "" },
      el("td", {}, thumbnail(shown.dataset_id, row.index, row.wrongByAll ? "wrong by all" : `#${row.index}`)),
      el("td", {}, shown.classes[row.true]),
      ...row.by.map((p) => el("td", { className: p.predicted === row.true ? "right" : "wrong" },
        `${p.predicted === row.true ? "✓" : "✗"} ${shown.classes[p.predicted]} (${percent(p.confidence, 0)})`)))));
}

/** Redraw the section for the benchmark as it now stands; fetches only predictions it has not seen. */
export async function renderErrors(benchmark) {
  const jobs = evaluatedJobs(benchmark);
  document.getElementById("errors-empty").hidden = jobs.length > 0;
  document.getElementById("errors").hidden = jobs.length === 0;
  const key = jobs.map(predictionsKey).join("|");
  if (!jobs.length || key === errors.key) return;
  await loadPredictions(jobs);
  errors.key = key;
  errors.jobs = jobs;
  renderClassGrid(jobs);
  renderSelector(jobs);
  await renderConfusion();
  renderGallery();
  renderDisagreements(jobs);
}

document.getElementById("confusion-backbone").addEventListener("change", async (event) => {
  errors.shownJobId = Number(event.target.value);
  errors.cell = null;
  await renderConfusion();
  renderGallery();
});
