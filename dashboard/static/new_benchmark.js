// The new-benchmark form: pick or upload a dataset, choose backbones and settings, submit to the API.
import { api, clearFieldErrors, count, el, postForm, postJSON, showFieldError } from "./tlbench.js";

const form = document.getElementById("benchmark-form");
const datasetSelect = document.getElementById("dataset");
const NUMBER_FIELDS = ["image_size", "epochs", "batch_size", "repeats", "patience", "fine_tune_layers",
  "validation_split", "test_split", "seed"];
// Datasets by id, so choosing one in the select can show its summary without asking again.
const datasets = new Map();

/** The select's label for a dataset. */
function datasetLabel(dataset) {
  return `${dataset.name} (#${dataset.id}): ${count(dataset.images)} images, ${dataset.classes.length} classes`;
}

/** Remember `list` and refill the select, newest first, choosing `selectedId`. */
function addDatasets(list, selectedId) {
  list.forEach((dataset) => datasets.set(dataset.id, dataset));
  const newestFirst = [...datasets.values()].sort((a, b) => b.id - a.id);
  const options = newestFirst.map((dataset) => el("option", { value: String(dataset.id) }, datasetLabel(dataset)));
  datasetSelect.replaceChildren(...(options.length ? options : [el("option", { value: "" }, "No dataset yet: upload one below")]));
  if (selectedId != null) datasetSelect.value = String(selectedId);
  showDatasetSummary();
}

/** Show the chosen dataset's classes, counts and the files its scan skipped. */
function showDatasetSummary() {
  const dataset = datasets.get(Number(datasetSelect.value));
  const summary = document.getElementById("dataset-summary");
  summary.hidden = !dataset;
  if (!dataset) return;
  const classes = el("ul", {}, dataset.classes.map((name) => el("li", {}, `${name}: ${count(dataset.counts[name])} images`)));
  const skipped = dataset.skipped.length
    ? el("details", {}, el("summary", {}, `${dataset.skipped.length} files skipped`),
      el("ul", {}, dataset.skipped.map((entry) => el("li", {}, el("code", {}, entry.file), ` ${entry.reason}`))))
    : el("p", { className: "small" }, "No file was skipped.");
  summary.replaceChildren(el("strong", {}, `${dataset.name}: ${dataset.classes.length} classes, ${count(dataset.images)} images`),
    classes, skipped);
}

/** One checkbox per backbone of the registry; the seed comparison's five start checked. */
function fillBackbones(backbones) {
  document.getElementById("backbones").replaceChildren(...backbones.map((backbone) => el("label", {},
    el("input", { type: "checkbox", name: "backbones", value: backbone.name, checked: backbone.seed }),
    el("span", {}, backbone.name, " ", el("span", { className: "small" }, `${backbone.default_size} px · min ${backbone.min_size}`)))));
}

/** Upload the chosen zip; on success, select the new dataset and show what its scan found. */
async function uploadDataset() {
  const button = document.getElementById("upload");
  const state = document.getElementById("upload-state");
  clearFieldErrors(form);
  button.disabled = true;
  state.textContent = "Uploading and scanning…";
  try {
    const body = new FormData();
    const file = document.getElementById("file").files[0];
    // Without a file the API answers "file: is required", shown like any other refusal.
    if (file) body.append("file", file);
    const dataset = await postForm("/datasets", body);
    addDatasets([dataset], dataset.id);
    state.textContent = `Uploaded “${dataset.name}”.`;
  } catch (error) {
    // Every upload problem concerns the file, even those the API does not pin to a field.
    error.field ??= "file";
    showFieldError(form, error);
    state.textContent = "";
  } finally {
    button.disabled = false;
  }
}

/** A refusal of the form's own, shown like the API's: next to the field it names. */
class FieldError extends Error {
  constructor(message, field) {
    super(message);
    this.field = field;
  }
}

/**
 * The learning rates typed as "1e-3, 3e-4": one rate is sent as a number, several as a list, none leaves the
 * API's default. Only what is not a number at all is refused here; the API checks the ranges and repeats.
 */
function learningRates(text) {
  // Spaces separate as well as commas: "1e-3 3e-4" is read as two rates, not refused.
  const parts = text.split(/[\s,]+/).filter(Boolean);
  const rates = parts.map(Number);
  const wrong = parts.find((part, index) => !Number.isFinite(rates[index]));
  if (wrong !== undefined) throw new FieldError(`learning_rate: “${wrong}” is not a number`, "learning_rate");
  if (rates.length === 0) return undefined;
  return rates.length === 1 ? rates[0] : rates;
}

/** The JSON request from the form; blank optional fields are left to the API's defaults. */
function benchmarkRequest() {
  const data = new FormData(form);
  const request = {
    dataset: data.get("dataset") ? Number(data.get("dataset")) : undefined,
    backbones: data.getAll("backbones"),
    weights: data.get("weights"),
    augment: data.has("augment"),
    name: data.get("name").trim() || undefined,
    learning_rate: learningRates(data.get("learning_rate")),
  };
  for (const name of NUMBER_FIELDS) {
    const value = data.get(name).trim();
    if (value !== "") request[name] = Number(value);
  }
  return request;
}

/** Submit the benchmark and open its page, or show the API's objection next to its field. */
async function submitBenchmark(event) {
  event.preventDefault();
  clearFieldErrors(form);
  const button = document.getElementById("submit");
  button.disabled = true;
  try {
    const created = await postJSON("/benchmarks", benchmarkRequest());
    window.location.assign(`/benchmarks/${created.id}`);
  } catch (error) {
    showFieldError(form, error);
    button.disabled = false;
  }
}

/** Load the datasets and the backbone registry into the form. */
async function start() {
  const [datasetList, backboneList] = await Promise.all([api("/datasets"), api("/backbones")]);
  addDatasets(datasetList.datasets, datasetList.datasets[0]?.id);
  fillBackbones(backboneList.backbones);
}

datasetSelect.addEventListener("change", showDatasetSummary);
document.getElementById("upload").addEventListener("click", uploadDataset);
form.addEventListener("submit", submitBenchmark);
start().catch((error) => showFieldError(form, error));
