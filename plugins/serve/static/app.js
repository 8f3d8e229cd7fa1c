// The page of `mmgen serve`: forms post to the JSON API, then the job is polled until done, showing each
// refinement step as it finishes. No framework and nothing fetched from elsewhere: it works offline.
"use strict";

const $ = (id) => document.getElementById(id);
const POLL_MS = 250;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (key === "onclick") node.addEventListener("click", value);
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

// ---- tabs ----
function showTab(name) {
  for (const tab of document.querySelectorAll("nav button")) {
    const on = tab.dataset.panel === name;
    tab.setAttribute("aria-selected", String(on));
    $("panel-" + tab.dataset.panel).hidden = !on;
  }
}
for (const tab of document.querySelectorAll("nav button")) tab.addEventListener("click", () => showTab(tab.dataset.panel));
for (const button of document.querySelectorAll("[data-random-seed]")) {
  button.addEventListener("click", () => { $(button.dataset.randomSeed).value = Math.floor(Math.random() * 1e6); });
}

// ---- defaults from the server: the run's sampler settings ----
fetch("/api/info").then((r) => r.json()).then((info) => {
  const d = info.defaults;
  $("t2i-prompt").value = info.example_prompt;
  for (const id of ["t2i-steps", "inpaint-steps"]) $(id).value = d.image_steps ?? "";
  $("i2t-steps").value = d.text_steps ?? "";
  for (const id of ["t2i-guidance", "inpaint-guidance"]) $(id).value = d.guidance ?? "";
  $("model-info").textContent = `sampler ${d.sampler} · up to ${info.limits.prompt_chars} characters a prompt, `
    + `${Math.round(info.limits.body_bytes / 1000)} kB an upload`;
});

// ---- jobs ----
function errorText(body, status) {
  const detail = body && body.detail;
  if (Array.isArray(detail)) return detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ");
  return detail || `the server answered ${status}`;
}

function statusLine(out) {
  const bar = el("div", { class: "bar" }, el("div"));
  const text = el("span", { class: "status-text" }, "sending…");
  out.replaceChildren(el("div", { class: "status" }, bar, text));
  return {
    set(job) {
      bar.firstChild.style.width = `${Math.round(job.progress * 100)}%`;
      if (job.status === "queued") text.textContent = job.position ? `waiting: ${job.position} ahead` : "waiting";
      else if (job.status === "running") text.textContent = job.steps ? `step ${job.step} of ${job.steps}` : "starting";
      else if (job.status === "done") text.textContent = `done in ${job.seconds.toFixed(1)} s`;
      else text.textContent = "failed";
    },
  };
}

function showError(out, message) {
  out.append(el("p", { class: "error", role: "alert" }, message));
}

async function runJob(url, init, out, button, render) {
  button.disabled = true;
  const line = statusLine(out);
  try {
    let response = await fetch(url, init);
    let job = await response.json().catch(() => null);
    if (response.status === 503) {
      const wait = response.headers.get("Retry-After");
      return showError(out, `The server is busy: try again in ${wait} s.`);
    }
    if (!response.ok) return showError(out, errorText(job, response.status));
    const view = render(job);
    while (job.status === "queued" || job.status === "running") {
      line.set(job);
      view.update(job);
      await new Promise((resolve) => setTimeout(resolve, POLL_MS));
      response = await fetch(`/api/jobs/${job.id}`);
      if (!response.ok) return showError(out, errorText(await response.json(), response.status));
      job = await response.json();
    }
    line.set(job);
    view.update(job);
    if (job.status === "failed") showError(out, job.error);
  } catch (err) {
    showError(out, `No answer from the server (${err.message}).`);
  } finally {
    button.disabled = false;
  }
}

// Frames of picture steps, one strip per candidate; `shown` counts the frames already drawn.
function pictureSteps(container, job, shown) {
  for (const frame of job.frames.slice(shown.count)) {
    frame.files.forEach((name, row) => {
      if (!container.children[row]) container.append(el("div", { class: "strip", "data-row": row }));
      container.children[row].append(
        el("figure", {}, el("img", { src: job.files + name, alt: `step ${frame.step}` }),
          el("figcaption", {}, `${frame.step}/${frame.steps}`)));
    });
    for (const text of frame.texts) shown.texts.push(`${frame.step}/${frame.steps}: ${text}`);
  }
  shown.count = job.frames.length;
}

function pictureUrl(job, index) {
  return job.files + job.result.files[index];
}

async function useAs(url, panel) {
  const blob = await (await fetch(url)).blob();
  const file = new File([blob], "picture.png", { type: "image/png" });
  const input = $(panel + "-image");
  const files = new DataTransfer();
  files.items.add(file);
  input.files = files.files;
  input.dispatchEvent(new Event("change"));
  showTab(panel);
}

// ---- text -> image ----
$("form-t2i").addEventListener("submit", (event) => {
  event.preventDefault();
  const number = (id) => ($(id).value === "" ? null : Number($(id).value));
  const body = {
    prompt: $("t2i-prompt").value, candidates: number("t2i-candidates"), steps: number("t2i-steps"),
    seed: number("t2i-seed") ?? 0, guidance: number("t2i-guidance"),
  };
  const out = $("out-t2i");
  const init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  runJob("/api/t2i", init, out, $("t2i-go"), () => {
    const pictures = el("div", { class: "pictures", id: "t2i-pictures" });
    const strips = el("div", { class: "steps" });
    const shown = { count: 0, texts: [] };
    out.append(pictures, el("h2", {}, "Refinement steps (faded: tokens not fixed yet)"), strips);
    return {
      update(job) {
        pictureSteps(strips, job, shown);
        const live = job.result ? job.result.files.map((_, i) => pictureUrl(job, i))
          : (job.frames.length ? job.frames[job.frames.length - 1].files.map((name) => job.files + name) : []);
        pictures.replaceChildren(...live.map((src, i) => {
          const caption = el("figcaption", {}, job.result ? `#${i + 1}` : "refining…");
          if (job.result) {
            caption.append(el("button", { type: "button", class: "link", onclick: () => useAs(src, "i2t") }, "Caption it"),
              el("button", { type: "button", class: "link", onclick: () => useAs(src, "inpaint") }, "Inpaint it"));
          }
          return el("figure", { class: job.result ? "output-picture" : "" },
            el("img", { class: "big", src, alt: job.result ? `picture ${i + 1}` : "refining" }), caption);
        }));
      },
    };
  });
});

// ---- uploads: a file input with a drop zone and a preview ----
function dropZone(zoneId, inputId, onPicture) {
  const zone = $(zoneId);
  const input = $(inputId);
  zone.addEventListener("dragover", (e) => { e.preventDefault(); zone.classList.add("over"); });
  zone.addEventListener("dragleave", () => zone.classList.remove("over"));
  zone.addEventListener("drop", (e) => {
    e.preventDefault();
    zone.classList.remove("over");
    input.files = e.dataTransfer.files;
    input.dispatchEvent(new Event("change"));
  });
  input.addEventListener("change", () => { if (input.files[0]) onPicture(URL.createObjectURL(input.files[0])); });
}

dropZone("i2t-drop", "i2t-image", (url) => { $("i2t-preview").src = url; $("i2t-preview").hidden = false; });

function formOf(ids) {
  const form = new FormData();
  for (const [name, id] of Object.entries(ids)) {
    const input = $(id);
    if (input.type === "file") { if (input.files[0]) form.append(name, input.files[0]); }
    else if (input.value !== "") form.append(name, input.value);
  }
  return form;
}

// ---- image -> text ----
$("form-i2t").addEventListener("submit", (event) => {
  event.preventDefault();
  const out = $("out-i2t");
  if (!$("i2t-image").files[0]) { out.replaceChildren(); return showError(out, "Choose a picture first."); }
  const form = formOf({ image: "i2t-image", steps: "i2t-steps", seed: "i2t-seed" });
  runJob("/api/i2t", { method: "POST", body: form }, out, $("i2t-go"), () => {
    const caption = el("p", { class: "caption", id: "i2t-caption" }, "…");
    const texts = el("ol", { class: "texts" });
    out.append(caption, el("h2", {}, "Refinement steps (every word may still change)"), texts);
    return {
      update(job) {
        const latest = job.frames.length ? job.frames[job.frames.length - 1].texts[0] : "…";
        caption.textContent = job.result ? job.result.texts[0] : latest;
        caption.classList.toggle("final", Boolean(job.result));
        texts.replaceChildren(...job.frames.map((f) => el("li", {}, f.texts[0])));
      },
    };
  });
});

// ---- inpainting: choose the region by dragging over the picture ----
const canvas = $("inpaint-canvas");
const context = canvas.getContext("2d");
let inpaintPicture = null;

function region() {
  const parts = $("inpaint-region").value.split(",").map(Number);
  return parts.length === 4 && parts.every((x) => x >= 0 && x <= 1) ? parts : null;
}

function drawRegion() {
  if (!inpaintPicture) return;
  context.imageSmoothingEnabled = false;
  context.drawImage(inpaintPicture, 0, 0, canvas.width, canvas.height);
  const box = region();
  if (!box) return;
  const [top, left, bottom, right] = box.map((v) => v * canvas.width);
  context.fillStyle = "rgba(48, 86, 211, 0.35)";
  context.fillRect(left, top, right - left, bottom - top);
  context.strokeStyle = "#3056d3";
  context.lineWidth = 2;
  context.strokeRect(left, top, right - left, bottom - top);
}

dropZone("inpaint-drop", "inpaint-image", (url) => {
  const picture = new Image();
  picture.onload = () => { inpaintPicture = picture; $("inpaint-canvas-wrap").hidden = false; drawRegion(); };
  picture.src = url;
});
$("inpaint-region").addEventListener("input", drawRegion);

let dragStart = null;
const fraction = (e) => {
  const rect = canvas.getBoundingClientRect();
  const clamp = (v) => Math.min(1, Math.max(0, v));
  return [clamp((e.clientY - rect.top) / rect.height), clamp((e.clientX - rect.left) / rect.width)];
};
canvas.addEventListener("pointerdown", (e) => { dragStart = fraction(e); canvas.setPointerCapture(e.pointerId); });
canvas.addEventListener("pointermove", (e) => {
  if (!dragStart) return;
  const [y, x] = fraction(e);
  const round = (v) => Math.round(v * 100) / 100;
  const box = [Math.min(y, dragStart[0]), Math.min(x, dragStart[1]), Math.max(y, dragStart[0]), Math.max(x, dragStart[1])];
  if (box[2] - box[0] > 0.02 && box[3] - box[1] > 0.02) $("inpaint-region").value = box.map(round).join(",");
  drawRegion();
});
canvas.addEventListener("pointerup", () => { dragStart = null; });

$("form-inpaint").addEventListener("submit", (event) => {
  event.preventDefault();
  const out = $("out-inpaint");
  if (!$("inpaint-image").files[0]) { out.replaceChildren(); return showError(out, "Choose a picture first."); }
  const form = formOf({
    image: "inpaint-image", region: "inpaint-region", caption: "inpaint-caption", steps: "inpaint-steps",
    guidance: "inpaint-guidance", seed: "inpaint-seed",
  });
  const before = canvas.toDataURL();
  runJob("/api/inpaint", { method: "POST", body: form }, out, $("inpaint-go"), () => {
    const after = el("img", { class: "big", alt: "repainted", id: "inpaint-result" });
    const pair = el("div", { class: "pair" },
      el("figure", {}, el("img", { class: "big", src: before, alt: "the region" }), el("figcaption", {}, "region")),
      el("figure", {}, after, el("figcaption", {}, "repainted")));
    const strips = el("div", { class: "steps" });
    const shown = { count: 0, texts: [] };
    out.append(pair, el("h2", {}, "Refinement steps"), strips);
    return {
      update(job) {
        pictureSteps(strips, job, shown);
        const last = job.frames.filter((f) => f.files.length).pop();
        if (job.result) after.src = pictureUrl(job, 0);
        else if (last) after.src = job.files + last.files[0];
      },
    };
  });
});
