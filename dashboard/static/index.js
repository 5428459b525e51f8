// The benchmarks list: one row per benchmark, refreshed while any of them is still running.
import { ACTIVE_STATUSES, api, dateTime, el, percent, poll, postJSON, showAlert, statusBadge } from "./tlbench.js";

const alertBox = document.getElementById("alert");
const REFRESH_MS = 2000;
const DASH = "–";

/**
 * The leader's accuracy, named for what it measures: its mean test accuracy over repeats, or, for a benchmark
 * made before held-out test sets, its best validation accuracy (a score the model was chosen on, so labelled).
 */
function leaderAccuracyCell(leader) {
  if (!leader) return el("td", { className: "num" }, DASH);
  const tested = leader.by === "test_accuracy";
  const title = tested ? "Mean test accuracy over the leader's repeats, on held-out test images"
    : "Best validation accuracy: this benchmark ran before held-out test sets";
  return el("td", { className: "num leader-accuracy", title },
    percent(tested ? leader.test_accuracy_mean : leader.best_val_accuracy),
    el("span", { className: "small" }, tested ? " test" : " validation"));
}

/** One table row for a benchmark. */
function benchmarkRow(benchmark) {
  const leader = benchmark.leader;
  return el("tr", {},
    el("td", { className: "num" }, String(benchmark.id)),
    el("td", { className: "wrap" }, el("a", { href: `/benchmarks/${benchmark.id}` }, benchmark.name)),
    el("td", {}, statusBadge(benchmark.status)),
    el("td", {}, benchmark.dataset.name),
    el("td", { className: "wrap" }, benchmark.backbones.join(", ")),
    el("td", {}, leader ? el("a", { href: `/jobs/${leader.job_id}` }, leader.backbone) : DASH),
    leaderAccuracyCell(leader),
    el("td", {}, dateTime(benchmark.created_at)),
  );
}

/** Redraw the list; answers whether to look again (something is still queued or running). */
async function refresh() {
  const { benchmarks } = await api("/benchmarks");
  document.getElementById("loading").hidden = true;
  document.getElementById("empty").hidden = benchmarks.length > 0;
  document.getElementById("list").hidden = benchmarks.length === 0;
  document.querySelector("#benchmarks tbody").replaceChildren(...benchmarks.map(benchmarkRow));
  return benchmarks.some((benchmark) => ACTIVE_STATUSES.has(benchmark.status));
}

/** Start the built-in sample benchmark and open its page. */
async function runSample(event) {
  const button = event.currentTarget;
  button.disabled = true;
  button.textContent = "Starting…";
  try {
    const created = await postJSON("/benchmarks/sample");
    window.location.assign(`/benchmarks/${created.id}`);
  } catch (error) {
    showAlert(alertBox, `Could not start the sample benchmark: ${error.message}`);
    button.disabled = false;
    button.textContent = "Run the sample benchmark";
  }
}

// The page offers the sample only where its dataset exists (dashboard/pages.py).
document.getElementById("run-sample")?.addEventListener("click", runSample);
poll(refresh, REFRESH_MS, (message) => showAlert(alertBox, message));
