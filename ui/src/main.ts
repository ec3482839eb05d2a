// The HyperOS window: the VM's state (pushed by the app as "view" events),
// Start/Stop/Restart, booting a dat:// link, and xterm.js terminal tabs
// whose bytes travel over SSH in the app (no VM logic lives here).
import { invoke, Channel } from "@tauri-apps/api/core";
import { listen } from "@tauri-apps/api/event";
import { getCurrentWebview } from "@tauri-apps/api/webview";
import { Terminal } from "@xterm/xterm";
import { FitAddon } from "@xterm/addon-fit";
import "@xterm/xterm/css/xterm.css";
import "./style.css";

interface VmView {
  state: string;
  hostname: string | null;
  ip: string | null;
  ssh: string | null;
  since_ms: number | null;
  memory_mib: number | null;
  mem_used_kib: number | null;
  accel: string | null;
  error: string | null;
}

interface AppView {
  instance: string;
  vm: VmView;
  busy: string | null;
  action_error: string | null;
  key_store: string;
  key_store_detail: string;
  autostart: boolean;
  boot_at_login: boolean;
}

interface Progress {
  bytes_fetched: number;
  bytes_from_cache: number;
  image_len: number;
  requests: number;
  failed_requests: number;
  peers_known: number;
  peers_connected: number;
}

type TermEvent =
  | { kind: "data"; data: number[] }
  | ({ kind: "progress" } & Progress)
  | { kind: "exit"; status: number; error: string | null };

// What a tab that boots a link reports back to the link field.
interface BootHooks {
  container: string;
  onProgress(p: Progress): void;
  onExit(status: number, error: string | null): void;
}

const $ = <T extends HTMLElement = HTMLElement>(id: string) => document.getElementById(id) as T;

let view: AppView | null = null;

function uptime(sinceMs: number): string {
  let s = Math.max(0, Math.floor((Date.now() - sinceMs) / 1000));
  const h = Math.floor(s / 3600);
  s -= h * 3600;
  const m = Math.floor(s / 60);
  s -= m * 60;
  return h > 0 ? `${h}h ${m}m ${s}s` : m > 0 ? `${m}m ${s}s` : `${s}s`;
}

function render(v: AppView) {
  view = v;
  const vm = v.vm;
  const shown = v.busy && vm.state !== "running" ? v.busy : vm.state;
  const state = $("state");
  state.textContent = shown;
  state.dataset.state = vm.state === "failed" ? "failed" : v.busy ? "busy" : vm.state;
  $("instance").textContent = `instance ${v.instance}`;
  $("hostname").textContent = vm.hostname ?? "–";
  $("ip").textContent = vm.ip ?? "–";
  $("copy-ip").hidden = !vm.ip;
  $("ssh").textContent = vm.ssh ?? "–";
  $("memory").textContent =
    vm.memory_mib == null
      ? "–"
      : vm.mem_used_kib != null
        ? `${Math.round(vm.mem_used_kib / 1024)} MiB used of ${vm.memory_mib} MiB`
        : `${vm.memory_mib} MiB`;
  const keyStore = $("key-store");
  keyStore.textContent =
    v.key_store === "keychain" ? "in the OS keychain" : v.key_store === "file" ? "0600 file (no keychain)" : v.key_store_detail;
  keyStore.title = v.key_store_detail;
  keyStore.dataset.store = v.key_store;
  $("accel").textContent = vm.accel ? `accelerator: ${vm.accel}` : "";
  tick();

  const idle = !v.busy;
  const live = ["booting", "running", "stopping"].includes(vm.state);
  $<HTMLButtonElement>("start").disabled = !idle || live;
  $<HTMLButtonElement>("stop").disabled = !idle || !live || vm.state === "stopping";
  $<HTMLButtonElement>("restart").disabled = !idle || vm.state !== "running";
  $<HTMLButtonElement>("new-tab").disabled = vm.state !== "running";

  const err = v.action_error ?? vm.error;
  const banner = $("action-error");
  banner.hidden = !err;
  banner.textContent = err ?? "";
  $<HTMLInputElement>("autostart").checked = v.autostart;
  $<HTMLInputElement>("boot-at-login").checked = v.boot_at_login;
  $("empty").hidden = tabs.length > 0;
}

function tick() {
  const vm = view?.vm;
  $("uptime").textContent = vm && vm.state === "running" && vm.since_ms ? uptime(vm.since_ms) : "–";
}
setInterval(tick, 1000);

async function act(command: string) {
  try {
    await invoke(command);
  } catch (e) {
    // The app records the error in the view too; show it even if that raced.
    showError(e);
  }
}

// ── terminal tabs ───────────────────────────────────────────────────────
interface Tab {
  id: number | null;
  term: Terminal;
  fit: FitAddon;
  pane: HTMLElement;
  button: HTMLElement;
  title: string;
}
const tabs: Tab[] = [];
let active: Tab | null = null;

function activate(tab: Tab) {
  active = tab;
  for (const t of tabs) {
    t.pane.classList.toggle("active", t === tab);
    t.button.classList.toggle("active", t === tab);
  }
  requestAnimationFrame(() => {
    tab.fit.fit();
    tab.term.focus();
  });
}

function closeTab(tab: Tab) {
  if (tab.id != null) invoke("term_close", { id: tab.id }).catch(() => {});
  tab.term.dispose();
  tab.pane.remove();
  tab.button.remove();
  tabs.splice(tabs.indexOf(tab), 1);
  if (active === tab) {
    active = null;
    if (tabs.length) activate(tabs[tabs.length - 1]);
  }
  $("empty").hidden = tabs.length > 0;
}

async function openTab(title: string, command: string | null, boot: BootHooks | null = null): Promise<Tab> {
  const pane = document.createElement("div");
  pane.className = "pane";
  $("panes").appendChild(pane);
  const button = document.createElement("div");
  button.className = "tab";
  const label = document.createElement("span");
  label.textContent = title;
  label.title = command ?? "login shell";
  const close = document.createElement("button");
  close.className = "close";
  close.textContent = "×";
  close.title = "Close this terminal";
  button.append(label, close);
  $("tabs").insertBefore(button, $("new-tab"));
  const term = new Terminal({
    fontFamily: "'DejaVu Sans Mono', 'Menlo', 'Consolas', monospace",
    fontSize: 13,
    cursorBlink: true,
    theme: { background: "#0f1222", foreground: "#e6e6e6", cursor: "#8be9fd" },
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(pane);
  const tab: Tab = { id: null, term, fit, pane, button, title };
  tabs.push(tab);
  $("empty").hidden = true;
  label.onclick = () => activate(tab);
  close.onclick = () => closeTab(tab);
  activate(tab);
  fit.fit();

  // Copy with Ctrl+Shift+C; paste with Ctrl+Shift+V (or the context menu).
  term.attachCustomKeyEventHandler((e) => {
    if (e.type === "keydown" && e.ctrlKey && e.shiftKey && e.code === "KeyC") {
      const text = term.getSelection();
      if (text) navigator.clipboard.writeText(text).catch(() => document.execCommand("copy"));
      return false;
    }
    if (e.type === "keydown" && e.ctrlKey && e.shiftKey && e.code === "KeyV") return false;
    return true;
  });

  const events = new Channel<TermEvent>();
  events.onmessage = (ev) => {
    if (ev.kind === "data") term.write(new Uint8Array(ev.data));
    else if (ev.kind === "progress") boot?.onProgress(ev);
    else {
      term.write(`\r\n\x1b[2m[session ended with status ${ev.status}]\x1b[0m\r\n`);
      tab.id = null;
      button.classList.add("ended");
      boot?.onExit(ev.status, ev.error);
    }
  };
  // Keystrokes go out one write at a time, in order: the app handles
  // commands concurrently, so two writes in flight could arrive swapped.
  // What is typed while a write is in flight (or before term_open has
  // returned the id: the prompt can come first) goes out with the next one.
  let unsent = "";
  let writing = false;
  const flush = async () => {
    if (writing) return;
    writing = true;
    while (unsent && tab.id != null) {
      const data = unsent;
      unsent = "";
      await invoke("term_write", { id: tab.id, data }).catch(() => {});
    }
    writing = false;
  };
  term.onData((data) => {
    unsent += data;
    flush();
  });
  try {
    tab.id = await invoke<number>("term_open", {
      events,
      cols: term.cols,
      rows: term.rows,
      command,
      container: boot?.container ?? null,
    });
  } catch (e) {
    term.write(`\x1b[31m${String(e)}\x1b[0m\r\n`);
    button.classList.add("ended");
    unsent = "";
    boot?.onExit(255, String(e));
    return tab;
  }
  flush();
  term.onResize(({ cols, rows }) => {
    if (tab.id != null) invoke("term_resize", { id: tab.id, cols, rows }).catch(() => {});
  });
  return tab;
}

new ResizeObserver(() => active?.fit.fit()).observe($("panes"));

// ── booting a link ──────────────────────────────────────────────────────
const mb = (bytes: number) => (bytes / 1e6).toFixed(1);

// "fetched X of Y MB · N peers": what the booting container has fetched.
function progressText(p: Progress): string {
  const peers = `${p.peers_connected} peer${p.peers_connected === 1 ? "" : "s"}`;
  return `fetched ${mb(p.bytes_fetched)} of ${mb(p.image_len)} MB · ${peers}`;
}

// The link field reports on the latest boot only.
let latestBoot = 0;

async function bootLink(text: string) {
  const error = $("link-error");
  const progress = $("boot-progress");
  const boot = ++latestBoot;
  error.hidden = true;
  let command: string;
  let container: string;
  try {
    ({ command, name: container } = await invoke<{ command: string; name: string }>("boot_link_command", { link: text }));
  } catch (e) {
    error.textContent = String(e);
    error.hidden = false;
    return;
  }
  if (view?.vm.state !== "running") {
    progress.textContent = "Starting the VM…";
    progress.hidden = false;
    try {
      await invoke("vm_start");
    } catch (e) {
      progress.hidden = true;
      error.textContent = `Could not start the VM: ${e}`;
      error.hidden = false;
      return;
    }
  }
  progress.textContent = `Booting ${text.trim()}…`;
  progress.hidden = false;
  const key = text.trim().replace(/^dat:\/\//, "");
  await openTab(`dat://${key.slice(0, 8)}…`, command, {
    container,
    onProgress(p) {
      if (boot !== latestBoot) return;
      progress.textContent = progressText(p);
      progress.hidden = false;
    },
    onExit(_status, failure) {
      if (boot !== latestBoot) return;
      progress.hidden = true;
      if (failure) {
        error.textContent = failure;
        error.hidden = false;
      }
    },
  });
}

$("link").addEventListener("input", () => ($("link-error").hidden = true));
$("boot-form").addEventListener("submit", (e) => {
  e.preventDefault();
  bootLink($<HTMLInputElement>("link").value);
});

// ── sharing a dropped file or folder ────────────────────────────────────
interface Shared {
  link: string;
  key: string;
  path: string;
  image_len: number;
  fs_type: string;
  secret_store: string;
}

const baseName = (path: string) => path.replace(/\/+$/, "").split("/").pop() || path;

function listShare(s: Shared) {
  const list = $("shares");
  if (list.querySelector(`[data-key="${s.key}"]`)) return;
  const item = document.createElement("li");
  item.dataset.key = s.key;
  const what = document.createElement("span");
  what.className = "what";
  what.textContent = `Sharing ${baseName(s.path)}`;
  what.title = `${s.path}\n${s.fs_type} image, ${mb(s.image_len)} MB\nsecret key: ${s.secret_store}`;
  const link = document.createElement("span");
  link.className = "share-link";
  link.textContent = s.link;
  const copy = document.createElement("button");
  copy.className = "link";
  copy.textContent = "copy";
  copy.title = "Copy the link";
  copy.onclick = () => navigator.clipboard.writeText(s.link).catch(() => {});
  const stop = document.createElement("button");
  stop.className = "link stop-share";
  stop.textContent = "stop";
  stop.title = "Stop sharing it (peers that opened it keep what they fetched)";
  stop.onclick = async () => {
    try {
      await invoke("share_stop", { key: s.key });
      item.remove();
      list.hidden = list.children.length === 0;
    } catch (e) {
      $("link-error").textContent = String(e);
      $("link-error").hidden = false;
    }
  };
  item.append(what, link, copy, stop);
  list.appendChild(item);
  list.hidden = false;
}

// A file or folder dropped on the window is shared by the app (a folder
// or an OCI archive becomes an EROFS image) and its link goes to the field,
// ready to Boot.
async function sharePath(path: string) {
  const error = $("link-error");
  const progress = $("boot-progress");
  error.hidden = true;
  progress.textContent = `Sharing ${baseName(path)}…`;
  progress.hidden = false;
  try {
    const shared = await invoke<Shared>("share_path", { path });
    listShare(shared);
    $<HTMLInputElement>("link").value = shared.link;
    progress.hidden = true;
  } catch (e) {
    progress.hidden = true;
    error.textContent = String(e);
    error.hidden = false;
  }
}

getCurrentWebview().onDragDropEvent(async (e) => {
  const zone = $("drop-zone");
  const p = e.payload;
  if (p.type === "enter" || p.type === "over") zone.hidden = false;
  else if (p.type === "leave") zone.hidden = true;
  else if (p.type === "drop") {
    zone.hidden = true;
    for (const path of p.paths) await sharePath(path);
  }
});
invoke<Shared[]>("shared_list").then((list) => list.forEach(listShare));

// ── wiring ──────────────────────────────────────────────────────────────
$("start").onclick = () => act("vm_start");
$("stop").onclick = () => act("vm_stop");
$("restart").onclick = () => act("vm_restart");
$("new-tab").onclick = () => openTab(view?.vm.hostname ?? "shell", null);
$("copy-ip").onclick = () => invoke("copy_ip").catch(() => {});
function showError(e: unknown) {
  const banner = $("action-error");
  banner.hidden = false;
  banner.textContent = String(e);
}
$<HTMLInputElement>("autostart").onchange = (e) =>
  invoke("set_autostart", { enabled: (e.target as HTMLInputElement).checked }).catch(showError);
$<HTMLInputElement>("boot-at-login").onchange = (e) =>
  invoke("set_boot_at_login", { enabled: (e.target as HTMLInputElement).checked }).catch(showError);

listen<AppView>("view", (e) => render(e.payload));
listen("open-terminal", () => openTab(view?.vm.hostname ?? "shell", null));
listen("focus-link", () => $("link").focus());
listen<string>("open-link", (e) => {
  $<HTMLInputElement>("link").value = e.payload;
  bootLink(e.payload);
});
invoke<AppView>("app_view").then(render);

// For tests and debugging: the text of a tab's terminal buffer.
(window as unknown as Record<string, unknown>).__hyperos = {
  terminalText(index: number): string {
    const tab = tabs[index];
    if (!tab) return "";
    const buf = tab.term.buffer.active;
    const lines: string[] = [];
    for (let i = 0; i < buf.length; i++) lines.push(buf.getLine(i)?.translateToString(true) ?? "");
    return lines.join("\n");
  },
  tabCount: () => tabs.length,
};
