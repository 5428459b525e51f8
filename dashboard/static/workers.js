// The workers page: every worker's device, pools, status, current job and metrics, refreshed every few seconds.
import { api, bytes, dateTime, decimal, el, poll, showAlert, statusBadge } from "./tlbench.js";

const REFRESH_MS = 3000;
const DASH = "–";

/** "used / total" in binary units, or a dash. */
function usage(used, total) {
  return used == null || total == null ? DASH : `${bytes(used)} / ${bytes(total)}`;
}

/** A percentage with no decimals, or a dash. */
function percentage(value) {
  return value == null ? DASH : `${decimal(value, 0)} %`;
}

/** The current job as a link, "idle" for an online worker without one. */
function currentJob(worker) {
  const job = worker.current_job;
  if (job) return el("a", { href: `/jobs/${job.id}` }, `${job.backbone} (job ${job.id}, ${job.benchmark})`);
  return worker.status === "online" ? "idle" : DASH;
}

/** One table row for a worker; the metrics cells say when they were measured. */
function workerRow(worker) {
  const metrics = worker.metrics ?? {};
  const gpu = metrics.gpu;
  const measured = metrics.measured_at ? `measured ${dateTime(metrics.measured_at)}` : "not measured yet";
  const cell = (text) => el("td", { className: "num", title: measured }, text);
  return el("tr", {},
    el("td", {}, worker.name),
    el("td", {}, worker.host),
    el("td", {}, worker.device),
    el("td", {}, worker.role === "predict" ? "predictions" : worker.pools.join(", ")),
    el("td", {}, statusBadge(worker.status)),
    el("td", {}, currentJob(worker)),
    cell(gpu ? percentage(gpu.utilization_percent) : DASH),
    cell(gpu ? usage(gpu.memory_used_bytes, gpu.memory_total_bytes) : DASH),
    cell(metrics.cpu_percent == null ? DASH : `${percentage(metrics.cpu_percent)} (${metrics.cpu_count} cores)`),
    cell(usage(metrics.memory_used_bytes, metrics.memory_total_bytes)),
    el("td", {}, dateTime(worker.heartbeat_at)),
  );
}

/** Redraw the table; workers come and go, so it always looks again. */
async function refresh() {
  const { workers } = await api("/workers");
  document.getElementById("none").hidden = workers.length > 0;
  document.querySelector("#workers tbody").replaceChildren(...workers.map(workerRow));
  return true;
}

poll(refresh, REFRESH_MS, (message) => showAlert(document.getElementById("alert"), message));
