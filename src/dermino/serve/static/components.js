// Reusable UI pieces: each takes a container element and the JSON of one API response.
// Other pages (e.g. a reader study) import these instead of re-implementing them.

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (k === "class") node.className = v; else node.setAttribute(k, v);
  }
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

export function renderDiagnoses(container, response) {
  container.replaceChildren();
  const list = el("ol", { class: "diagnoses", "data-testid": "diagnoses" });
  for (const d of response.predictions) {
    const pct = (100 * d.probability).toFixed(1);
    const bar = el("span", { class: "bar" });
    bar.style.width = `${pct}%`;
    list.append(el("li", { class: "diagnosis" },
      el("span", { class: "label" }, d.label),
      el("span", { class: "prob" }, `${pct} %`),
      el("span", { class: "track" }, bar)));
  }
  container.append(list, el("p", { class: "muted" },
    `Calibrated probabilities (temperature ${response.temperature.toFixed(2)}).`));
}

export function renderOverlay(container, dataUrl, caption, testid = "overlay") {
  container.replaceChildren(el("figure", {},
    el("img", { src: dataUrl, alt: caption, "data-testid": testid }),
    el("figcaption", { class: "muted" }, caption)));
}

export function renderSimilar(container, response, fields = ["age", "sex", "site", "source"]) {
  container.replaceChildren();
  const grid = el("div", { class: "cases", "data-testid": "similar" });
  for (const c of response.cases) {
    const meta = fields.filter((k) => c.metadata[k] !== undefined && c.metadata[k] !== null && c.metadata[k] !== "")
      .map((k) => `${k} ${c.metadata[k]}`).join(" · ");
    grid.append(el("figure", { class: "case" },
      el("img", { src: c.thumbnail, alt: `${c.label} (${c.image_name})` }),
      el("figcaption", {},
        el("strong", {}, c.label), el("br"),
        `similarity ${c.similarity.toFixed(3)}`, el("br"),
        el("span", { class: "muted" }, meta))));
  }
  container.append(grid);
}

export function renderMessage(container, text, kind = "muted") {
  container.replaceChildren(el("p", { class: kind }, text));
}

export async function postImage(path, file, params = {}) {
  const body = new FormData();
  body.append("file", file);
  const query = new URLSearchParams(params).toString();
  const res = await fetch(query ? `${path}?${query}` : path, { method: "POST", body });
  const json = await res.json().catch(() => ({}));
  if (!res.ok) {
    const detail = typeof json.detail === "string" ? json.detail : JSON.stringify(json.detail ?? res.statusText);
    throw new Error(`${res.status}: ${detail}`);
  }
  return json;
}
