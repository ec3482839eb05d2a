// The desktop app, driven as a person would through WebDriver under Xvfb:
// start the VM and see state and IP, type `hostname` in a terminal tab,
// boot links (bad and good), share a dropped folder and boot it, the tray menu's model, Start at Login's
// files, the SSH key in a real Secret Service and the file fallback
// without one, a second launch that focuses the first, and stopping.
import { test, before, after } from "node:test";
import assert from "node:assert/strict";
import { existsSync, mkdirSync, readFileSync, rmSync, statSync, symlinkSync, writeFileSync } from "node:fs";
import { execFileSync, spawnSync } from "node:child_process";
import { join } from "node:path";
import { app, appEnv, killVms, repo, Session, shots, startDriver, startXvfb } from "./webdriver.mjs";

let xvfb;
before(async () => {
  assert.ok(existsSync(app), `${app} is missing: build the app first (./x app --no-launch)`);
  xvfb = await startXvfb();
});
after(() => xvfb?.stop());

const menu = (s) => s.invoke("tray_model");
const entry = (items, id) => items.find((e) => e.id === id);

test("without a keychain service the key falls back to a 0600 file", async () => {
  const { root, env } = appEnv(xvfb.display);
  delete env.DBUS_SESSION_BUS_ADDRESS;
  const driver = await startDriver(env);
  const s = await Session.start(driver.base);
  try {
    await s.until("the view", async () => (await s.text("#state")) === "stopped");
    assert.equal(await s.exec(`return document.querySelector("#key-store").dataset.store`), "file");
    const keyFile = join(env.HYPEROS_STATE_DIR, "keys/id_ed25519");
    assert.equal(statSync(keyFile).mode & 0o777, 0o600);
    assert.equal(readFileSync(join(env.HYPEROS_STATE_DIR, "keys/store"), "utf8").trim(), "file");
  } finally {
    await s.end();
    driver.stop();
    rmSync(root, { recursive: true, force: true, maxRetries: 5 });
  }
});

test("the whole app: VM, terminal, links, tray, login item, single instance", async (t) => {
  // A real Secret Service: the key must live there and never on disk.
  const { root, env } = appEnv(xvfb.display);
  // A short wait for peers in the guest: the unreachable link fails fast.
  const deadline = 5;
  mkdirSync(env.HYPEROS_STATE_DIR, { recursive: true });
  writeFileSync(join(env.HYPEROS_STATE_DIR, "desktop.json"), JSON.stringify({ run_deadline_secs: deadline }));
  const driver = await startDriver(env, { keyring: true });
  const s = await Session.start(driver.base);
  const keys = join(env.HYPEROS_STATE_DIR, "keys");
  try {
    await t.test("starts stopped, key in the keychain", async () => {
      await s.until("stopped", async () => (await s.text("#state")) === "stopped");
      assert.equal(await s.exec(`return document.querySelector("#key-store").dataset.store`), "keychain");
      assert.equal(readFileSync(join(keys, "store"), "utf8").trim(), "keychain");
      assert.ok(!existsSync(join(keys, "id_ed25519")), "the private key touched the disk");
      const items = await menu(s);
      assert.deepEqual(
        items.filter((e) => e.id !== "-").map((e) => e.id),
        ["status", "ip", "start", "stop", "restart", "terminal", "boot-link", "show", "autostart", "quit"],
      );
      assert.equal(entry(items, "status").text, "HyperOS: stopped");
      assert.ok(entry(items, "start").enabled && !entry(items, "stop").enabled && !entry(items, "terminal").enabled);
      await s.screenshot("stopped");
    });

    await t.test("a bad link is an inline error", async () => {
      await s.type("#link", "http://example.com/archive");
      await s.click("#boot");
      const err = await s.until("the link error", async () => (await s.visible("#link-error")) && s.text("#link-error"));
      assert.match(err, /A link starts with "dat:\/\/"/);
      assert.equal(await s.exec(`return window.__hyperos.tabCount()`), 0);
      await s.screenshot("bad-link");
      // Editing the link clears the error.
      await s.exec(`const l = document.querySelector("#link"); l.value = ""; l.dispatchEvent(new Event("input"));`);
      assert.ok(!(await s.visible("#link-error")));
    });

    await t.test("Start boots the VM; state and IP appear", async () => {
      const started = Date.now();
      await s.click("#start");
      await s.until("booting", async () => ["starting", "booting"].includes(await s.text("#state")), 5000);
      // The window follows state.json within a second (notify, no polling).
      const stateFile = join(env.HYPEROS_STATE_DIR, "instances/default/state.json");
      let fileRunningAt = null;
      let windowRunningAt = null;
      const ip = await s.until(
        "running with an IP",
        async () => {
          try {
            if (!fileRunningAt && JSON.parse(readFileSync(stateFile, "utf8")).phase === "running") fileRunningAt = Date.now();
          } catch {}
          const running = (await s.text("#state")) === "running";
          if (running && !windowRunningAt) windowRunningAt = Date.now();
          return running && (await s.text("#ip")) !== "–" && s.text("#ip");
        },
        150000,
      );
      assert.match(ip, /^\d+\.\d+\.\d+\.\d+$/);
      assert.ok(fileRunningAt, "state.json never said running");
      t.diagnostic(`window showed running ${windowRunningAt - fileRunningAt} ms after state.json did`);
      assert.ok(windowRunningAt - fileRunningAt < 1000, `the window lagged ${windowRunningAt - fileRunningAt} ms behind state.json`);
      t.diagnostic(`boot to running in the window: ${((Date.now() - started) / 1000).toFixed(1)} s`);
      // The boot call returns a moment after state.json says running.
      const items = await s.until("the tray's running menu", async () => {
        const items = await menu(s);
        return entry(items, "status").text === "HyperOS: running" && items;
      });
      assert.equal(entry(items, "ip").text, `IP: ${ip} (click to copy)`);
      assert.ok(!entry(items, "start").enabled && entry(items, "stop").enabled && entry(items, "terminal").enabled);
      assert.notEqual(await s.text("#hostname"), "–");
      await s.until("uptime", async () => /\ds$/.test(await s.text("#uptime")));
      assert.match(await s.text("#memory"), /MiB/);
    });

    await t.test("the tray icon sits in the system tray", async () => {
      // trayer (XEmbed) hosts it: the icon's window is embedded in its panel.
      const tree = execFileSync("xwininfo", ["-root", "-tree"], { env: { ...process.env, DISPLAY: xvfb.display } }).toString();
      const panel = tree.indexOf('("panel" "trayer")');
      assert.ok(panel >= 0, `no tray host:\n${tree}`);
      assert.match(tree.slice(panel), /"tray-icon tray app hyperos"/, "the app's icon is not in the tray");
      mkdirSync(shots, { recursive: true });
      execFileSync("import", ["-window", "root", join(shots, "desktop-with-tray.png")], { env: { ...process.env, DISPLAY: xvfb.display } });
    });

    await t.test("a terminal tab answers `hostname`", async () => {
      const hostname = await s.text("#hostname");
      await s.click("#new-tab");
      await s.until("a prompt", async () => /[#$] ?$/m.test(await s.exec(`return window.__hyperos.terminalText(0)`)), 30000);
      await s.type(".pane.active .xterm-helper-textarea", "hostname\n");
      let screen = "";
      const text = await s
        .until("the answer", async () => {
          screen = await s.exec(`return window.__hyperos.terminalText(0)`);
          return screen.split("\n").some((l) => l.trim() === hostname) && screen;
        })
        .catch((e) => assert.fail(`${e.message}; the terminal shows:\n${screen.trim()}`));
      assert.ok(text.includes("hostname"));
      await s.screenshot("running-terminal");
    });

    await t.test("a link shared on this host boots its container in a tab", async () => {
      // Shared as a user would, into the app's state directory: the app
      // finds the share and passes its ticket to the guest (hyperos-run).
      const shared = shareRootfs(env);
      await s.exec(`const l = document.querySelector("#link"); l.value = arguments[0];`, shared.link);
      await s.click("#boot");
      const booted = Date.now();
      await s.until("a second tab", async () => (await s.exec(`return window.__hyperos.tabCount()`)) === 2);
      assert.ok(!(await s.visible("#link-error")));
      // While the container starts, the guest's progress.json shows under
      // the link field.
      let shown = "";
      const progress = await s
        .until("fetch progress under the link", async () => {
          shown = (await s.visible("#boot-progress")) ? await s.text("#boot-progress") : "(hidden)";
          const m = /^fetched (\d+\.\d) of (\d+\.\d) MB · (\d+) peers?$/.exec(shown);
          return m && +m[1] > 0 && +m[3] >= 1 && m;
        }, 90000)
        .catch((e) => assert.fail(`${e.message}; it shows ${shown}`));
      t.diagnostic(`progress after ${((Date.now() - booted) / 1000).toFixed(1)} s: ${progress[0]}`);
      assert.ok(+progress[1] <= +progress[2], progress[0]);
      assert.ok(+progress[2] > 50, `a Debian minbase is more than ${progress[2]} MB`);
      // No command: the container's shell. Ask it which Debian it is.
      let screen = "";
      const prompt = async () => {
        screen = await s.exec(`return window.__hyperos.terminalText(1)`);
        return /[#$] ?$/m.test(screen.trimEnd()) && screen;
      };
      await s.until("the container's shell", prompt, 90000).catch((e) => assert.fail(`${e.message}:\n${screen}`));
      await s.type(".pane.active .xterm-helper-textarea", "cat /etc/debian_version\n");
      await s
        .until("the container's answer", async () => {
          screen = await s.exec(`return window.__hyperos.terminalText(1)`);
          return /^12\.\d+$/m.test(screen);
        }, 30000)
        .catch((e) => assert.fail(`${e.message}:\n${screen}`));
      await s.screenshot("boot-link");
      await s.type(".pane.active .xterm-helper-textarea", "exit\n");
      await s.until("the container's end", async () =>
        /session ended with status \d+/.test(await s.exec(`return window.__hyperos.terminalText(1)`)), 30000);
      await s.until("the progress gone", async () => !(await s.visible("#boot-progress")));
      assert.ok(!(await s.visible("#link-error")), "a clean exit is not an error");
    });

    await t.test("a link nobody shares is an inline error", async () => {
      // The ed25519 base point: a valid key, of an archive no peer has.
      const link = `dat://58${"66".repeat(31)}`;
      await s.exec(`const l = document.querySelector("#link"); l.value = arguments[0];`, link);
      const booted = Date.now();
      await s.click("#boot");
      await s.until("a third tab", async () => (await s.exec(`return window.__hyperos.tabCount()`)) === 3);
      let screen = "";
      const err = await s
        .until("the inline error", async () => {
          screen = await s.exec(`return window.__hyperos.terminalText(2)`);
          return (await s.visible("#link-error")) && s.text("#link-error");
        }, 60000)
        .catch((e) => assert.fail(`${e.message}; the tab shows:\n${screen}`));
      t.diagnostic(`inline error after ${((Date.now() - booted) / 1000).toFixed(1)} s (deadline ${deadline} s): ${err}`);
      assert.match(err, /^hyperos: /);
      assert.ok(!err.includes("\n"), "one line");
      // The same line ends the tab's output.
      assert.ok(screen.replace(/\s/g, "").includes(err.replace(/\s/g, "")), `the tab shows:\n${screen}`);
      assert.ok(!(await s.visible("#boot-progress")));
      await s.screenshot("unreachable-link");
    });

    await t.test("a folder dropped on the window is shared, boots, and stops being shared", async () => {
      const folder = join(root, "busybox-root");
      const marker = `dropped-${process.pid}-${Date.now()}`;
      busyboxRoot(folder, marker);
      // What the webview emits when files are dropped on it (no drag source
      // runs under Xvfb); the window's handler shares each dropped path.
      const drop = (paths) =>
        s.exec(
          `return window.__TAURI_INTERNALS__.invoke("plugin:event|emit", { event: "tauri://drag-drop", payload: { paths: arguments[0], position: { x: 300, y: 300 } } });`,
          paths,
        );
      const dropped = Date.now();
      await drop([folder]);
      const link = await s.until("the shared link in the field", async () => {
        const value = await s.exec(`return document.querySelector("#link").value`);
        return /^dat:\/\/[0-9a-f]{64}\+1$/.test(value) && value;
      }, 60000);
      t.diagnostic(`dropped folder shared after ${((Date.now() - dropped) / 1000).toFixed(1)} s: ${link}`);
      assert.ok(!(await s.visible("#link-error")));
      assert.match(await s.text("#shares"), new RegExp(`Sharing busybox-root\\s*${link.replace(/[+/.]/g, "\\$&")}`));
      // The CLI sees the app's share, alive, and leaves stopping it to the app.
      const shares = JSON.parse(execFileSync(cli, ["shares", "--json"], { env }).toString());
      const mine = shares.find((sh) => sh.link === link);
      assert.ok(mine, `hyperos shares does not list ${link}: ${JSON.stringify(shares)}`);
      assert.equal(mine.kind, "app");
      assert.equal(mine.state, "alive");
      assert.equal(mine.path, folder);
      const unshare = spawnSync(cli, ["unshare", mine.key], { env });
      assert.notEqual(unshare.status, 0, "unshare stopped the app's share");
      assert.match(unshare.stderr.toString().trim(), /^hyperos: the HyperOS app \(pid \d+\) shares .* stop it from the app's window/);
      // Boot it: the guest fetches from the app.
      await s.click("#boot");
      await s.until("a fourth tab", async () => (await s.exec(`return window.__hyperos.tabCount()`)) === 4);
      let screen = "";
      await s
        .until("the container's shell", async () => {
          screen = await s.exec(`return window.__hyperos.terminalText(3)`);
          return /[#$] ?$/m.test(screen.trimEnd());
        }, 90000)
        .catch((e) => assert.fail(`${e.message}:\n${screen}`));
      await s.type(".pane.active .xterm-helper-textarea", "cat /etc/marker\n");
      await s
        .until("the dropped folder's file", async () => {
          screen = await s.exec(`return window.__hyperos.terminalText(3)`);
          return screen.split("\n").some((l) => l.trim() === marker);
        }, 30000)
        .catch((e) => assert.fail(`${e.message}:\n${screen}`));
      await s.screenshot("dropped-folder");
      await s.type(".pane.active .xterm-helper-textarea", "exit\n");
      await s.until("the container's end", async () =>
        /session ended with status \d+/.test(await s.exec(`return window.__hyperos.terminalText(3)`)), 30000);
      // Something that is no image: a one-line inline error, nothing shared.
      const notes = join(root, "notes.txt");
      writeFileSync(notes, "not an image\n");
      await drop([notes]);
      const err = await s.until("the drop's error", async () => (await s.visible("#link-error")) && s.text("#link-error"), 30000);
      assert.ok(!err.includes("\n"), `one line: ${err}`);
      assert.match(err, /notes\.txt/);
      assert.equal((await s.exec(`return document.querySelectorAll("#shares li").length`)), 1);
      // Stop sharing it: gone from the window and the records, and a new
      // reader (a mount with its own state, given the app's ticket) finds
      // that the app no longer gives it out.
      await s.click("#shares li .stop-share");
      await s.until("the list emptied", async () => !(await s.visible("#shares")));
      const after = JSON.parse(execFileSync(cli, ["shares", "--json"], { env }).toString());
      assert.ok(!after.some((sh) => sh.link === link), `still listed: ${JSON.stringify(after)}`);
      const probe = join(root, "probe");
      mkdirSync(join(probe, "mnt"), { recursive: true });
      const mount = spawnSync(cli, ["mount", link, join(probe, "mnt"), "--peer", mine.ticket, "--no-dht", "--no-lan", "--deadline", "3"], {
        env: { ...env, HYPEROS_STATE_DIR: join(probe, "state") },
        timeout: 30000,
      });
      assert.notEqual(mount.status, 0, `mounted a withdrawn archive: ${mount.stdout}`);
      assert.match(mount.stderr.toString(), /no peer had a valid manifest/);
    });

    await t.test("Start at Login writes and removes the XDG autostart entry", async () => {
      // auto-launch writes to ~/.config/autostart, whatever XDG_CONFIG_HOME says.
      const file = join(env.HOME, ".config/autostart/HyperOS.desktop");
      assert.ok(!existsSync(file));
      await s.click("#autostart");
      await s.until("the autostart file", async () => existsSync(file));
      const desktop = readFileSync(file, "utf8");
      assert.match(desktop, /^Exec=.*hyperos-desktop.* --autostart/m);
      assert.equal(entry(await menu(s), "autostart").checked, true);
      await s.click("#boot-at-login");
      const saved = () => JSON.parse(readFileSync(join(env.HYPEROS_STATE_DIR, "desktop.json"), "utf8"));
      await s.until("the setting", async () => saved().boot_at_login === true);
      assert.equal(saved().run_deadline_secs, deadline, "saving a setting keeps the others");
      await s.click("#autostart");
      await s.until("the file removed", async () => !existsSync(file));
      assert.equal(entry(await menu(s), "autostart").checked, false);
    });

    await t.test("a second launch hands over to the first and exits", async () => {
      const bus = readFileSync(join(env.HOME, "bus"), "utf8").trim();
      const second = spawnSync(app, [], { env: { ...env, DBUS_SESSION_BUS_ADDRESS: bus }, timeout: 20000 });
      assert.equal(second.status, 0, `second instance: ${second.stderr}`);
      assert.equal(await s.text("#state"), "running");
    });

    await t.test("Stop powers the VM off", async () => {
      await s.click("#stop");
      let seen = "";
      await s
        .until("stopped", async () => {
          seen = `state ${await s.text("#state")}, ip ${await s.text("#ip")}, error ${await s.text("#action-error")}`;
          return (await s.text("#state")) === "stopped" && (await s.text("#ip")) === "–";
        }, 120000)
        .catch((e) => assert.fail(`${e.message}; the window shows ${seen}; state.json: ${readFileSync(join(env.HYPEROS_STATE_DIR, "instances/default/state.json"), "utf8")}`));
      const items = await menu(s);
      assert.ok(entry(items, "start").enabled && !entry(items, "stop").enabled);
      await s.screenshot("stopped-after");
    });
  } finally {
    await s.end();
    driver.stop();
    killVms(env.HYPEROS_STATE_DIR);
    unshareAll(env);
    rmSync(root, { recursive: true, force: true, maxRetries: 5 });
  }
});

// The `hyperos` CLI (built by the core's tests) and a Debian minbase root
// filesystem, the one the core's container tests share.
const cli = [join(repo, "target/debug/hyperos"), join(repo, "target/release/hyperos")].find(existsSync);
const rootfs = join(repo, "target/bench-cache/bookworm-minbase");

function shareRootfs(env) {
  assert.ok(cli, "the hyperos CLI is not built: cargo build -p hyperos-cli");
  if (!existsSync(join(rootfs, "usr/bin/apt-get"))) {
    execFileSync("sh", ["-c", `mkdir -p "$(dirname "$0")" && rm -rf "$0.tmp" && debootstrap --variant=minbase bookworm "$0.tmp" http://deb.debian.org/debian >/dev/null && mv "$0.tmp" "$0"`, rootfs], { stdio: "inherit" });
  }
  const out = execFileSync(cli, ["share", rootfs, "--daemon", "--json", "--bind", "127.0.0.1:0", "--no-dht", "--no-lan"], {
    env: { ...env, HYPEROS_KEYSTORE: "file" },
  }).toString();
  return JSON.parse(out.trim().split("\n").pop());
}

// A root filesystem of busybox and its applets, with /etc/marker.
function busyboxRoot(dir, marker) {
  for (const d of ["bin", "etc", "usr/lib", "tmp", "proc", "sys", "dev", "run", "var"]) mkdirSync(join(dir, d), { recursive: true });
  execFileSync("cp", ["/bin/busybox", join(dir, "bin/busybox")]);
  for (const applet of execFileSync("/bin/busybox", ["--list"]).toString().split("\n")) {
    if (applet && applet !== "busybox") symlinkSync("busybox", join(dir, "bin", applet));
  }
  writeFileSync(join(dir, "usr/lib/os-release"), "ID=hyperos-test\n");
  writeFileSync(join(dir, "etc/passwd"), "root:x:0:0:root:/:/bin/sh\n");
  writeFileSync(join(dir, "etc/marker"), `${marker}\n`);
}

function unshareAll(env) {
  if (!cli) return;
  try {
    const shares = JSON.parse(execFileSync(cli, ["shares", "--json"], { env }).toString());
    for (const sh of shares) execFileSync(cli, ["unshare", sh.key], { env, stdio: "ignore" });
  } catch {}
}

