// The workers page: every worker's device, status and current job, refreshed every few seconds.
import { api, bytes, dateTime, el, poll, showAlert, statusBadge } from "./tlbench.js";

const REFRESH_MS = 3000;

/** One table row for a worker. */
function workerRow(worker) {
  const job = worker.current_job;
  return el("tr", {},
    el("td", {}, worker.name),
    el("td", {}, worker.host),
    el("td", {}, worker.device),
    el("td", { className: "num" }, bytes(worker.memory_bytes)),
    el("td", {}, worker.queues.join(", ")),
    el("td", {}, statusBadge(worker.status)),
    el("td", {}, job ? el("a", { href: `/jobs/${job.id}` }, `${job.backbone} (job ${job.id}, benchmark ${job.benchmark_id})`) : worker.status === "online" ? "idle" : "–"),
    el("td", {}, dateTime(worker.started_at)),
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
