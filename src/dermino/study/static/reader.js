// The reader's page: one case at a time; round 2 adds the AI's help. State lives on the server.
import { el, renderDiagnoses, renderOverlay, renderSimilar, renderMessage } from "/static/components.js";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const headers = { "X-Study-Token": token };
const $ = (id) => document.getElementById(id);
let current = null;
let shownAt = 0;
let hiddenMs = 0;
let hiddenSince = 0;
document.addEventListener("visibilitychange", () => {
  if (document.hidden) hiddenSince = performance.now();
  else if (hiddenSince) { hiddenMs += performance.now() - hiddenSince; hiddenSince = 0; }
});

async function api(path, opts = {}) {
  const res = await fetch(`/study/api${path}`, { ...opts, headers: { ...headers, ...(opts.headers || {}) } });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${res.status}: ${typeof detail === "string" ? detail : JSON.stringify(detail)}`);
  }
  return res;
}

async function blobUrl(path) {
  const res = await fetch(path, { headers });
  if (!res.ok) throw new Error(`${res.status} loading ${path}`);
  return URL.createObjectURL(await res.blob());
}

function showProgress(p) {
  const box = $("progress");
  box.replaceChildren();
  for (const r of [1, 2]) {
    const done = p.done[String(r)];
    const bar = el("progress", { max: p.total, value: done, "aria-label": `round ${r}` });
    box.append(el("span", { class: r === p.round ? "round active" : "round", "data-testid": `progress-${r}` },
      `Round ${r}${r === 1 ? " (unaided)" : " (with AI)"}: ${done}/${p.total} `, bar));
  }
}

function setupForm(labels) {
  const sel = $("diagnosis");
  sel.replaceChildren(el("option", { value: "" }, "choose…"), ...labels.map((l) => el("option", { value: l }, l)));
  const fs = $("confidence");
  for (let i = 1; i <= 5; i++) {
    fs.append(el("label", { class: "conf" }, el("input", { type: "radio", name: "confidence", value: i, required: "" }), ` ${i}`));
  }
}

async function load() {
  document.body.dataset.state = "loading";
  const data = await (await api("/current")).json();
  showProgress(data.progress);
  current = data.case;
  if (!current) {
    $("case").hidden = true;
    renderMessage($("message"), "Thank you: you have finished both rounds.", "done");
    document.body.dataset.state = "finished";
    return;
  }
  $("case").hidden = false;
  $("case-title").textContent = `Round ${current.round}, case ${current.position} of ${data.progress.total}`;
  $("case-image").src = await blobUrl(current.image);
  $("answer-form").reset();
  const ai = current.ai;
  for (const id of ["ai-top", "ai-overlay", "ai-similar"]) $(id).hidden = !ai;
  if (ai) {
    renderDiagnoses($("diagnoses"), { predictions: ai.top, temperature: 1 });
    $("diagnoses").querySelector("p")?.remove();
    renderOverlay($("overlay"), await blobUrl(ai.overlay), "attention rollout", "attention");
    if (ai.similar.length) renderSimilar($("similar"), { cases: ai.similar.map((c, i) => ({ ...c, rank: i + 1, image_name: "" })) });
    else renderMessage($("similar"), "no similar-case index in this study");
  }
  $("message").textContent = current.round === 1 ? "Round 1: your own diagnosis, without AI." : "Round 2: the AI's suggestions are shown below.";
  shownAt = performance.now(); hiddenMs = 0;
  document.body.dataset.state = `round${current.round}`;
}

$("answer-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const conf = document.querySelector("input[name=confidence]:checked");
  const body = { case_id: current.id, round: current.round, diagnosis: $("diagnosis").value,
    confidence: Number(conf && conf.value), comment: $("comment").value,
    seconds: Math.max(0, (performance.now() - shownAt - hiddenMs) / 1000) };
  $("submit").disabled = true;
  try {
    await api("/answers", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) });
    await load();
  } catch (e) {
    renderMessage($("message"), `Not saved: ${e.message}`, "error");
    if (e.message.startsWith("409")) await load();  // already answered (e.g. in another tab): move on
  } finally {
    $("submit").disabled = !current;  // finished: the form is hidden, and stays disabled
  }
});

(async () => {
  try {
    if (!token) throw new Error("no token: open the private link you were given");
    const me = await (await api("/me")).json();
    $("study-name").textContent = `· ${me.study} · ${me.name}`;
    setupForm(me.labels);
    await load();
  } catch (e) {
    renderMessage($("message"), e.message, "error");
    document.body.dataset.state = "error";
  }
})();
