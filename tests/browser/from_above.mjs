// The alerts-from-above page (上级预警) in headless Chromium against a
// district started by tests/tests/console_browser.rs whose city has sent a
// relayed alert and one left in review: both rows are shown with what was
// done and what the city was told, the source with its certificate, and
// the menu leads there.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";

const env = (k) => { const v = process.env[k]; if (!v) throw new Error("missing " + k); return v; };
const URL = env("CONSOLE_URL");
const SHOTS = env("SHOTS");
const RELAYED = env("RELAYED_EBM");
const REVIEW = env("REVIEW_EBM");
const who = { name: env("DRAFTER_NAME"), password: env("DRAFTER_PASSWORD") };
fs.mkdirSync(SHOTS, { recursive: true });
const step = (s) => console.error("[browser] " + s);

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const c = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: "zh-CN" });
  const errors = [];
  c.on("weberror", (e) => errors.push(String(e.error())));
  const p = await c.newPage();
  await p.goto(URL + "/login");
  await p.fill("#name", who.name);
  await p.fill("#password", who.password);
  await Promise.all([p.waitForURL(URL + "/"), p.press("#password", "Enter")]);

  await p.getByRole("link", { name: "上级预警" }).click();
  await p.waitForURL(URL + "/from-above");
  step("the menu leads to the page of alerts from above");

  const row = (id) => p.locator(`tr[data-original="${id}"]`);
  await row(RELAYED).waitFor();
  assert.match(await row(RELAYED).locator("td.done").innerText(), /已发布/);
  await row(REVIEW).waitFor();
  assert.match(await row(REVIEW).locator("td.done").innerText(), /待审核/);
  assert.match(await row(REVIEW).locator("td.state").innerText(), /等待播发/);
  step("each alert shows what was done here and how it stands");

  // What the city was told arrives within a report round (2 s); reload
  // until the relayed one has been reported as it stands.
  let told = "";
  for (let i = 0; i < 20 && !/已上报|已全部上报/.test(told); i++) {
    await p.reload();
    told = await row(RELAYED).locator("td.told").innerText();
    if (!/已上报|已全部上报/.test(told)) await p.waitForTimeout(500);
  }
  assert.match(told, /已上报|已全部上报/, told);
  assert.match(await row(REVIEW).locator("td.told").innerText(), /已上报：等待播发/);
  step("and what the city was told, unasked");

  const source = p.locator("table.sources tr", { hasText: "南昌市应急广播平台" });
  assert.match(await source.innerText(), /主动上报至 127\.0\.0\.1:/);
  assert.match(await source.innerText(), /GY\/T 385/);
  assert.match(await source.locator("td.cert").innerText(), /^3601000001，有效期至 \d{4}-/);
  step("the source with its policy, where its states go and its CA-issued certificate");

  await p.screenshot({ path: path.join(SHOTS, "from-above.png"), fullPage: true });
  assert.deepEqual(errors, [], "no script error");
  step("all passed");
} finally {
  await browser.close();
}
