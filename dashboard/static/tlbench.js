// Helpers every page shares: the JSON API client, number and time formatting, DOM building, polling.

const API = "/api/v1";
export const ACTIVE_STATUSES = new Set(["queued", "running"]);

/** An API answer that was not 2xx, carrying the API's message and the field it names. */
class ApiError extends Error {
  constructor(message, field, status) {
    super(message);
    this.field = field;
    this.status = status;
  }
}

// Present when the server asks for a token (TLBENCH_TOKEN): the session's CSRF token, which every
// state-changing call must send back, or the server refuses it.
const CSRF_TOKEN = document.querySelector('meta[name="csrf-token"]')?.content;
const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

/** Call the JSON API; answers the parsed body or throws an ApiError. */
export async function api(path, options = {}) {
  const headers = { Accept: "application/json", ...options.headers };
  if (CSRF_TOKEN && !SAFE_METHODS.has((options.method ?? "GET").toUpperCase())) headers["X-CSRFToken"] = CSRF_TOKEN;
  const response = await fetch(API + path, { ...options, headers });
  // The session ended (logged out elsewhere, or the server's token changed): log in again, then come back.
  if (response.status === 401 && CSRF_TOKEN) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  // Some failures (a proxy, a crashed worker) answer HTML; keep the status text then.
  const body = await response.json().catch(() => ({ error: response.statusText }));
  if (!response.ok) throw new ApiError(body.error || `HTTP ${response.status}`, body.field ?? null, response.status);
  return body;
}

/** POST a JSON body (or nothing) to the API. */
export function postJSON(path, body) {
  const options = { method: "POST" };
  if (body !== undefined) {
    options.headers = { "Content-Type": "application/json" };
    options.body = JSON.stringify(body);
  }
  return api(path, options);
}

/** POST multipart form data (file uploads) to the API. */
export function postForm(path, formData) {
  return api(path, { method: "POST", body: formData });
}

const DASH = "–";

/** A fraction as a percentage, e.g. 0.8571 → "85.7 %". */
export function percent(fraction, digits = 1) {
  return fraction == null ? DASH : `${(100 * fraction).toFixed(digits)} %`;
}

/** A number with a fixed count of decimals in the viewer's locale. */
export function decimal(value, digits = 2) {
  if (value == null) return DASH;
  return value.toLocaleString(undefined, { minimumFractionDigits: digits, maximumFractionDigits: digits });
}

/** A whole number with the viewer's digit grouping. */
export function count(value) {
  return value == null ? DASH : Math.round(value).toLocaleString();
}

/** A large count in millions, e.g. 14978892 → "14.98 M". */
export function millions(value) {
  return value == null ? DASH : `${decimal(value / 1e6, 2)} M`;
}

/** A size in bytes with a binary unit. */
export function bytes(value) {
  if (value == null) return DASH;
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  const power = Math.min(units.length - 1, Math.floor(Math.log2(Math.max(value, 1)) / 10));
  return power === 0 ? `${value} B` : `${decimal(value / 1024 ** power, 1)} ${units[power]}`;
}

/** Milliseconds, e.g. 8.07 → "8.07 ms". */
export function milliseconds(value, digits = 2) {
  return value == null ? DASH : `${decimal(value, digits)} ms`;
}

/** A duration in seconds, e.g. 75 → "1 min 15 s". */
export function duration(seconds) {
  if (seconds == null) return DASH;
  if (seconds < 10) return `${decimal(seconds, 1)} s`;
  const whole = Math.round(seconds);
  const minutes = Math.floor(whole / 60);
  if (minutes === 0) return `${whole} s`;
  if (minutes < 60) return `${minutes} min ${whole % 60} s`;
  return `${Math.floor(minutes / 60)} h ${minutes % 60} min`;
}

/** An ISO timestamp in the viewer's locale and time zone. */
export function dateTime(iso) {
  return iso ? new Date(iso).toLocaleString() : DASH;
}

/** Create an element: el("a", {href: "/x", className: "y"}, "text", child...). */
export function el(tag, properties = {}, ...children) {
  const element = document.createElement(tag);
  for (const [name, value] of Object.entries(properties)) {
    if (value == null || value === false) continue;
    if (name in element && name !== "list") element[name] = value;
    else element.setAttribute(name, value === true ? "" : value);
  }
  // Children may be `condition && element`: null, undefined and false add nothing.
  element.append(...children.flat().filter((child) => child != null && child !== false));
  return element;
}

/** A status word styled by its value (the word itself carries the meaning, not only the colour). */
export function statusBadge(status) {
  return el("span", { className: `status status-${status}` }, status);
}

/** A job's progress: a bar and "x/N epochs". */
export function progress(job) {
  return [
    el("progress", { max: job.epochs, value: job.epochs_done, "aria-label": `${job.backbone}: epoch ${job.epochs_done} of ${job.epochs}` }),
    el("span", { className: "small epochs-done" }, `${job.epochs_done}/${job.epochs} epochs`),
  ];
}

/** A link to a job's page. */
export function jobLink(job, text = job.backbone) {
  return el("a", { href: `/jobs/${job.id}` }, text);
}

/** The id a page was rendered for, from <main data-...>. */
export function pageId(name) {
  return Number(document.querySelector("main").dataset[name]);
}

/** Mean of the non-null values, or null. */
export function mean(values) {
  const present = values.filter((value) => value != null);
  return present.length ? present.reduce((sum, value) => sum + value, 0) / present.length : null;
}

/** Show a message in a page's alert area (role="alert" reads it out), or clear it with null. */
export function showAlert(element, message) {
  element.textContent = message ?? "";
  element.hidden = !message;
}

/**
 * Call `refresh` now and again every `interval` ms while it answers true; one call at a time,
 * so a slow answer never piles up requests. A failed refresh shows its error and tries again,
 * unless the API refused the request itself (4xx: asking again would not help).
 */
export function poll(refresh, interval, onError) {
  async function tick() {
    let again;
    try {
      again = await refresh();
      onError(null);
    } catch (error) {
      onError(error.message);
      again = !(error.status >= 400 && error.status < 500);
    }
    if (again) setTimeout(tick, interval);
  }
  tick();
}

/** Clear every field error in a form. */
export function clearFieldErrors(form) {
  for (const message of form.querySelectorAll("[data-error-for]")) message.textContent = "";
  for (const input of form.querySelectorAll("[aria-invalid]")) input.removeAttribute("aria-invalid");
}

/** Put an API error next to the field it names (or in the form's general slot) and focus that field. */
export function showFieldError(form, error) {
  const slot = form.querySelector(`[data-error-for="${CSS.escape(error.field ?? "")}"]`)
    ?? form.querySelector('[data-error-for="form"]');
  slot.textContent = error.message;
  const input = error.field && form.querySelector(`[name="${CSS.escape(error.field)}"]`);
  if (input) {
    input.setAttribute("aria-invalid", "true");
    input.focus();
  } else {
    slot.focus();
  }
}
