// Plotly helpers shared by the benchmark, job and predict pages. Plotly is the global the app serves.

// One colour per backbone, kept across every chart of a page (Okabe–Ito: distinguishable for colour-blind readers).
const PALETTE = ["#0072b2", "#e69f00", "#009e73", "#cc79a7", "#56b4e9", "#d55e00", "#f0e442", "#000000"];
const CONFIG = { responsive: true, displaylogo: false, modeBarButtonsToRemove: ["select2d", "lasso2d"] };

/** The colour of the index-th series. */
export function colour(index) {
  return PALETTE[index % PALETTE.length];
}

/** An axis with a title; `extra` adds Plotly axis settings. */
export function axis(title, extra = {}) {
  return { title: { text: title }, zeroline: false, automargin: true, ...extra };
}

/** The epoch axis up to `lastEpoch`: whole epochs, about ten ticks however long the run. */
export function epochAxis(lastEpoch) {
  return axis("Epoch", { tick0: 1, dtick: Math.max(1, Math.ceil(lastEpoch / 10)), range: [0.5, lastEpoch + 0.5] });
}

/** An axis of fractions shown as percentages from 0 to 100 %. */
export function percentAxis(title) {
  // Headroom above 100 % for the labels that sit on top of bars and points.
  return axis(title, { tickformat: ".0%", range: [0, 1.12] });
}

/** A chart layout for a card: transparent, the page's font, legend above. */
export function layout(xaxis, yaxis, extra = {}) {
  return {
    margin: { l: 16, r: 16, t: 16, b: 16 },
    xaxis,
    yaxis,
    legend: { orientation: "h", x: 0, y: 1.02, yanchor: "bottom" },
    font: { family: getComputedStyle(document.body).fontFamily },
    paper_bgcolor: "rgba(0,0,0,0)",
    plot_bgcolor: "rgba(0,0,0,0)",
    ...extra,
  };
}

/** Draw or update a chart in place (Plotly.react keeps zoom and only redraws what changed). */
export function draw(element, traces, chartLayout) {
  return Plotly.react(element, traces, { ...chartLayout, uirevision: element.id }, CONFIG);
}

/** One line of a metric over epochs. */
export function epochLine(name, epochs, metric, lineColour, dash = "solid") {
  return {
    type: "scatter",
    mode: "lines+markers",
    name,
    x: epochs.map((row) => row.epoch),
    y: epochs.map((row) => row[metric]),
    line: { color: lineColour, dash },
    marker: { size: 5 },
    legendgroup: name,
    hovertemplate: `${name}<br>epoch %{x}: %{y:.4f}<extra></extra>`,
  };
}

/** A palette colour made see-through, for areas drawn behind that colour's line. */
export function translucent(hexColour, alpha) {
  const [red, green, blue] = [1, 3, 5].map((start) => parseInt(hexColour.slice(start, start + 2), 16));
  return `rgba(${red}, ${green}, ${blue}, ${alpha})`;
}

/**
 * The spread of a metric across repeats as a shaded band: an invisible line along the lows, then one along
 * the highs filled down to it ('tonexty' fills to the trace just before, so the two must stay adjacent).
 * Grouped with the backbone's line, so hiding it in the legend hides its band too. No band: no traces.
 */
export function bandTraces(name, band, bandColour) {
  if (!band?.length) return [];
  const edge = (values) => ({
    type: "scatter",
    mode: "lines",
    x: band.map((point) => point.epoch),
    y: values,
    line: { width: 0, color: bandColour },
    legendgroup: name,
    showlegend: false,
    hoverinfo: "skip",
  });
  return [
    { ...edge(band.map((point) => point.low)), name: `${name} lowest of the repeats`, fill: "none" },
    { ...edge(band.map((point) => point.high)), name: `${name} highest of the repeats`, fill: "tonexty",
      fillcolor: translucent(bandColour, 0.18) },
  ];
}
