import { postImage, renderDiagnoses, renderMessage, renderOverlay, renderSimilar } from "/static/components.js";

const $ = (id) => document.getElementById(id);
let health = { index_size: 0, segmenter: false };

async function loadInfo() {
  try {
    health = await (await fetch("/health")).json();
    const v = await (await fetch("/version")).json();
    const cal = v.classifier.calibration || {};
    const ece = cal.ece_after !== undefined ? ` · test ECE ${cal.ece_before.toFixed(3)} → ${cal.ece_after.toFixed(3)}` : "";
    $("model-info").textContent = `dermino ${v.dermino} · backbone ${v.classifier.backbone} · ` +
      `${v.classifier.labels.length} classes${ece} · ${health.index_size} reference cases`;
  } catch (e) {
    $("model-info").textContent = `server not reachable: ${e}`;
  }
}

async function run(panel, job, render) {
  renderMessage(panel, "working…");
  try { render(await job()); } catch (e) { renderMessage(panel, e.message, "error"); }
}

async function analyse(file) {
  $("status").textContent = `analysing ${file.name}…`;
  $("results").hidden = false;
  $("preview").src = URL.createObjectURL(file);
  const jobs = [
    run($("diagnoses"), () => postImage("/classify", file, { top_k: 5 }), (r) => renderDiagnoses($("diagnoses"), r)),
    run($("attention"), () => postImage("/explain", file, { method: "rollout" }),
      (r) => renderOverlay($("attention"), r.overlay, `attention rollout over all blocks (${r.grid.join("×")} patches)`, "attention")),
  ];
  if (health.segmenter) {
    jobs.push(run($("mask"), () => postImage("/segment", file),
      (r) => renderOverlay($("mask"), r.overlay, `lesion ${(100 * r.lesion_fraction).toFixed(1)} % of the image`, "mask")));
  } else {
    renderMessage($("mask"), "no segmenter configured on this server");
  }
  if (health.index_size > 0) {
    jobs.push(run($("similar"), () => postImage("/similar", file, { k: 6 }), (r) => renderSimilar($("similar"), r)));
  } else {
    renderMessage($("similar"), "no case index configured on this server");
  }
  await Promise.all(jobs);
  $("status").textContent = `${file.name}: done`;
  document.body.dataset.state = "done";
}

function pick(files) {
  if (files && files.length) analyse(files[0]);
}

const drop = $("drop");
$("file").addEventListener("change", (e) => pick(e.target.files));
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => { e.preventDefault(); drop.classList.remove("over"); pick(e.dataTransfer.files); });
loadInfo();
