// Wharf console: one page that calls the management API (/api/v1) and the
// registry API (/v2) as the signed-in user. The session cookie is HttpOnly;
// every change carries the CSRF token /console/api/session hands out.
// Nothing here writes HTML from data: every text goes in through
// textContent (see `h`), so a repository or tag name cannot inject markup.
"use strict";

const PAGE = 50;
const REFRESH_MS = 2000;
const MANIFEST_TYPES = [
  "application/vnd.oci.image.index.v1+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.docker.distribution.manifest.v2+json",
].join(", ");

const state = { session: null, timer: null, regions: null };

// ---- small helpers -------------------------------------------------------

function h(tag, props, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(props || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "class") el.className = v;
    else if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else el.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function svg(tag, attrs, ...children) {
  const el = document.createElementNS("http://www.w3.org/2000/svg", tag);
  for (const [k, v] of Object.entries(attrs || {})) el.setAttribute(k, v);
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

function bytes(n) {
  if (n === null || n === undefined) return "—";
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return (i === 0 ? n : n.toFixed(n < 10 ? 1 : 0)) + " " + units[i];
}

function ago(ms) {
  if (!ms) return "—";
  const s = Math.max(0, (Date.now() - ms) / 1000);
  if (s < 60) return Math.floor(s) + " s ago";
  if (s < 3600) return Math.floor(s / 60) + " min ago";
  if (s < 86400) return Math.floor(s / 3600) + " h ago";
  return Math.floor(s / 86400) + " d ago";
}

function when(ms) {
  return ms ? h("span", { title: new Date(ms).toISOString() }, ago(ms)) : "—";
}

function shortDigest(d) {
  return d && d.includes(":") ? d.split(":")[0] + ":" + d.split(":")[1].slice(0, 12) : d || "";
}

// An image's config type is no artifact type worth showing.
const IMAGE_CONFIGS = ["application/vnd.oci.image.config.v1+json", "application/vnd.docker.container.image.v1+json"];

function kind(mediaType, artifactType) {
  if (artifactType && !IMAGE_CONFIGS.includes(artifactType)) return artifactType;
  const names = {
    "application/vnd.oci.image.index.v1+json": "OCI index",
    "application/vnd.oci.image.manifest.v1+json": "OCI image",
    "application/vnd.docker.distribution.manifest.list.v2+json": "Docker manifest list",
    "application/vnd.docker.distribution.manifest.v2+json": "Docker image",
  };
  return names[mediaType] || mediaType || "—";
}

function isIndex(mediaType) {
  return /index|manifest\.list/.test(mediaType || "");
}

function locks(a) {
  if (!a) return [];
  const out = [];
  if (!a.write_enabled) out.push(h("span", { class: "badge warn", title: "writes refused" }, "write-locked"));
  if (!a.delete_enabled) out.push(h("span", { class: "badge warn", title: "deletes refused" }, "delete-locked"));
  if (!a.read_enabled) out.push(h("span", { class: "badge bad", title: "pulls refused" }, "read-locked"));
  if (!a.list_enabled) out.push(h("span", { class: "badge", title: "hidden from listings" }, "unlisted"));
  return out;
}

function toast(message, bad) {
  let box = document.querySelector(".toasts");
  if (!box) { box = h("div", { class: "toasts", role: "status" }); document.body.append(box); }
  const t = h("div", { class: "toast" + (bad ? " bad" : "") }, message);
  box.append(t);
  setTimeout(() => t.remove(), 5000);
}

// A confirmation naming exactly what will change; resolves true on yes.
function confirmDialog(title, text, action) {
  return new Promise((resolve) => {
    const d = h("dialog", { "aria-label": title },
      h("h3", {}, title), h("p", {}, text),
      h("div", { class: "actions" },
        h("button", { type: "button", onclick: () => { d.close(); resolve(false); } }, "Cancel"),
        h("button", { type: "button", class: "danger solid", "data-confirm": "", onclick: () => { d.close(); resolve(true); } }, action)));
    d.addEventListener("cancel", () => resolve(false));
    d.addEventListener("close", () => d.remove());
    document.body.append(d);
    d.showModal();
  });
}

// ---- the server ----------------------------------------------------------

class ApiError extends Error {
  constructor(status, message) { super(message); this.status = status; }
}

async function call(method, path, body, accept) {
  const headers = { accept: accept || "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    if (state.session) headers["x-wharf-csrf"] = state.session.csrf;
    if (body !== undefined) headers["content-type"] = "application/json";
  }
  const resp = await fetch(path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (resp.status === 401 && !path.startsWith("/console/api/login")) {
    toLogin();
    throw new ApiError(401, "signed out");
  }
  if (!resp.ok) {
    let message = resp.status + " " + resp.statusText;
    try {
      const e = await resp.json();
      if (e.errors && e.errors[0]) message = e.errors[0].message || e.errors[0].code;
    } catch (_) { /* not JSON */ }
    throw new ApiError(resp.status, message);
  }
  return resp;
}

async function getJson(path, accept) {
  return (await call("GET", path, undefined, accept)).json();
}

function q(params) {
  return new URLSearchParams(params).toString();
}

function toLogin() {
  const next = location.hash && location.hash !== "#/" ? "?next=" + encodeURIComponent(location.hash) : "";
  location.assign("/console/login" + next);
}

// ---- layout --------------------------------------------------------------

function shell(active, crumbs, body) {
  const s = state.session;
  const nav = [["repositories", "Repositories"], ["replication", "Replication"]];
  if (s.owner) nav.push(["tokens", "Users & tokens"], ["webhooks", "Webhooks"], ["gc", "Garbage collection"], ["registries", "Registries"]);
  return h("div", { class: "shell" },
    h("nav", { class: "side", "aria-label": "Sections" },
      h("div", { class: "brand" }, h("img", { src: "/console/assets/logo.svg", alt: "" }), "Wharf"),
      nav.map(([id, label]) => h("a", { href: "#/" + id, class: active === id ? "active" : null, "aria-current": active === id ? "page" : null }, label)),
      h("div", { class: "foot" }, "registry ", h("b", {}, s.registry), h("br"), "served by region ", h("b", {}, s.region))),
    h("div", { class: "main" },
      h("header", { class: "top" },
        h("div", { class: "crumbs" }, crumbs.map((c, i) => [i ? h("span", {}, "/") : null, c])),
        h("div", { class: "who" }, h("span", {}, "Signed in as ", h("b", { id: "user" }, s.user)),
          h("button", { type: "button", onclick: logout }, "Sign out"))),
      h("main", { class: "content", id: "content" }, body)));
}

function mount(node) {
  const app = document.getElementById("app");
  app.replaceChildren(node);
}

function setContent(...nodes) {
  const c = document.getElementById("content");
  if (c) c.replaceChildren(...nodes.filter((n) => n !== null && n !== undefined));
}

function failure(e) {
  return h("div", { class: "error", role: "alert" }, e.message || String(e));
}

// A page of `rows` with a pager below; `render(row)` makes a <tr>.
function pagedTable(head, rows, render, page, onPage, emptyText) {
  const pages = Math.max(1, Math.ceil(rows.length / PAGE));
  page = Math.min(page, pages - 1);
  const shown = rows.slice(page * PAGE, page * PAGE + PAGE);
  return h("div", {},
    h("div", { class: "table-wrap" },
      h("table", {},
        h("thead", {}, h("tr", {}, head)),
        h("tbody", {}, shown.length ? shown.map(render) : h("tr", {}, h("td", { class: "empty", colspan: head.length }, emptyText))))),
    h("div", { class: "pager" },
      h("span", {}, rows.length ? `${page * PAGE + 1}–${page * PAGE + shown.length} of ${rows.length}` : ""),
      h("button", { type: "button", disabled: page === 0, onclick: () => onPage(page - 1), "aria-label": "Previous page" }, "‹ Previous"),
      h("button", { type: "button", disabled: page >= pages - 1, onclick: () => onPage(page + 1), "aria-label": "Next page" }, "Next ›")));
}

function sortHeader(label, key, sort, onSort, cls) {
  const on = sort.key === key;
  const arrow = on ? (sort.desc ? " ↓" : " ↑") : "";
  return h("th", { class: cls, "aria-sort": on ? (sort.desc ? "descending" : "ascending") : null },
    h("button", { type: "button", class: "sort", onclick: () => onSort(key) }, label + arrow));
}

// ---- login ---------------------------------------------------------------

function loginPage() {
  const err = h("div", { class: "error", role: "alert", hidden: true });
  const user = h("input", { type: "text", name: "username", autocomplete: "username", required: true, autofocus: true });
  const pass = h("input", { type: "password", name: "password", autocomplete: "current-password", required: true });
  const submit = h("button", { type: "submit", class: "primary" }, "Sign in");
  const form = h("form", {
    onsubmit: async (ev) => {
      ev.preventDefault();
      submit.disabled = true;
      err.hidden = true;
      try {
        await call("POST", "/console/api/login", { username: user.value, password: pass.value });
        const next = new URLSearchParams(location.search).get("next") || "";
        location.assign("/console/" + (next.startsWith("#/") ? next : ""));
      } catch (e) {
        err.textContent = e.message;
        err.hidden = false;
        submit.disabled = false;
        pass.select();
      }
    },
  },
    h("div", { class: "brand" }, h("img", { src: "/console/assets/logo.svg", alt: "" }), "Wharf console"),
    err,
    h("label", {}, "User or token name", user),
    h("label", {}, "Password", pass),
    submit,
    h("p", { class: "hint" }, "The same credentials as ", h("code", {}, "docker login"), "."));
  mount(h("div", { class: "login" }, form));
}

async function logout() {
  try { await call("POST", "/console/api/logout"); } catch (_) { /* gone anyway */ }
  location.assign("/console/login");
}

// ---- repositories --------------------------------------------------------

const repoView = { rows: null, filter: "", sort: { key: "name", desc: false }, page: 0 };

async function loadRepositories(progress) {
  const rows = [];
  let next = "/api/v1/repositories?n=1000";
  while (next) {
    const resp = await call("GET", next);
    rows.push(...(await resp.json()));
    progress(rows.length);
    const link = resp.headers.get("link");
    const m = link && link.match(/<([^>]+)>/);
    next = m ? m[1] : null;
  }
  return rows;
}

async function repositoriesPage() {
  mount(shell("repositories", [h("span", { class: "here" }, "Repositories")], h("div", { class: "loading" }, "Loading repositories…")));
  try {
    repoView.rows = await loadRepositories((n) => setContent(h("div", { class: "loading" }, `Loading repositories… ${n}`)));
  } catch (e) { setContent(failure(e)); return; }
  drawRepositories();
}

function drawRepositories() {
  const v = repoView;
  const f = v.filter.toLowerCase();
  const rows = v.rows.filter((r) => r.name.toLowerCase().includes(f));
  const dir = v.sort.desc ? -1 : 1;
  rows.sort((a, b) => v.sort.key === "name" ? dir * a.name.localeCompare(b.name)
    : dir * ((a[v.sort.key] || 0) - (b[v.sort.key] || 0)));
  const onSort = (key) => { v.sort = { key, desc: v.sort.key === key ? !v.sort.desc : key !== "name" }; v.page = 0; drawRepositories(); };
  const tags = v.rows.reduce((n, r) => n + r.tag_count, 0);
  const search = h("input", {
    type: "search", placeholder: "Search repositories  ( / )", "aria-label": "Search repositories", value: v.filter,
    oninput: (ev) => { v.filter = ev.target.value; v.page = 0; drawRepositories(); focusSearch(); },
  });
  setContent(
    h("h1", {}, "Repositories"),
    h("p", { class: "sub" }, `${v.rows.length} repositories, ${tags} tags`),
    h("div", { class: "toolbar" }, search, h("span", { class: "grow" }),
      h("span", { class: "hint" }, rows.length === v.rows.length ? "" : `${rows.length} match`)),
    pagedTable(
      [sortHeader("Name", "name", v.sort, onSort), sortHeader("Tags", "tag_count", v.sort, onSort, "num"),
        sortHeader("Manifests", "manifest_count", v.sort, onSort, "num"), sortHeader("Last push", "updated_ms", v.sort, onSort), h("th", {}, "Locks")],
      rows,
      (r) => h("tr", {},
        h("td", { class: "wrap" }, h("a", { href: "#/repository/" + encodeURIComponent(r.name), "data-repo": r.name }, r.name)),
        h("td", { class: "num" }, r.tag_count), h("td", { class: "num" }, r.manifest_count),
        h("td", {}, when(r.updated_ms)), h("td", {}, locks(r.attributes))),
      v.page, (p) => { v.page = p; drawRepositories(); },
      v.rows.length ? "No repository matches." : "No repositories yet: push an image to see it here."));
}

function focusSearch() {
  const s = document.querySelector("input[type=search]");
  if (s) { s.focus(); s.setSelectionRange(s.value.length, s.value.length); }
}

// ---- one repository's tags ----------------------------------------------

const tagView = { repo: null, rows: null, perms: null, info: null, filter: "", sort: { key: "updated_ms", desc: true }, page: 0 };
const details = new Map(); // digest -> {size, platforms}

async function repositoryPage(repo) {
  mount(shell("repositories", [h("a", { href: "#/repositories" }, "Repositories"), h("span", { class: "here" }, repo)],
    h("div", { class: "loading" }, "Loading tags…")));
  if (tagView.repo !== repo) Object.assign(tagView, { repo, filter: "", page: 0, sort: { key: "updated_ms", desc: true } });
  try {
    const [rows, perms, info] = await Promise.all([
      getJson("/api/v1/repositories/tags?" + q({ repository: repo })),
      getJson("/console/api/permissions?" + q({ repository: repo })),
      getJson("/api/v1/repositories/show?" + q({ repository: repo })),
    ]);
    Object.assign(tagView, { rows, perms, info });
  } catch (e) { setContent(failure(e)); return; }
  drawTags();
}

function drawTags() {
  const v = tagView;
  const f = v.filter.toLowerCase();
  const rows = v.rows.filter((t) => t.name.toLowerCase().includes(f) || t.digest.includes(f));
  const dir = v.sort.desc ? -1 : 1;
  rows.sort((a, b) => v.sort.key === "name" ? dir * a.name.localeCompare(b.name) : dir * ((a.updated_ms || 0) - (b.updated_ms || 0)));
  const onSort = (key) => { v.sort = { key, desc: v.sort.key === key ? !v.sort.desc : key !== "name" }; v.page = 0; drawTags(); };
  const head = [sortHeader("Tag", "name", v.sort, onSort), h("th", {}, "Digest"), h("th", {}, "Type"),
    h("th", {}, "Architecture"), h("th", { class: "num" }, "Size"), sortHeader("Pushed", "updated_ms", v.sort, onSort),
    h("th", {}, "Locks"), h("th", {}, "")];
  const table = pagedTable(head, rows, (t) => tagRow(v.repo, t), v.page, (p) => { v.page = p; drawTags(); },
    v.rows.length ? "No tag matches." : "This repository has no tags.");
  const a = v.info.attributes;
  const repoLocked = !a.write_enabled || !a.delete_enabled;
  setContent(
    h("div", { class: "toolbar" }, h("h1", { class: "grow" }, v.repo), locks(a),
      v.perms.write_metadata ? h("button", { type: "button", "data-repo-lock": "", onclick: () => setRepoLock(v.repo, !repoLocked) }, repoLocked ? "Unlock repository" : "Lock repository") : null,
      v.perms.delete ? h("button", { type: "button", class: "danger", "data-repo-delete": "", onclick: () => deleteRepository(v.repo, v.rows.length) }, "Delete repository") : null),
    h("p", { class: "sub" }, `${v.rows.length} tags · ${v.info.manifest_count} manifests`, v.perms.delete ? "" : " · read only for you"),
    h("div", { class: "toolbar" },
      h("input", { type: "search", placeholder: "Filter tags or digests  ( / )", "aria-label": "Filter tags", value: v.filter,
        oninput: (ev) => { v.filter = ev.target.value; v.page = 0; drawTags(); focusSearch(); } })),
    table);
  fillDetails(v.repo, rows.slice(v.page * PAGE, v.page * PAGE + PAGE));
}

function tagRow(repo, t) {
  const perms = tagView.perms;
  const locked = t.attributes && (!t.attributes.write_enabled || !t.attributes.delete_enabled);
  return h("tr", { "data-tag": t.name },
    h("td", {}, h("a", { href: "#/image?" + q({ repo, ref: t.name }) }, t.name)),
    h("td", {}, h("code", { title: t.digest }, shortDigest(t.digest))),
    h("td", {}, kind(t.media_type)),
    h("td", { class: "pending", "data-arch": t.digest }, "…"),
    h("td", { class: "num pending", "data-size": t.digest }, "…"),
    h("td", {}, when(t.updated_ms)),
    h("td", {}, locks(t.attributes)),
    h("td", {},
      perms.write_metadata ? h("button", { type: "button", class: "small", onclick: () => setTagLock(repo, t.name, !locked) }, locked ? "Unlock" : "Lock") : null, " ",
      perms.delete ? h("button", { type: "button", class: "small danger", "data-delete": t.name, onclick: () => deleteTag(repo, t.name) }, "Delete") : null));
}

// Sizes and architectures of the rows on screen, fetched as they show.
async function fillDetails(repo, rows) {
  const todo = rows.filter((t) => !details.has(t.digest));
  const worker = async () => {
    while (todo.length) {
      const t = todo.shift();
      try { details.set(t.digest, await imageSummary(repo, t)); } catch (_) { details.set(t.digest, { size: t.image_size, platforms: "?" }); }
      paintDetail(t.digest);
    }
  };
  rows.forEach((t) => paintDetail(t.digest));
  await Promise.all([worker(), worker(), worker(), worker()]);
}

function paintDetail(digest) {
  const d = details.get(digest);
  if (!d) return;
  document.querySelectorAll(`[data-arch="${CSS.escape(digest)}"]`).forEach((el) => { el.textContent = d.platforms || "—"; el.classList.remove("pending"); });
  document.querySelectorAll(`[data-size="${CSS.escape(digest)}"]`).forEach((el) => { el.textContent = bytes(d.size); el.classList.remove("pending"); });
}

// The platforms of one tag's image: an index's from its manifest, an
// image's from its config (two small reads, only for the rows on screen).
async function imageSummary(repo, t) {
  const manifest = await getJson(`/v2/${repo}/manifests/${t.digest}`, MANIFEST_TYPES);
  if (Array.isArray(manifest.manifests)) {
    const ps = manifest.manifests.map((m) => m.platform && platformOf(m.platform)).filter((p) => p && p !== "unknown/unknown");
    // An index's own blobs are none: its size is its platforms'.
    return { size: null, platforms: ps.join(", ") || "—" };
  }
  const config = await configOf(repo, manifest);
  return { size: t.image_size, platforms: config ? platformOf(config) : "—" };
}

function platformOf(config) {
  return [config.os, config.architecture, config.variant].filter(Boolean).join("/") || "—";
}

// The image's config blob (small JSON), when the manifest has one that is JSON.
async function imageConfig(repo, digest) {
  return configOf(repo, await getJson(`/v2/${repo}/manifests/${digest}`, MANIFEST_TYPES));
}

async function configOf(repo, manifest) {
  const c = manifest.config;
  if (!c || !c.digest || !/json/.test(c.mediaType || "") || c.size > 1 << 20) return null;
  try { return await getJson(`/v2/${repo}/blobs/${c.digest}`, "*/*"); } catch (_) { return null; }
}

async function deleteTag(repo, tag) {
  const yes = await confirmDialog("Delete tag", `Delete the tag ${repo}:${tag}? The image stays reachable by digest until it is deleted or collected.`, `Delete ${tag}`);
  if (!yes) return;
  try {
    await call("DELETE", "/api/v1/images?" + q({ image: `${repo}:${tag}` }));
    toast(`Deleted ${repo}:${tag}`);
    tagView.rows = tagView.rows.filter((t) => t.name !== tag);
    drawTags();
  } catch (e) { toast(e.message, true); }
}

async function setRepoLock(repo, lock) {
  try {
    await call("PATCH", "/api/v1/repositories", { repository: repo, write_enabled: !lock, delete_enabled: !lock });
    toast(`${lock ? "Locked" : "Unlocked"} ${repo}`);
    await repositoryPage(repo);
  } catch (e) { toast(e.message, true); }
}

async function deleteRepository(repo, tags) {
  const yes = await confirmDialog("Delete repository", `Delete the repository ${repo} with its ${tags} tags and every manifest in it?`, `Delete ${repo}`);
  if (!yes) return;
  try {
    await call("DELETE", "/api/v1/repositories?" + q({ repository: repo }));
    toast(`Deleted ${repo}`);
    location.hash = "#/repositories";
  } catch (e) { toast(e.message, true); }
}

async function setTagLock(repo, tag, lock) {
  try {
    await call("PATCH", "/api/v1/repositories", { repository: repo, reference: tag, write_enabled: !lock, delete_enabled: !lock });
    toast(`${lock ? "Locked" : "Unlocked"} ${repo}:${tag}`);
    await repositoryPage(repo);
  } catch (e) { toast(e.message, true); }
}

// ---- one image -----------------------------------------------------------

async function imagePage(repo, ref) {
  const isDigest = ref.includes(":");
  const image = repo + (isDigest ? "@" : ":") + ref;
  mount(shell("repositories", [h("a", { href: "#/repositories" }, "Repositories"),
    h("a", { href: "#/repository/" + encodeURIComponent(repo) }, repo), h("span", { class: "here" }, ref)],
  h("div", { class: "loading" }, "Loading image…")));
  let img, perms, regions;
  try {
    [img, perms, regions] = await Promise.all([
      getJson("/api/v1/images?" + q({ image, replication: "true" })),
      getJson("/console/api/permissions?" + q({ repository: repo })),
      regionNames(),
    ]);
  } catch (e) { setContent(failure(e)); return; }
  const summary = h("div", { class: "cards" },
    card("Digest", h("code", {}, img.digest)),
    card("Type", kind(img.media_type, img.artifact_type)),
    card("Size", h("span", { class: "stat" }, img.manifests.length ? "per platform" : bytes(img.image_size))),
    card("Created", when(img.created_ms)),
    card("Tags", img.tags.length ? img.tags.map((t) => h("span", { class: "badge info" }, t)) : "untagged"),
    card("Locks", locks(img.attributes).length ? locks(img.attributes) : "none"));
  const tabs = [["layers", "Layers"], ["where", "Where it is"], ["manifest", "Manifest"], ["config", "Config"], ["referrers", "Referrers"]];
  const panel = h("div", { id: "panel" });
  const tabBar = h("div", { class: "tabs", role: "tablist" }, tabs.map(([id, label]) =>
    h("button", { type: "button", role: "tab", "data-tab": id, onclick: () => show(id) }, label)));
  const show = (id) => {
    tabBar.querySelectorAll("button").forEach((b) => b.setAttribute("aria-selected", b.dataset.tab === id ? "true" : "false"));
    panel.replaceChildren(h("div", { class: "loading" }, "Loading…"));
    imageTab(id, repo, img, regions).then((n) => panel.replaceChildren(n), (e) => panel.replaceChildren(failure(e)));
  };
  const actions = perms.delete ? h("button", { type: "button", class: "danger", onclick: async () => {
    const yes = await confirmDialog("Delete image", `Delete ${repo}@${img.digest} and every tag on it (${img.tags.join(", ") || "none"})?`, "Delete image");
    if (!yes) return;
    try { await call("DELETE", "/api/v1/images?" + q({ image: `${repo}@${img.digest}` })); toast("Deleted " + shortDigest(img.digest)); location.hash = "#/repository/" + encodeURIComponent(repo); } catch (e) { toast(e.message, true); }
  } }, "Delete image") : null;
  setContent(
    h("div", { class: "toolbar" }, h("h1", { class: "grow" }, `${repo}${isDigest ? "@" + shortDigest(ref) : ":" + ref}`), actions),
    summary, img.manifests.length ? children(repo, img) : null, tabBar, panel);
  show(img.manifests.length ? "manifest" : "layers");
}

function card(title, ...body) {
  return h("div", { class: "card" }, h("div", { class: "stat-label" }, title), h("div", {}, body));
}

function children(repo, img) {
  return h("div", {}, h("h2", {}, "Platforms"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", {}, "Platform"), h("th", {}, "Digest"), h("th", {}, "Type"))),
      h("tbody", {}, img.manifests.map((m) => h("tr", {},
        h("td", {}, m.platform || "—"),
        h("td", {}, h("a", { href: "#/image?" + q({ repo, ref: m.digest }) }, h("code", {}, shortDigest(m.digest)))),
        h("td", {}, kind(m.media_type))))))));
}

async function imageTab(id, repo, img, regions) {
  if (id === "layers") {
    const rows = img.layers;
    if (!rows.length) return h("div", { class: "empty" }, "An index has no layers of its own: open a platform above.");
    return h("div", { class: "table-wrap" }, h("table", { class: "matrix" },
      h("thead", {}, h("tr", {}, h("th", {}, "#"), h("th", {}, "Digest"), h("th", {}, "Media type"), h("th", { class: "num" }, "Size"), h("th", {}, "Held by regions"))),
      h("tbody", {}, rows.map((l, i) => h("tr", { "data-layer": l.digest },
        h("td", {}, /config/.test(l.media_type || "") ? "config" : i),
        h("td", {}, h("code", { title: l.digest }, shortDigest(l.digest))),
        h("td", {}, l.media_type || "—"),
        h("td", { class: "num" }, bytes(l.size)),
        h("td", { class: "regions" }, (l.regions || []).length ? l.regions.map((r) => h("span", { class: "badge ok" }, r)) : h("span", { class: "badge bad" }, "none")))))));
  }
  if (id === "where") return whereItIs(img, regions);
  if (id === "manifest") {
    const doc = await getJson(`/v2/${repo}/manifests/${img.digest}`, MANIFEST_TYPES);
    return h("pre", { class: "json" }, JSON.stringify(doc, null, 2));
  }
  if (id === "config") {
    const config = await imageConfig(repo, img.digest);
    return config ? h("div", {}, h("dl", { class: "kv card" },
      h("dt", {}, "Platform"), h("dd", {}, platformOf(config)),
      h("dt", {}, "Created"), h("dd", {}, config.created || "—"),
      h("dt", {}, "Entrypoint"), h("dd", {}, JSON.stringify((config.config || {}).Entrypoint || null)),
      h("dt", {}, "Command"), h("dd", {}, JSON.stringify((config.config || {}).Cmd || null))),
    h("h2", {}, "Raw"), h("pre", { class: "json" }, JSON.stringify(config, null, 2)))
      : h("div", { class: "empty" }, "No JSON config (an index, or an artifact).");
  }
  const refs = await getJson(`/v2/${repo}/referrers/${img.digest}`, "application/vnd.oci.image.index.v1+json");
  const list = refs.manifests || [];
  if (!list.length) return h("div", { class: "empty" }, "No referrers: nothing (signature, SBOM, attestation) points at this image.");
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", {}, "Artifact type"), h("th", {}, "Digest"), h("th", { class: "num" }, "Size"))),
    h("tbody", {}, list.map((m) => h("tr", {},
      h("td", {}, m.artifactType || kind(m.mediaType)),
      h("td", {}, h("a", { href: "#/image?" + q({ repo, ref: m.digest }) }, h("code", {}, shortDigest(m.digest)))),
      h("td", { class: "num" }, bytes(m.size)))))));
}

// Region by region: how much of the image each holds.
function whereItIs(img, regions) {
  const layers = img.layers;
  if (!layers.length) return h("div", { class: "empty" }, "An index holds no blobs itself: open a platform to see where its layers are.");
  const total = layers.reduce((n, l) => n + l.size, 0) || 1;
  return h("div", {},
    h("div", { class: "cards" }, regions.map((r) => {
      const held = layers.filter((l) => (l.regions || []).includes(r));
      const sizeHeld = held.reduce((n, l) => n + l.size, 0);
      const pct = Math.round((100 * sizeHeld) / total);
      const cls = pct === 100 ? "" : pct === 0 ? "bad" : "warn";
      return h("div", { class: "card", "data-region": r },
        h("h3", {}, r, h("span", { class: "badge " + (pct === 100 ? "ok" : "warn") }, pct === 100 ? "complete" : "copying")),
        h("div", { class: "bar " + cls, role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 }, h("span")),
        h("p", { class: "hint" }, `${held.length} of ${layers.length} blobs · ${bytes(sizeHeld)} of ${bytes(total)} · ${pct}%`));
    })),
    h("div", { class: "table-wrap" }, h("table", { class: "matrix" },
      h("thead", {}, h("tr", {}, h("th", {}, "Blob"), h("th", { class: "num" }, "Size"), regions.map((r) => h("th", { class: "cell" }, r)))),
      h("tbody", {}, layers.map((l) => h("tr", {},
        h("td", {}, h("code", {}, shortDigest(l.digest))), h("td", { class: "num" }, bytes(l.size)),
        regions.map((r) => (l.regions || []).includes(r) ? h("td", { class: "cell yes", title: "held" }, "✓") : h("td", { class: "cell no", title: "not yet" }, "·"))))))));
}

// The cluster's regions (names), from the replication view.
async function regionNames() {
  if (!state.regions) {
    const rows = await getJson("/api/v1/replications");
    state.regions = [...new Set(rows.map((r) => r.region))].sort();
  }
  return state.regions;
}

// Bars are sized after insertion: the CSP forbids inline style attributes
// in markup, but setting element.style from a script of this origin is allowed.
function sizeBars(root) {
  root.querySelectorAll(".bar[aria-valuenow] > span").forEach((s) => { s.style.width = s.parentElement.getAttribute("aria-valuenow") + "%"; });
}

// ---- replication ---------------------------------------------------------

// `watch` (repo:tag or repo@digest, optional): an image whose arrival in
// each region the page follows too.
async function replicationPage(watch) {
  const input = h("input", { type: "text", name: "watch", placeholder: "repo:tag", value: watch || "", "aria-label": "Image to watch" });
  const form = h("form", {
    class: "toolbar",
    onsubmit: (ev) => {
      ev.preventDefault();
      const v = input.value.trim();
      location.hash = "#/replication" + (v ? "?" + q({ image: v }) : "");
    },
  }, h("span", { class: "hint" }, "Watch an image arrive in every region:"), input, h("button", { type: "submit" }, "Watch"));
  const live = h("div", { id: "live" }, h("div", { class: "loading" }, "Asking every region…"));
  mount(shell("replication", [h("span", { class: "here" }, "Replication")], [live, form, h("div", { id: "watched" })]));
  const here = location.hash;
  const tick = async () => {
    if (location.hash !== here) return;
    try {
      const rows = await getJson("/api/v1/replications");
      drawReplication(rows);
      if (watch) {
        const img = await getJson("/api/v1/images?" + q({ image: watch, replication: "true" }));
        const box = document.getElementById("watched");
        if (box) box.replaceChildren(h("h2", {}, `${watch} region by region`), whereItIs(img, state.regions));
      }
    } catch (e) {
      const box = document.getElementById(watch ? "watched" : "live");
      if (e.status !== 401 && box) box.replaceChildren(failure(e));
    }
    state.timer = setTimeout(tick, REFRESH_MS);
  };
  await tick();
}

function regionSummary(rows) {
  const by = new Map();
  for (const r of rows) {
    const s = by.get(r.region) || { region: r.region, nodes: [], health: "ok", role: "follower", lag: 0, blobs_to_copy: 0, bytes_to_copy: 0, blobs_lost: 0 };
    s.nodes.push(r);
    if (r.health !== "ok") s.health = s.nodes.every((n) => n.health !== "ok") ? "down" : "degraded";
    if (r.role === "leader") s.role = "leader";
    s.lag = Math.max(s.lag, r.lag || 0);
    s.blobs_to_copy = Math.max(s.blobs_to_copy, r.blobs_to_copy || 0);
    s.bytes_to_copy = Math.max(s.bytes_to_copy, r.bytes_to_copy || 0);
    s.blobs_lost = Math.max(s.blobs_lost, r.blobs_lost || 0);
    by.set(r.region, s);
  }
  return [...by.values()].sort((a, b) => a.region.localeCompare(b.region));
}

function tone(s) {
  if (s.health === "down") return "bad";
  if (s.health !== "ok" || s.blobs_to_copy > 0 || s.lag > 0) return "warn";
  return "ok";
}

function drawReplication(rows) {
  const regions = regionSummary(rows);
  state.regions = regions.map((r) => r.region);
  const W = 800, H = 300, cx = W / 2, cy = H / 2, R = Math.min(W, H) / 2 - 60;
  const at = (i) => {
    const a = -Math.PI / 2 + (2 * Math.PI * i) / regions.length;
    return [cx + (regions.length > 1 ? R * 1.6 * Math.cos(a) : 0), cy + (regions.length > 1 ? R * Math.sin(a) : 0)];
  };
  const colours = { ok: "#1a7f37", warn: "#d4a72c", bad: "#cf222e" };
  const links = [];
  regions.forEach((a, i) => regions.forEach((b, j) => {
    if (j <= i) return;
    const [x1, y1] = at(i), [x2, y2] = at(j);
    const down = a.health === "down" || b.health === "down";
    links.push(svg("line", { x1, y1, x2, y2, class: "link" + (down ? " down" : "") }));
  }));
  const nodes = regions.map((r, i) => {
    const [x, y] = at(i);
    return svg("g", { class: "node", "data-region": r.region },
      svg("circle", { cx: x, cy: y, r: r.role === "leader" ? 30 : 24, fill: colours[tone(r)] }),
      svg("text", { x, y: y + 48 }, r.region + (r.role === "leader" ? " ★" : "")),
      svg("text", { x, y: y + 63, class: "small" }, r.health !== "ok" ? r.health : r.blobs_to_copy ? `${r.blobs_to_copy} blobs to copy` : "in sync"));
  });
  const map = h("div", { class: "map", role: "img", "aria-label": "Map of regions and their links" },
    svg("svg", { viewBox: `0 0 ${W} ${H}`, preserveAspectRatio: "xMidYMid meet" }, links, nodes));
  const cards = h("div", { class: "cards" }, regions.map((r) => h("div", { class: "card", "data-region": r.region, "data-to-copy": r.blobs_to_copy },
    h("h3", {}, h("span", {}, h("span", { class: "dot " + tone(r) }), r.region), h("span", { class: "badge " + (r.role === "leader" ? "info" : "") }, r.role)),
    h("dl", { class: "kv" },
      h("dt", {}, "Health"), h("dd", {}, h("span", { class: "badge " + (r.health === "ok" ? "ok" : "bad") }, r.health)),
      h("dt", {}, "Raft lag"), h("dd", {}, r.lag ? `${r.lag} entries` : "none"),
      h("dt", {}, "To copy"), h("dd", { class: "to-copy" }, r.blobs_to_copy ? `${r.blobs_to_copy} blobs · ${bytes(r.bytes_to_copy)}` : "nothing"),
      h("dt", {}, "Lost"), h("dd", {}, r.blobs_lost ? h("span", { class: "badge bad" }, `${r.blobs_lost} blobs no region holds`) : "none"),
      h("dt", {}, "Nodes"), h("dd", {}, r.nodes.map((n) => h("div", {}, h("span", { class: "dot " + (n.health === "ok" ? "ok" : "bad") }), `node ${n.node_id} `, h("span", { class: "hint" }, n.role || n.health, n.worker ? " · mover" : ""))))))));
  const pending = regions.reduce((n, r) => n + r.blobs_to_copy, 0);
  const down = regions.filter((r) => r.health === "down").map((r) => r.region);
  const live = document.getElementById("live");
  if (!live) return;
  live.replaceChildren(
    h("div", { class: "toolbar" }, h("h1", { class: "grow" }, "Replication"),
      h("span", { class: "live", title: "refreshes every 2 s" }, h("span", { class: "dot" }), "live · updated ", new Date().toLocaleTimeString())),
    h("p", { class: "sub", id: "summary" }, `${regions.length} regions · `,
      down.length ? h("span", { class: "badge bad" }, `${down.join(", ")} not answering: what it lacks is known when it is back`)
        : pending ? `${pending} blobs still to copy` : "every region holds every blob it should"),
    map, cards);
}

// ---- registries (operators) ---------------------------------------------

async function registriesPage() {
  mount(shell("registries", [h("span", { class: "here" }, "Registries")], h("div", { class: "loading" }, "Loading registries…")));
  try {
    const rows = await getJson("/api/v1/registries");
    const usage = await Promise.all(rows.map((r) => getJson(`/api/v1/registries/${encodeURIComponent(r.name)}/usage`).catch(() => null)));
    setContent(h("h1", {}, "Registries"), h("p", { class: "sub" }, `${rows.length} registries in this cluster`),
      h("div", { class: "cards" }, rows.map((r, i) => registryCard(r, usage[i]))));
    sizeBars(document.getElementById("content"));
  } catch (e) { setContent(failure(e)); }
}

function registryCard(r, usage) {
  const items = (usage && usage.value) || [];
  return h("div", { class: "card", "data-registry": r.name },
    h("h3", {}, r.name, h("span", { class: "badge info" }, r.sku)),
    h("dl", { class: "kv" },
      h("dt", {}, "Login server"), h("dd", {}, r.login_server ? h("code", {}, r.login_server) : "any host name of the cluster"),
      h("dt", {}, "Regions"), h("dd", {}, r.replicas.length ? r.replicas.join(", ") : "every region"),
      h("dt", {}, "Created"), h("dd", {}, when(r.created_ms))),
    items.map((u) => {
      const used = u.currentValue || 0;
      const pct = u.limit ? Math.min(100, Math.round((100 * used) / u.limit)) : 0;
      const show = u.unit === "Bytes" ? (v) => bytes(v) : (v) => v.toLocaleString();
      return h("div", { "data-usage": u.name }, h("p", { class: "hint" }, `${u.name}: ${show(used)} of ${u.limit ? show(u.limit) : "no limit"}`),
        h("div", { class: "bar " + (pct > 90 ? "bad" : pct > 75 ? "warn" : ""), role: "progressbar", "aria-valuenow": pct, "aria-valuemin": 0, "aria-valuemax": 100 }, h("span")));
    }));
}


// ---- tokens (owners) -----------------------------------------------------

async function tokensPage() {
  mount(shell("tokens", [h("span", { class: "here" }, "Users & tokens")], h("div", { class: "loading" }, "Loading identities…")));
  let tokens, maps, users;
  try {
    [tokens, maps, users] = await Promise.all([getJson("/api/v1/tokens"), getJson("/api/v1/scope-maps"), getJson("/api/v1/users")]);
  } catch (e) { setContent(failure(e)); return; }
  const name = h("input", { type: "text", name: "token-name", placeholder: "ci-pull", required: true, "aria-label": "Token name" });
  const map = h("select", { name: "scope-map", "aria-label": "Scope map" }, maps.map((m) => h("option", { value: m.name }, m.name)));
  const days = h("input", { type: "text", name: "expiry-days", placeholder: "never", inputmode: "numeric", size: 6, "aria-label": "Expires in days" });
  const form = h("form", {
    class: "toolbar card",
    onsubmit: async (ev) => {
      ev.preventDefault();
      const body = { name: name.value.trim(), scope_map: map.value };
      const d = parseInt(days.value, 10);
      if (d > 0) body.expiry_ms = Date.now() + d * 86400000;
      try {
        const made = await (await call("POST", "/api/v1/tokens", body)).json();
        await showSecrets(made);
        tokensPage();
      } catch (e) { toast(e.message, true); }
    },
  },
  h("b", {}, "New token"), name, h("span", { class: "hint" }, "scope map"), map,
  h("span", { class: "hint" }, "expires in days"), days,
  h("button", { type: "submit", class: "primary", disabled: !maps.length }, "Create token"),
  maps.length ? null : h("span", { class: "hint" }, "First create a scope map: wharf scope-map create NAME --repository 'REPO=content/read'"));
  setContent(h("h1", {}, "Users & tokens"),
    h("h2", {}, "Users and service principals"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Kind", "Status", "Roles", "Created"].map((t) => h("th", {}, t)))),
      h("tbody", {}, users.map((u) => h("tr", { "data-user": u.name },
        h("td", {}, u.name), h("td", {}, u.kind),
        h("td", {}, h("span", { class: "badge " + (u.enabled ? "ok" : "") }, u.enabled ? "enabled" : "disabled")),
        h("td", { class: "wrap" }, u.roles.length ? u.roles.map((r) => h("span", { class: "badge info" }, `${r.role} on ${r.scope || "the registry"}`)) : "none"),
        h("td", {}, when(u.created_ms))))))),
    h("h2", {}, "Tokens"),
    h("p", { class: "sub" }, "Repository-scoped credentials for CI and deployments: docker login with the token's name and one of its passwords."),
    form,
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Scope map", "Status", "Expires", "Passwords", "Created", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, tokens.length ? tokens.map((t) => h("tr", { "data-token": t.name },
        h("td", {}, t.name), h("td", {}, t.scope_map),
        h("td", {}, h("span", { class: "badge " + (t.enabled ? "ok" : "") }, t.enabled ? "enabled" : "disabled")),
        h("td", {}, t.expiry_ms ? new Date(t.expiry_ms).toISOString().slice(0, 10) : "never"),
        h("td", {}, t.passwords.length ? t.passwords.map((p) => "password" + p).join(", ") : "none"),
        h("td", {}, when(t.created_ms)),
        h("td", {}, h("button", { type: "button", class: "small", onclick: async () => {
          try { await call("PATCH", "/api/v1/tokens/" + encodeURIComponent(t.name), { enabled: !t.enabled }); tokensPage(); } catch (e) { toast(e.message, true); }
        } }, t.enabled ? "Disable" : "Enable"))))
        : h("tr", {}, h("td", { class: "empty", colspan: 7 }, "No tokens yet."))))));
}

// A new token's passwords, shown this once.
function showSecrets(made) {
  return new Promise((resolve) => {
    const line = (label, value) => value ? h("div", {}, h("div", { class: "stat-label" }, label),
      h("div", { class: "toolbar" }, h("code", { class: "secret grow" }, value),
        h("button", { type: "button", class: "small", onclick: () => navigator.clipboard && navigator.clipboard.writeText(value).then(() => toast("Copied")) }, "Copy"))) : null;
    const d = h("dialog", { "aria-label": "Token created" },
      h("h3", {}, `Token ${made.name} created`),
      h("p", {}, "Copy a password now: it is shown this once and cannot be read again (regenerate it if lost)."),
      line("password1", made.password1), line("password2", made.password2),
      h("p", { class: "hint" }, h("code", {}, `docker login -u ${made.name} ${location.host}`)),
      h("div", { class: "actions" }, h("button", { type: "button", class: "primary", onclick: () => d.close() }, "Done")));
    d.addEventListener("close", () => { d.remove(); resolve(); });
    document.body.append(d);
    d.showModal();
  });
}

// ---- webhooks (owners) ---------------------------------------------------

async function webhooksPage() {
  mount(shell("webhooks", [h("span", { class: "here" }, "Webhooks")], h("div", { class: "loading" }, "Loading webhooks…")));
  let hooks;
  try { hooks = await getJson("/api/v1/webhooks"); } catch (e) { setContent(failure(e)); return; }
  setContent(h("h1", {}, "Webhooks"),
    h("p", { class: "sub" }, "Events sent to your services on push and delete; open one for its delivery log."),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Name", "Endpoint", "Actions", "Scope", "Status", "Pending"].map((t) => h("th", {}, t)))),
      h("tbody", {}, hooks.length ? hooks.map((w) => h("tr", { "data-webhook": w.name },
        h("td", {}, h("a", { href: "#/webhook?" + q({ name: w.name }) }, w.name)),
        h("td", { class: "wrap" }, h("code", {}, w.uri)),
        h("td", {}, w.actions.join(", ")), h("td", {}, w.scope || "all"),
        h("td", {}, h("span", { class: "badge " + (w.status === "enabled" ? "ok" : "") }, w.status)),
        h("td", { class: "num" }, w.pending)))
        : h("tr", {}, h("td", { class: "empty", colspan: 6 }, "No webhooks: wharf webhook create NAME --uri URL --actions push"))))));
}

async function webhookPage(name) {
  mount(shell("webhooks", [h("a", { href: "#/webhooks" }, "Webhooks"), h("span", { class: "here" }, name)], h("div", { class: "loading" }, "Loading the delivery log…")));
  let events;
  try { events = await getJson(`/api/v1/webhooks/${encodeURIComponent(name)}/events?limit=200`); } catch (e) { setContent(failure(e)); return; }
  const tone = { delivered: "ok", pending: "warn", dead: "bad" };
  setContent(h("h1", {}, name), h("p", { class: "sub" }, `${events.length} most recent events`),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Time", "Action", "Image", "State", "Attempts", "Last answer", ""].map((t) => h("th", {}, t)))),
      h("tbody", {}, events.length ? events.map((ev) => {
        const last = ev.attempts[ev.attempts.length - 1];
        return h("tr", { "data-event": ev.id },
          h("td", {}, when(ev.timestamp_ms)), h("td", {}, ev.action),
          h("td", {}, ev.repository + (ev.tag ? ":" + ev.tag : ev.digest ? "@" + shortDigest(ev.digest) : "")),
          h("td", {}, h("span", { class: "badge " + (tone[ev.state] || "") }, ev.state)),
          h("td", { class: "num" }, ev.attempts.length),
          h("td", { class: "wrap" }, last ? (last.status ? `HTTP ${last.status}` : last.error || "—") + ` · ${last.latency_ms} ms` : "—"),
          h("td", {}, h("button", { type: "button", class: "small", onclick: async () => {
            try { await call("POST", `/api/v1/webhooks/${encodeURIComponent(name)}/redeliver`, { event_id: ev.id }); toast("Redelivery queued"); webhookPage(name); } catch (e) { toast(e.message, true); }
          } }, "Redeliver")));
      }) : h("tr", {}, h("td", { class: "empty", colspan: 7 }, "Nothing delivered yet."))))));
}

// ---- garbage collection and retention (owners) ---------------------------

async function gcPage() {
  mount(shell("gc", [h("span", { class: "here" }, "Garbage collection")], h("div", { class: "loading" }, "Loading…")));
  let status, policies;
  try {
    [status, policies] = await Promise.all([getJson("/api/v1/gc"), getJson("/api/v1/policies")]);
  } catch (e) { setContent(failure(e)); return; }
  const run = async (dry) => {
    if (!dry && !(await confirmDialog("Collect garbage", "Remove the layers no manifest needs, in every region, now?", "Collect now"))) return;
    try {
      const r = await (await call("POST", "/api/v1/gc/runs", { dry_run: dry })).json();
      toast(`${dry ? "Would free" : "Freed"} ${r.blobs_freed} blobs, ${bytes(r.bytes_freed)}`);
      gcPage();
    } catch (e) { toast(e.message, true); }
  };
  const policy = (label, p) => h("div", { class: "card" }, h("div", { class: "stat-label" }, label),
    h("div", { class: "stat" }, p.enabled ? `${p.days} days` : "off"));
  setContent(
    h("div", { class: "toolbar" }, h("h1", { class: "grow" }, "Garbage collection"),
      h("button", { type: "button", onclick: () => run(true) }, "Dry run"),
      h("button", { type: "button", class: "danger", onclick: () => run(false) }, "Collect now")),
    h("div", { class: "cards" }, policy("Untagged manifests expire after", policies.retention), policy("Deleted images kept (soft delete)", policies.soft_delete),
      h("div", { class: "card" }, h("div", { class: "stat-label" }, "Keep rules"), policies.keep.length ? policies.keep.map((k) => h("div", {}, h("code", {}, k.pattern), k.keep_last ? ` keep last ${k.keep_last}` : "", k.untouched_days ? ` · untouched ${k.untouched_days} d` : "")) : "none")),
    h("h2", {}, "Regions"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Region", "Files deleted", "Freed", "Kept", "Sweeps pending", "Last sweep"].map((t) => h("th", {}, t)))),
      h("tbody", {}, status.regions.map((r) => h("tr", {}, h("td", {}, r.region), h("td", { class: "num" }, r.files_deleted),
        h("td", { class: "num" }, bytes(r.bytes_freed)), h("td", { class: "num" }, r.files_kept), h("td", { class: "num" }, r.sweeps_pending), h("td", {}, when(r.last_sweep_ms))))))),
    h("h2", {}, "Recent runs"),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, ["Started", "Registry", "Links removed", "Blobs freed", "Bytes freed", "Manifests expired", "Tags expired"].map((t) => h("th", {}, t)))),
      h("tbody", {}, status.runs.length ? status.runs.map((r) => h("tr", { "data-run": r.id }, h("td", {}, when(r.started_ms)), h("td", {}, r.registry),
        h("td", { class: "num" }, r.links_removed), h("td", { class: "num" }, r.blobs_freed), h("td", { class: "num" }, bytes(r.bytes_freed)),
        h("td", { class: "num" }, r.manifests_expired), h("td", { class: "num" }, r.tags_expired)))
        : h("tr", {}, h("td", { class: "empty", colspan: 7 }, "No run yet."))))));
}

// ---- routing -------------------------------------------------------------

async function route() {
  clearTimeout(state.timer);
  const hash = location.hash || "#/repositories";
  const [path, query] = hash.slice(1).split("?");
  const params = new URLSearchParams(query || "");
  if (path.startsWith("/repository/")) return repositoryPage(decodeURIComponent(path.slice("/repository/".length)));
  if (path === "/image") return imagePage(params.get("repo") || "", params.get("ref") || "latest");
  if (path === "/replication") return replicationPage(params.get("image"));
  if (path === "/registries") return registriesPage();
  if (path === "/tokens") return tokensPage();
  if (path === "/webhooks") return webhooksPage();
  if (path === "/webhook") return webhookPage(params.get("name") || "");
  if (path === "/gc") return gcPage();
  return repositoriesPage();
}

async function start() {
  if (location.pathname === "/console/login") return loginPage();
  try {
    state.session = await getJson("/console/api/session");
  } catch (e) {
    if (e.status !== 401) mount(failure(e));
    return;
  }
  window.addEventListener("hashchange", route);
  document.addEventListener("keydown", (ev) => {
    if (ev.key === "/" && !/INPUT|TEXTAREA/.test(document.activeElement.tagName)) { ev.preventDefault(); focusSearch(); }
  });
  new MutationObserver(() => sizeBars(document.body)).observe(document.getElementById("app"), { childList: true, subtree: true });
  await route();
}

start();
