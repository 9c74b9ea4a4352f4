// Drives Debian's firefox-esr for the end-to-end tests over WebDriver BiDi (puppeteer-core,
// installed by scripts/setup.sh --test into tests/e2e/node; it never downloads a browser).
//
// Protocol: one JSON object a line on stdin, one answer a line on stdout.
//   {"id": 1, "op": "open", "url": "...", "init": "..."}   -> {"id": 1, "ok": true, "page": "p1"}
//     ("init", optional: a script run in every document of the page before its own scripts)
//   {"id": 2, "op": "eval", "page": "p1", "expr": "..."}   -> {"id": 2, "ok": true, "value": ...}
//   {"id": 3, "op": "click", "page": "p1", "selector": "#join-btn"}
//   {"id": 4, "op": "shot", "page": "p1", "path": "/tmp/x.png"}
//   {"id": 5, "op": "close", "page": "p1"}
//   {"id": 6, "op": "quit"}
// A failure is {"id": n, "ok": false, "error": "..."}. Console lines of a page come as
// {"event": "console", "page": "p1", "text": "..."}. "eval" awaits a promise the expression
// gives. Each page has a browser context (a fake camera and microphone) of its own. The first
// line printed is {"event": "ready", "version": "..."}. EOF on stdin closes the browser.
import { createInterface } from "node:readline";
import { createRequire } from "node:module";
import path from "node:path";
import { fileURLToPath } from "node:url";

const here = path.dirname(fileURLToPath(import.meta.url));
const require = createRequire(path.join(here, "node", "package.json"));
const puppeteer = require("puppeteer-core");

const executablePath = process.env.FIREFOX || "/usr/bin/firefox-esr";
// See /work/shared/TESTING-REAL-PEERS.md: fake devices without a prompt, and 127.0.0.1 host
// candidates (Firefox gathers no loopback candidate without ice.loopback).
//
// Camera and microphone allowed by default, as after a user's "Allow": Firefox gathers host
// candidates on every interface only for a page that captures or holds a camera/microphone
// permission. media.navigator.permission.disabled skips the prompt but grants no permission,
// so without these two prefs Firefox logs "use only default local addresses: yes" and offers
// only the default route's address (192.0.2.2 here; nothing at all in a loopback-only network
// namespace). It never pairs that with the SFU's 127.0.0.1 candidate, sends no check, and ICE
// fails after ~5 s: the "Reconnecting..." loop, with send_not_connected drops and
// keyframe waits on the worker for the subscribers that never connect. A real user's Firefox,
// having allowed the camera, gathers every interface (and a receive-only one reaches an SFU
// on a routable address through its default route).
const prefs = {
  "media.navigator.streams.fake": true,
  "media.navigator.permission.disabled": true,
  "media.peerconnection.ice.loopback": true,
  "permissions.default.camera": 1,
  "permissions.default.microphone": 1,
  "media.autoplay.default": 0,
  "media.autoplay.blocking_policy": 0,
  ...JSON.parse(process.env.FIREFOX_PREFS || "{}"), // a test's own overrides
};

function send(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

const browser = await puppeteer.launch({
  browser: "firefox",
  executablePath,
  headless: true,
  extraPrefsFirefox: prefs,
  args: ["--width=1280", "--height=800"],
  dumpio: Boolean(process.env.FIREFOX_DUMPIO), // the browser's own output on stderr (R_LOG_LEVEL=9 for ICE)
});
const pages = new Map();
let next = 0;

async function handle(msg) {
  switch (msg.op) {
    case "open": {
      const context = await browser.createBrowserContext();
      const page = await context.newPage();
      const name = `p${++next}`;
      page.on("console", (m) => send({ event: "console", page: name, text: `${m.type()}: ${m.text()}` }));
      page.on("pageerror", (e) => send({ event: "console", page: name, text: `pageerror: ${e}` }));
      pages.set(name, { context, page });
      if (msg.init) await page.evaluateOnNewDocument(msg.init);
      await page.goto(msg.url);
      return { page: name };
    }
    case "eval": {
      const value = await pages.get(msg.page).page.evaluate(msg.expr);
      return { value: value === undefined ? null : value };
    }
    case "click":
      await pages.get(msg.page).page.click(msg.selector);
      return {};
    case "shot":
      await pages.get(msg.page).page.screenshot({ path: msg.path });
      return {};
    case "close": {
      const entry = pages.get(msg.page);
      if (entry) {
        pages.delete(msg.page);
        await entry.context.close();
      }
      return {};
    }
    case "quit":
      await browser.close();
      return {};
    default:
      throw new Error(`unknown op ${msg.op}`);
  }
}

send({ event: "ready", version: await browser.version(), pid: browser.process()?.pid ?? null });
const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  if (!line.trim()) continue;
  let msg;
  try {
    msg = JSON.parse(line);
  } catch (e) {
    send({ ok: false, error: `bad json: ${e}` });
    continue;
  }
  if (msg.op === "quit") break;
  // requests run concurrently (a slow evaluate on one page does not hold up another)
  handle(msg).then(
    (out) => send({ id: msg.id, ok: true, ...out }),
    (e) => send({ id: msg.id, ok: false, error: String(e && e.stack ? e.stack : e) }),
  );
}
await browser.close().catch(() => {});
process.exit(0);
