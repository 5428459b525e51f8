// The predict page: one uploaded image, class probabilities from every finished model, side by side.
import { api, clearFieldErrors, el, jobLink, milliseconds, pageId, percent, postForm, showFieldError } from "./tlbench.js";
import { axis, colour, draw, layout } from "./charts.js";

const benchmarkId = pageId("benchmarkId");
const form = document.getElementById("predict-form");
const fileInput = document.getElementById("file");
const preview = document.getElementById("preview");
// Each backbone keeps the colour it has on the benchmark page (its position among the jobs).
const colourIndex = new Map();
let previewUrl = null;

/** Name the benchmark and the models that can answer. */
async function describeBenchmark() {
  const benchmark = await api(`/benchmarks/${benchmarkId}`);
  benchmark.jobs.forEach((job, index) => colourIndex.set(job.id, index));
  document.getElementById("title").textContent = `Predict: ${benchmark.name}`;
  const ready = benchmark.jobs.filter((job) => job.status === "succeeded").map((job) => job.backbone);
  document.getElementById("models").textContent = ready.length
    ? `Models ready: ${ready.join(", ")}.`
    : "No job of this benchmark has succeeded yet: predictions need at least one trained model.";
}

/** Show the chosen image before it is sent. */
function showPreview() {
  if (previewUrl) URL.revokeObjectURL(previewUrl);
  const file = fileInput.files[0];
  previewUrl = file ? URL.createObjectURL(file) : null;
  preview.hidden = !file;
  if (file) preview.src = previewUrl;
}

/** One card per model: its top class, the time it took, and a bar per class. */
function predictionCard(prediction) {
  const classes = Object.entries(prediction.probabilities).sort((a, b) => b[1] - a[1]);
  const chart = el("div", { className: "chart prediction-chart", id: `prediction-${prediction.job_id}` });
  chart.style.height = `${Math.max(180, 30 * classes.length + 70)}px`;
  // The image beside each model's answer, as the seed's predict_who_is_who drew it.
  const thumbnail = el("img", { className: "thumbnail", src: previewUrl, alt: `The image ${prediction.backbone} classified` });
  const card = el("section", { className: "card" },
    el("h3", {}, jobLink({ id: prediction.job_id, backbone: prediction.backbone })),
    el("p", { className: "top-class" }, "Top: ", el("strong", {}, prediction.top), ` (${percent(prediction.probabilities[prediction.top])})`),
    el("p", { className: "small" }, milliseconds(prediction.ms, 0)),
    el("div", { className: "prediction-body" }, thumbnail, chart));
  return { card, chart, classes, colour: colour(colourIndex.get(prediction.job_id) ?? 0) };
}

/** Draw a card's horizontal bar chart, most likely class on top. */
function drawProbabilities({ chart, classes, colour: barColour }) {
  draw(chart, [{
    type: "bar",
    orientation: "h",
    y: classes.map(([name]) => name),
    x: classes.map(([, probability]) => probability),
    marker: { color: barColour },
    text: classes.map(([, probability]) => percent(probability)),
    textposition: "auto",
    hovertemplate: "%{y}: %{x:.1%}<extra></extra>",
  }], layout(axis("Probability", { tickformat: ".0%", range: [0, 1] }), axis("", { autorange: "reversed" }), { showlegend: false }));
}

/** Send the image to every finished model and show their answers. */
async function predict(event) {
  event.preventDefault();
  clearFieldErrors(form);
  const state = document.getElementById("predict-state");
  const button = document.getElementById("predict");
  const body = new FormData();
  // Without a file the API names the missing field, shown like any other refusal.
  if (fileInput.files[0]) body.append("file", fileInput.files[0]);
  button.disabled = true;
  form.setAttribute("aria-busy", "true");
  state.textContent = "Asking the workers… loading the models can take several seconds.";
  try {
    const { predictions } = await postForm(`/benchmarks/${benchmarkId}/predict`, body);
    const cards = predictions.map(predictionCard);
    document.getElementById("results").replaceChildren(...cards.map(({ card }) => card));
    cards.forEach(drawProbabilities);
    state.textContent = predictions.length === 1 ? "1 model answered." : `${predictions.length} models answered.`;
  } catch (error) {
    showFieldError(form, error);
    state.textContent = "";
  } finally {
    button.disabled = false;
    form.removeAttribute("aria-busy");
  }
}

fileInput.addEventListener("change", showPreview);
form.addEventListener("submit", predict);
describeBenchmark().catch((error) => showFieldError(form, error));
