// Admin page: progress per reader, the analysis so far, and the CSV export (admin token in the #fragment).
import { el, renderMessage } from "/static/components.js";

const token = new URLSearchParams(location.hash.slice(1)).get("token") || "";
const headers = { "X-Admin-Token": token };
const $ = (id) => document.getElementById(id);
const fmt = (v, d = 3) => (v === null || v === undefined ? "–" : Number.isInteger(v) ? String(v) : typeof v === "number" ? v.toFixed(d) : String(v));

async function get(path) {
  const res = await fetch(`/study/api/admin${path}`, { headers });
  if (!res.ok) {
    let detail = res.statusText;
    try { detail = (await res.json()).detail; } catch (e) { /* not JSON */ }
    throw new Error(`${res.status}: ${detail}`);
  }
  return res;
}

function table(rows, cols, testid) {
  const t = el("table", { class: "admin", "data-testid": testid });
  t.append(el("tr", {}, ...cols.map(([, h]) => el("th", {}, h))));
  for (const r of rows) t.append(el("tr", {}, ...cols.map(([k]) => el("td", {}, fmt(r[k])))));
  return t;
}

(async () => {
  try {
    const p = await (await get("/progress")).json();
    $("study-name").textContent = `· ${p.study} · ${p.cases} cases`;
    $("readers").replaceChildren(table(p.readers, [["reader", "reader"], ["experience", "experience"],
      ["round1", "round 1 done"], ["round2", "round 2 done"], ["total", "cases"]], "progress"));
    $("export").addEventListener("click", async (ev) => {
      ev.preventDefault();
      const url = URL.createObjectURL(await (await get("/export.csv")).blob());
      Object.assign(el("a", { href: url, download: "answers.csv" })).click();
    });
    const res = await fetch("/study/api/admin/analysis", { headers });
    if (res.status === 409) { renderMessage($("analysis"), (await res.json()).detail); document.body.dataset.state = "done"; return; }
    if (!res.ok) throw new Error(`${res.status} analysis`);
    const a = await res.json();
    const m = a.metrics;
    const ci = (k) => `${fmt(m[k].value)} [${fmt(m[k].ci_low)}, ${fmt(m[k].ci_high)}]`;
    const box = $("analysis");
    const waiting = a.waiting_for && a.waiting_for.length
      ? `Provisional: the analysis covers ${a.included.length} reader(s) with answers in both rounds (${a.included.join(", ")}); it waits for ${a.waiting_for.join("; ")}.`
      : `Final: every reader has finished both rounds (${a.included.length} readers).`;
    box.replaceChildren(
      el("p", { class: "status", "data-testid": "analysis-status" }, waiting),
      table([
        { what: "accuracy, round 1 (unaided)", v: ci("accuracy_round1") },
        { what: "accuracy, round 2 (with AI)", v: ci("accuracy_round2") },
        { what: "change in accuracy", v: ci("accuracy_change") },
        { what: "balanced accuracy, round 1 → 2", v: `${fmt(m.balanced_accuracy_round1.value)} → ${fmt(m.balanced_accuracy_round2.value)}` },
        { what: "paired t-test p (readers)", v: fmt(m.p_ttest.value, 4) },
        { what: "Wilcoxon signed-rank p", v: fmt(m.p_wilcoxon.value, 4) },
        { what: "switched to AI when it was right", v: `${fmt(m.switch_to_ai_when_right.value)} (n=${m.switch_to_ai_when_right.n})` },
        { what: "switched to AI when it was wrong", v: `${fmt(m.switch_to_ai_when_wrong.value)} (n=${m.switch_to_ai_when_wrong.n})` },
        { what: "Fleiss' kappa, round 1 → 2", v: `${fmt(m.fleiss_kappa_round1.value)} → ${fmt(m.fleiss_kappa_round2.value)}` },
        { what: "AI top-1 accuracy on the cases", v: fmt(m.ai_accuracy.value) },
      ], [["what", "measure"], ["v", "value [95 % CI]"]], "summary"),
      el("h3", {}, "Per reader"),
      table(a.per_reader, [["reader", "reader"], ["experience", "experience"], ["acc_1", "acc. round 1"], ["acc_2", "acc. round 2"],
        ["bacc_1", "bal. acc. 1"], ["bacc_2", "bal. acc. 2"], ["change", "change"]], "per-reader"),
      el("h3", {}, "By experience"),
      table(a.groups, [["experience", "group"], ["readers", "readers"], ["acc_1", "round 1"], ["acc_2", "round 2"],
        ["change", "change"], ["p_value", "paired t p"]], "groups"),
      el("div", { class: "plots" }, ...a.plots.map((src) => el("img", { src, alt: "analysis plot" }))));
    document.body.dataset.state = "done";
  } catch (e) {
    renderMessage($("message"), e.message, "error");
    document.body.dataset.state = "error";
  }
})();
