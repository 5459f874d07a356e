// The console end to end in headless Chromium (Debian's, driven by
// playwright-core), against a real district started by
// tests/tests/console_browser.rs, which passes everything in the
// environment and checks the terminals' audio afterwards.
import { chromium } from "playwright-core";
import assert from "node:assert/strict";
import fs from "node:fs";
import path from "node:path";

const env = (k) => { const v = process.env[k]; if (!v) throw new Error("missing " + k); return v; };
const URL = env("CONSOLE_URL");
const SHOTS = env("SHOTS");
const LIVE_VILLAGES = env("LIVE_VILLAGES").split(",");
const LIVE_EXPECT = Number(env("LIVE_EXPECT"));
const DRILL_VILLAGE = env("DRILL_VILLAGE");
const TOTAL_TERMINALS = Number(env("TOTAL_TERMINALS"));
const drafter = { name: env("DRAFTER_NAME"), password: env("DRAFTER_PASSWORD") };
const approver = { name: env("APPROVER_NAME"), password: env("APPROVER_PASSWORD") };
const maintainer = { name: env("MAINTAINER_NAME"), password: env("MAINTAINER_PASSWORD") };
const admin = { name: env("ADMIN_NAME"), password: env("ADMIN_PASSWORD") };
fs.mkdirSync(SHOTS, { recursive: true });

const step = (s) => console.error("[browser] " + s);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--autoplay-policy=no-user-gesture-required"],
});

async function context(lang) {
  const c = await browser.newContext({ viewport: { width: 1366, height: 900 }, locale: lang });
  const errors = [];
  c.on("weberror", (e) => errors.push(String(e.error())));
  c.errors = errors;
  return c;
}

async function login(page, who) {
  await page.goto(URL + "/login");
  // Keyboard only: to the name field, then type.
  await page.locator("#name").waitFor();
  await tabTo(page, "#name");
  await page.keyboard.type(who.name);
  await page.keyboard.press("Tab");
  await page.keyboard.type(who.password);
  await page.keyboard.press("Enter");
  await page.waitForURL(URL + "/");
}

// Presses Tab until `selector` has focus (keyboard navigation only).
async function tabTo(page, selector, max = 80) {
  for (let i = 0; i < max; i++) {
    if (await page.evaluate((s) => document.activeElement && document.activeElement.matches(s), selector)) return;
    await page.keyboard.press("Tab");
  }
  throw new Error("Tab never reached " + selector);
}

const card = (page, id) => page.locator(`article[data-broadcast="${id}"]`);

try {
  const A = await context("zh-CN");
  const B = await context("zh-CN");
  const d = await A.newPage();
  const a = await B.newPage();

  step("a wrong password shows the refusal on the login page");
  await d.goto(URL + "/login");
  await d.fill("#name", drafter.name);
  await d.fill("#password", "not-the-password");
  await d.press("#password", "Enter");
  await d.locator("#login-error").waitFor({ state: "visible" });
  assert.match(await d.locator("#login-error").textContent(), /用户名或密码错误/);

  step("the drafter composes with the keyboard alone");
  await login(d, drafter);
  await d.goto(URL + "/compose");
  await d.locator("#title").waitFor();
  // Listen for the file chooser long before Space opens it: Playwright turns
  // interception on asynchronously when the first listener is added, and a key
  // press sent at once can beat it (the chooser then opens natively, unseen;
  // CI timed out so once).
  const chooserOpened = d.waitForEvent("filechooser", { timeout: 60000 });
  chooserOpened.catch(() => {}); // awaited below; a failure before then is reported by that step
  await d.evaluate(() => document.activeElement && document.activeElement.blur());
  await tabTo(d, "#title");
  const liveTitle = "洪水预警（浏览器测试）";
  await d.keyboard.type(liveTitle);
  await tabTo(d, "#text");
  await d.keyboard.type("请沿河群众立即转移。");
  for (const code of LIVE_VILLAGES) {
    await tabTo(d, `input[name="areas"][value="${code}"]`);
    await d.keyboard.press("Space");
  }
  assert.match(await d.locator("#area-total").textContent(), new RegExp(String(LIVE_EXPECT)));
  await tabTo(d, "#audio");
  await d.keyboard.press("Space");
  const chooser = await chooserOpened;
  await chooser.setFiles(env("AUDIO"));
  await tabTo(d, "#save");
  await d.keyboard.press("Enter");
  await d.locator("#preview").waitFor({ state: "visible", timeout: 60000 });
  assert.equal(await d.locator("#upload-progress").evaluate((p) => p.value), 100, "upload progress reached 100 %");
  step("the preview plays the normalised audio in the page");
  const duration = await d.locator("#preview-audio").evaluate((el) => new Promise((res, rej) => {
    if (el.readyState >= 1) return res(el.duration);
    el.addEventListener("loadedmetadata", () => res(el.duration));
    el.addEventListener("error", () => rej(new Error("preview audio failed to load")));
  }));
  assert.ok(duration > 3 && duration < 30, "preview duration " + duration);
  await d.screenshot({ path: path.join(SHOTS, "compose.png"), fullPage: true });
  await tabTo(d, "#submit-draft");
  await d.keyboard.press("Enter");
  await d.locator("#confirm[open]").waitFor();
  assert.match(await d.locator("#confirm-text").textContent(), /真实警报/);
  await d.keyboard.press("Enter");
  await d.locator("#submitted").waitFor({ state: "visible" });
  assert.match(await d.locator("#submitted").textContent(), /已提交审核/);

  step("the drafter watches the overview (never reloaded from here on)");
  await d.goto(URL + "/");
  await d.locator("#live-state.ok").waitFor({ timeout: 15000 });
  const marker = await d.evaluate(() => (window.__loaded = Math.random()));

  step("the approver hears and approves, typing the confirmation");
  await login(a, approver);
  await a.goto(URL + "/review");
  const art = a.locator("article.draft", { hasText: liveTitle });
  await art.waitFor();
  const heard = await art.locator("audio").evaluate((el) => new Promise((res, rej) => {
    el.preload = "auto";
    el.muted = true;
    el.addEventListener("loadedmetadata", () => res(el.duration));
    el.addEventListener("error", () => rej(new Error("review audio failed to load")));
    el.load();
  }));
  assert.ok(Math.abs(heard - duration) < 0.1, `the approver hears what the drafter previewed (${heard} vs ${duration})`);
  await a.screenshot({ path: path.join(SHOTS, "review.png"), fullPage: true });
  await art.locator("button[data-approve]").click();
  await a.locator("#confirm[open]").waitFor();
  assert.equal(await a.locator("#confirm-typed").isVisible(), true, "a live emergency asks for a typed confirmation");
  await a.locator("#confirm-input").fill("确认发布");
  await a.locator("#confirm-ok").click();
  await a.locator("#flash", { hasText: "已发布" }).waitFor();

  step("coverage reaches the villages' terminals without a reload");
  const live = d.locator("article.bc", { hasText: liveTitle });
  await live.waitFor({ timeout: 30000 });
  const liveId = await live.getAttribute("data-broadcast");
  await d.waitForFunction(({ id, n }) => {
    const c = document.querySelector(`article[data-broadcast="${id}"] .count`);
    return c && (Number(c.dataset.playing) === n);
  }, { id: liveId, n: LIVE_EXPECT }, { timeout: 30000 });
  assert.match(await card(d, liveId).locator(".count").textContent(), new RegExp(`${LIVE_EXPECT} / ${LIVE_EXPECT} 正在播放`));
  await d.screenshot({ path: path.join(SHOTS, "overview.png"), fullPage: true });
  await d.waitForFunction(({ id, n }) => {
    const f = document.querySelector(`article[data-broadcast="${id}"] [data-finished]`);
    return f && Number(f.dataset.finished) === n;
  }, { id: liveId, n: LIVE_EXPECT }, { timeout: 60000 });
  assert.equal(await d.evaluate(() => window.__loaded), marker, "the overview was never reloaded");
  console.log(JSON.stringify({ live: liveId }));

  step("a drill looks different everywhere, and HTML in its title stays text");
  const drillTitle = "演练<script>window.__xss=1</script><img src=x onerror=\"window.__xss=2\">";
  await d.goto(URL + "/compose");
  await d.selectOption("#template", { label: "演练" });
  assert.equal(await d.locator('input[name="class"][value="drill"]').isChecked(), true);
  assert.equal(await d.locator("#drill-banner").isVisible(), true, "the drill banner shows while composing");
  assert.equal(await d.evaluate(() => document.body.classList.contains("drill-mode")), true);
  await d.fill("#title", drillTitle);
  await d.check(`input[name="areas"][value="${DRILL_VILLAGE}"]`);
  await d.setInputFiles("#audio", env("DRILL_AUDIO"));
  await d.click("#save");
  await d.locator("#preview").waitFor({ state: "visible", timeout: 60000 });
  await d.screenshot({ path: path.join(SHOTS, "compose-drill.png"), fullPage: true });
  // The approver's queue is open before the drill is submitted.
  await a.goto(URL + "/review");
  await a.evaluate(() => { window.__reviewLoaded = true; });
  await d.click("#submit-draft");
  const drillConfirm = await d.locator("#confirm-text").textContent();
  assert.match(drillConfirm, /演练/);
  assert.doesNotMatch(drillConfirm, /真实警报/, "the drill's confirmation is its own");
  await d.click("#confirm-ok");
  await d.locator("#submitted").waitFor({ state: "visible" });

  const drillArt = a.locator("article.draft.drill");
  await drillArt.waitFor({ timeout: 15000 });
  assert.equal(await a.evaluate(() => window.__reviewLoaded), true, "the drill arrived in the open queue without a reload");
  assert.equal(await drillArt.locator(".drill-banner").isVisible(), true);
  assert.match(await drillArt.locator("h2.title").textContent(), /<script>window.__xss=1<\/script>/);
  await drillArt.locator("button[data-approve]").click();
  await a.locator("#confirm[open]").waitFor();
  assert.equal(await a.locator("#confirm-typed").isVisible(), false, "a drill needs no typed word");
  await a.locator("#confirm-ok").click();
  await a.locator("#flash", { hasText: "已发布" }).waitFor();
  await drillArt.waitFor({ state: "detached", timeout: 15000 });
  assert.equal(await a.locator("#queue-empty").isVisible(), true, "the decided draft left the queue");

  await d.goto(URL + "/");
  const drill = d.locator("article.bc.drill");
  await drill.waitFor({ timeout: 30000 });
  const drillId = await drill.getAttribute("data-broadcast");
  assert.equal(await drill.locator(".drill-banner").isVisible(), true);
  const colours = await d.evaluate((id) => {
    const s = (el) => getComputedStyle(el);
    const dr = document.querySelector(`article[data-broadcast="${id}"]`);
    const lv = document.querySelector("article.bc:not(.drill)");
    return { drill: s(dr).borderLeftColor, live: lv ? s(lv).borderLeftColor : null, badge: s(dr.querySelector(".class-badge")).backgroundColor };
  }, drillId);
  assert.notEqual(colours.drill, colours.live, "a drill has its own colour");
  assert.equal(colours.badge, "rgb(106, 27, 154)", "the drill's badge is purple");
  assert.match(await drill.locator("h3.title").textContent(), /<script>/);
  assert.equal(await d.evaluate(() => window.__xss), undefined, "no script from the title ran");
  await drill.screenshot({ path: path.join(SHOTS, "drill.png") });

  step("a state-changing request without the CSRF token is refused");
  const noToken = await a.evaluate(async (id) => {
    const r = await fetch(`/api/broadcasts/${id}/cancel`, { method: "POST", headers: { "Content-Type": "application/json" }, body: "{}" });
    return { status: r.status, body: await r.json() };
  }, drillId);
  assert.equal(noToken.status, 403);
  assert.equal(noToken.body.error, "csrf");

  step("one click cancels the drill, named in the confirmation");
  await a.goto(URL + "/");
  const toCancel = a.locator(`article[data-broadcast="${drillId}"] button[data-cancel]`);
  await toCancel.click();
  await a.locator("#confirm[open]").waitFor();
  assert.ok((await a.locator("#confirm-text").textContent()).includes("<script>window.__xss=1</script>"), "the confirmation names the broadcast");
  await a.locator("#confirm-ok").click();
  await a.waitForFunction((id) => {
    const c = document.querySelector(`article[data-broadcast="${id}"]`);
    return c && c.dataset.state === "cancelled";
  }, drillId, { timeout: 20000 });
  await d.waitForFunction((id) => document.querySelector(`article[data-broadcast="${id}"]`)?.dataset.state === "cancelled", drillId, { timeout: 20000 });
  // Stopped at the terminals: each of the drill village's terminals says so.
  await d.waitForFunction(({ id, n }) => {
    const c = document.querySelector(`article[data-broadcast="${id}"] [data-cancelled]`);
    return c && Number(c.dataset.cancelled) === n;
  }, { id: drillId, n: Number(env("DRILL_EXPECT")) }, { timeout: 30000 });
  console.log(JSON.stringify({ drill: drillId }));

  step("the terminal map shows every terminal");
  await a.goto(URL + "/terminals");
  await a.locator("svg circle.dot").first().waitFor();
  assert.equal(await a.locator("svg circle.dot").count(), TOTAL_TERMINALS);
  assert.equal(await a.locator("table.terminals tbody tr").count(), TOTAL_TERMINALS);
  await a.selectOption("#filter-state", "offline");
  assert.equal(await a.locator("table.terminals tbody tr:visible").count(), 0, "no terminal is offline");
  await a.selectOption("#filter-state", "");
  await a.screenshot({ path: path.join(SHOTS, "terminals.png"), fullPage: true });
  await a.evaluate(() => { window.__terminalsLoaded = true; });

  step("a maintainer sets a terminal's volume with a signed command");
  const M = await context("zh-CN");
  const m = await M.newPage();
  await login(m, maintainer);
  await m.goto(URL + "/terminals");
  const serial = await m.locator("table.terminals tbody tr a").first().textContent();
  await m.goto(URL + "/terminals/" + serial);
  await m.fill("#volume", "40");
  await m.click("#volume-form button");
  await m.locator("#flash", { hasText: "指令已签发" }).waitFor();
  // The approver's terminals page, open since before, shows it live.
  await a.waitForFunction((s) => {
    const v = document.querySelector('tr[data-serial="' + s + '"] .volume');
    return v && v.textContent === "40";
  }, serial.trim(), { timeout: 30000 });
  assert.equal(await a.evaluate(() => window.__terminalsLoaded), true, "the terminals page was never reloaded");

  step("an admin creates an account; a bad one is refused naming the field");
  const D = await context("zh-CN");
  const ad = await D.newPage();
  await login(ad, admin);
  await ad.goto(URL + "/accounts");
  await ad.fill("#acc-name", "clerk-li");
  await ad.fill("#acc-display", "李文书");
  await ad.fill("#acc-password", "short");
  await ad.check('input[name="roles"][value="clerk"]');
  await ad.click("#new-account button[type=submit]");
  await ad.locator('.field-error[data-field="password"]').waitFor({ state: "visible" });
  await ad.fill("#acc-password", "a-long-enough-password");
  await ad.click("#new-account button[type=submit]");
  await ad.locator("tr[data-account=\"clerk-li\"]").waitFor({ timeout: 10000 });
  assert.match(await ad.locator("tr[data-account=\"clerk-li\"]").textContent(), /李文书/);

  step("repeated wrong passwords lock the account, and the login page says so");
  const L = await context("zh-CN");
  const l = await L.newPage();
  await l.goto(URL + "/login");
  let said = "";
  for (let i = 0; i < 6; i++) {
    await l.fill("#name", "clerk-li");
    await l.fill("#password", "wrong-password-" + i);
    await l.press("#password", "Enter");
    await l.locator("#login-error").waitFor({ state: "visible" });
    said = await l.locator("#login-error").textContent();
  }
  assert.match(said, /锁定/, "the lock-out is named: " + said);
  await L.close();

  step("a daily programme spoken from its text: scheduled, heard, listed with each village's plan");
  await d.goto(URL + "/compose");
  await d.check('input[name="class"][value="daily"]');
  assert.equal(await d.locator("#schedule").isVisible(), true, "daily content may be scheduled");
  await d.selectOption("#repeat", "weekly");
  assert.equal(await d.locator("#weekday-pick").isVisible(), true, "weekly asks for its days");
  for (let wd = 1; wd <= 7; wd++) await d.check(`input[name="weekdays"][value="${wd}"]`);
  await d.fill("#times", "12:00, 23:45");
  const first = await d.locator("#first_date").inputValue();
  const last = new Date(Date.parse(first + "T00:00:00Z") + 14 * 86400000).toISOString().slice(0, 10);
  await d.fill("#last_date", last);
  const progTitle = "村广播早间新闻（浏览器测试）";
  await d.fill("#title", progTitle);
  await d.fill("#text", "今天是2026年12月8日，气温5到12℃，请注意防寒。");
  await d.check(`input[name="areas"][value="${DRILL_VILLAGE}"]`);
  await d.check('input[name="source"][value="speak"]');
  assert.equal(await d.locator("#audio").isVisible(), false, "no file to pick when the text is spoken");
  await d.click("#speak-preview");
  await d.locator("#speak-audio").waitFor({ state: "visible", timeout: 30000 });
  const spoken = await d.locator("#speak-audio").evaluate((el) => new Promise((res, rej) => {
    if (el.readyState >= 1) return res(el.duration);
    el.addEventListener("loadedmetadata", () => res(el.duration));
    el.addEventListener("error", () => rej(new Error("the speech failed to load")));
  }));
  assert.ok(spoken > 2 && spoken < 30, "speech duration " + spoken);
  assert.match(await d.locator("#speak-pinyin").textContent(), /jin1 tian1 shi4 er4 ling2 er4 liu4 nian2 shi2 er4 yue4 ba1 ri4/);
  await d.click("#save");
  await d.locator("#preview").waitFor({ state: "visible", timeout: 60000 });
  await d.screenshot({ path: path.join(SHOTS, "compose-programme.png"), fullPage: true });
  await d.click("#submit-draft");
  await d.locator("#confirm-ok").click();
  await d.locator("#submitted", { hasText: "节目已发布" }).waitFor({ timeout: 30000 });
  await d.goto(URL + "/programmes");
  const progRow = d.locator("table.programmes tr", { hasText: progTitle });
  await progRow.waitFor();
  // Every day of the week is every day.
  assert.match(await progRow.textContent(), /每天 12:00、23:45/);
  const planRows = d.locator(`section.village-plan[data-area="${DRILL_VILLAGE}"] table.plan tr`, { hasText: progTitle });
  assert.equal(await planRows.count(), 2, "today's two plays in the drill village's plan");
  await d.screenshot({ path: path.join(SHOTS, "programmes.png"), fullPage: true });

  step("the approver sets the village's quiet hours and withdraws the programme");
  await a.goto(URL + "/programmes");
  await a.check(`#quiet-form input[name="areas"][value="${DRILL_VILLAGE}"]`);
  await a.fill("#quiet-windows", "22:00-06:00");
  await a.selectOption("#quiet-mode", "skip");
  await a.click("#quiet-form button[type=submit]");
  await a.locator("#flash", { hasText: "静默时段已签发" }).waitFor();
  await a.locator("table.quiet tr.own", { hasText: "22:00-06:00" }).waitFor({ timeout: 10000 });
  await a.locator("table.programmes tr", { hasText: progTitle }).locator("button[data-withdraw]").click();
  await a.locator("#confirm[open]").waitFor();
  assert.ok((await a.locator("#confirm-text").textContent()).includes(progTitle));
  await a.locator("#confirm-ok").click();
  await a.locator("table.programmes tr.withdrawn", { hasText: progTitle }).waitFor({ timeout: 10000 });

  step("every page renders in zh-CN and en with every text found");
  for (const lang of ["zh-CN", "en"]) {
    await a.goto(`${URL}/lang?to=${lang}&back=/`);
    for (const p of ["/", "/compose", "/review", "/programmes", "/from-above", "/terminals", "/security", "/audit", "/accounts", "/certificates"]) {
      await a.goto(URL + p);
      assert.equal(await a.evaluate(() => document.documentElement.lang), lang, p);
      const text = await a.evaluate(() => document.body.innerText);
      assert.ok(!text.includes("⟦"), `${p} in ${lang}: a catalogue key is missing`);
    }
  }
  await a.goto(`${URL}/lang?to=zh-CN&back=/`);

  step("a platform with no account: the first admin is made on the login page with the setup code");
  const S = await context("zh-CN");
  const su = await S.newPage();
  const SETUP_URL = env("SETUP_URL");
  await su.goto(SETUP_URL + "/");
  await su.waitForURL(SETUP_URL + "/login");
  await su.fill("#setup-code", "000000000000");
  await su.fill("#setup-name", "chief");
  await su.fill("#setup-display", "王主任");
  await su.fill("#setup-password", "the-first-admin-password");
  await su.click("#setup-form button[type=submit]");
  await su.locator("#flash.error").waitFor({ state: "visible" });
  await su.fill("#setup-code", env("SETUP_CODE"));
  await su.click("#setup-form button[type=submit]");
  await su.waitForURL(SETUP_URL + "/");
  assert.match(await su.locator(".me .who").textContent(), /王主任/);
  await su.goto(SETUP_URL + "/login");
  assert.equal(await su.locator("#setup-form").count(), 0, "the setup form is gone once an account exists");

  for (const c of [A, B, M, D, S]) assert.deepEqual(c.errors, [], "no script error in the pages");
  await browser.close();
  step("all passed");
} catch (e) {
  console.error(e);
  await browser.close();
  process.exit(1);
}
