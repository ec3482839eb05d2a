// A small WebDriver client (W3C protocol over fetch) and the fixtures the
// app tests share: a private Xvfb display, tauri-driver (which runs
// Debian's WebKitWebDriver), and a session on the built desktop app.
import { spawn, execFileSync } from "node:child_process";
import { mkdtempSync, mkdirSync, writeFileSync, readFileSync, existsSync } from "node:fs";
import { createServer } from "node:net";
import { tmpdir } from "node:os";
import { join, resolve, dirname } from "node:path";
import { fileURLToPath } from "node:url";

export const repo = resolve(dirname(fileURLToPath(import.meta.url)), "../..");
export const app = process.env.HYPEROS_APP ?? join(repo, "target/release/hyperos-desktop");
export const shots = process.env.SCREENSHOT_DIR ?? join(repo, "target/app-screenshots");
const ELEMENT = "element-6066-11e4-a52e-4f735466cecf";

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

async function freePort() {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.listen(0, "127.0.0.1", () => {
      const { port } = srv.address();
      srv.close(() => ok(port));
    });
    srv.on("error", fail);
  });
}

/** A private X server; resolves to its display name. */
export async function startXvfb() {
  const xvfb = spawn("Xvfb", ["-displayfd", "3", "-screen", "0", "1280x900x24", "-nolisten", "tcp"], {
    stdio: ["ignore", "ignore", "pipe", "pipe"],
  });
  const display = await new Promise((ok, fail) => {
    let out = "";
    xvfb.stdio[3].on("data", (d) => {
      out += d;
      if (out.includes("\n")) ok(`:${out.trim()}`);
    });
    xvfb.on("exit", (code) => fail(new Error(`Xvfb exited with ${code}`)));
  });
  // A system tray host (XEmbed), so the app's tray icon has somewhere to live.
  const tray = spawn("trayer", ["--edge", "top", "--align", "right", "--widthtype", "request", "--height", "32", "--SetDockType", "true"], {
    env: { ...process.env, DISPLAY: display },
    stdio: "ignore",
  });
  tray.on("error", () => {});
  return {
    display,
    stop: () => {
      tray.kill();
      xvfb.kill();
    },
  };
}

/**
 * Starts tauri-driver with `env` (the app inherits it); with `keyring`, inside
 * a private D-Bus session whose gnome-keyring (Secret Service) is unlocked.
 */
export async function startDriver(env, { keyring = false } = {}) {
  const port = await freePort();
  const nativePort = await freePort();
  const driverArgs = ["--port", String(port), "--native-port", String(nativePort)];
  const driver = keyring
    ? spawn(
        "dbus-run-session",
        [
          "--",
          "sh",
          "-c",
          // The bus address goes to $HOME/bus, for a second launch of the app.
          'printf hyperos-test | gnome-keyring-daemon --unlock --components=secrets >/dev/null && echo "$DBUS_SESSION_BUS_ADDRESS" >"$HOME/bus" && exec tauri-driver "$@"',
          "sh",
          ...driverArgs,
        ],
        { env, stdio: ["ignore", "inherit", "inherit"], detached: true },
      )
    : spawn("tauri-driver", driverArgs, { env, stdio: ["ignore", "inherit", "inherit"], detached: true });
  const base = `http://127.0.0.1:${port}`;
  for (let i = 0; i < 100; i++) {
    try {
      const r = await fetch(`${base}/status`);
      if (r.ok) break;
    } catch {}
    await sleep(100);
  }
  return {
    base,
    stop: () => {
      try {
        process.kill(-driver.pid, "SIGTERM");
      } catch {}
    },
  };
}

/** The environment of an app under test: its own state, config and display. */
export function appEnv(display, extra = {}) {
  const root = mkdtempSync(join(tmpdir(), "hyperos-app-test-"));
  const env = {
    PATH: process.env.PATH,
    HOME: join(root, "home"),
    DISPLAY: display,
    HYPEROS_STATE_DIR: join(root, "state"),
    XDG_CONFIG_HOME: join(root, "config"),
    XDG_DATA_HOME: join(root, "data"),
    XDG_RUNTIME_DIR: join(root, "run"),
    WEBKIT_DISABLE_DMABUF_RENDERER: "1",
    WEBKIT_DISABLE_COMPOSITING_MODE: "1",
    NO_AT_BRIDGE: "1",
    RUST_LOG: "warn",
    ...extra,
  };
  for (const d of [env.HOME, env.XDG_RUNTIME_DIR]) mkdirSync(d, { recursive: true, mode: 0o700 });
  if (process.env.HYPEROS_IMAGE_DIR) env.HYPEROS_IMAGE_DIR = process.env.HYPEROS_IMAGE_DIR;
  return { root, env };
}

async function call(base, method, path, body) {
  const r = await fetch(`${base}${path}`, {
    method,
    headers: { "content-type": "application/json" },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = await r.json();
  if (!r.ok) throw new Error(`${method} ${path}: ${JSON.stringify(json.value ?? json)}`);
  return json.value;
}

export class Session {
  static async start(base, application = app) {
    const value = await call(base, "POST", "/session", {
      capabilities: { alwaysMatch: { "tauri:options": { application } } },
    });
    const s = new Session();
    s.base = base;
    s.id = value.sessionId;
    return s;
  }
  cmd(method, path, body) {
    return call(this.base, method, `/session/${this.id}${path}`, body);
  }
  async find(css) {
    const v = await this.cmd("POST", "/element", { using: "css selector", value: css });
    return v[ELEMENT];
  }
  async click(css) {
    await this.cmd("POST", `/element/${await this.find(css)}/click`, {});
  }
  async type(css, text) {
    await this.cmd("POST", `/element/${await this.find(css)}/value`, { text });
  }
  /** Runs `script` (a function body; may return a promise) in the window. */
  exec(script, ...args) {
    return this.cmd("POST", "/execute/sync", { script, args });
  }
  text(css) {
    return this.exec(`const e = document.querySelector(arguments[0]); return e ? e.textContent : null;`, css);
  }
  visible(css) {
    return this.exec(
      `const e = document.querySelector(arguments[0]); return !!e && !e.hidden && e.offsetParent !== null;`,
      css,
    );
  }
  invoke(command, args = {}) {
    return this.exec(`return window.__TAURI_INTERNALS__.invoke(arguments[0], arguments[1]);`, command, args);
  }
  /** Waits until `check()` returns something truthy; returns it. */
  async until(what, check, timeoutMs = 20000) {
    const deadline = Date.now() + timeoutMs;
    let last;
    while (Date.now() < deadline) {
      last = await check();
      if (last) return last;
      await sleep(200);
    }
    throw new Error(`timed out after ${timeoutMs} ms waiting for ${what} (last: ${JSON.stringify(last)})`);
  }
  async screenshot(name) {
    mkdirSync(shots, { recursive: true });
    const png = await this.cmd("GET", "/screenshot");
    writeFileSync(join(shots, `${name}.png`), Buffer.from(png, "base64"));
  }
  async end() {
    try {
      await this.cmd("DELETE", "");
    } catch {}
  }
}

/** Kills whatever VM a test left behind in its state directory. */
export function killVms(stateDir) {
  const instances = join(stateDir, "instances");
  if (!existsSync(instances)) return;
  for (const name of execFileSync("ls", [instances]).toString().split("\n").filter(Boolean)) {
    try {
      const state = JSON.parse(readFileSync(join(instances, name, "state.json"), "utf8"));
      for (const pid of [state.qemu_pid, state.supervisor_pid]) if (pid) process.kill(pid, "SIGKILL");
    } catch {}
  }
}
