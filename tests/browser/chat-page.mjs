// The chat page end to end in headless Chromium: load it, send a message and see the reply stream in, then stop a
// long answer. Usage: node chat-page.mjs http://127.0.0.1:PORT   (CHROMIUM=path overrides /usr/bin/chromium)
import { chromium } from "playwright-core";

const base = process.argv[2];
if (!base) {
  console.error("usage: node chat-page.mjs BASE_URL");
  process.exit(2);
}
const origin = new URL(base).origin;
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu"],
});
const fail = message => { throw new Error(message); };
try {
  const page = await browser.newPage();
  const foreign = [];
  page.on("request", r => { if (new URL(r.url()).origin !== origin) foreign.push(r.url()); });
  await page.goto(base + "/");
  await page.waitForFunction(() => document.getElementById("model").textContent !== "MiniCPM4");

  // A message: text shows while the reply is still streaming, then tokens per second are shown.
  await page.fill("#temperature", "0.8");
  await page.fill("#max-tokens", "150");
  await page.fill("#prompt", "Tell me a story.");
  await page.click("#send");
  const first = page.locator(".msg.assistant").first();
  await page.waitForFunction(() => {
    const reply = document.querySelector(".msg.assistant");
    return reply && reply.dataset.state === "streaming" && reply.textContent.length > 0;
  }, null, { timeout: 60000, polling: "raf" });
  const partial = (await first.textContent()).length;
  await page.waitForFunction(() => document.querySelector(".msg.assistant")?.dataset.state === "done",
    null, { timeout: 60000 });
  const reply = await first.textContent();
  const stats = await page.textContent("#stats");
  if (!reply || reply.length <= partial) fail(`the reply did not stream (${partial} then ${reply.length}; ${stats})`);
  if (!/\d+ tokens · [\d.]+ tok\/s/.test(stats)) fail(`no tokens per second shown: '${stats}'`);

  // A long answer, stopped while it streams: the page stops at once and can send again.
  await page.fill("#max-tokens", "1800");
  await page.fill("#prompt", "Write a very long essay.");
  await page.click("#send");
  const second = page.locator(".msg.assistant").nth(1);
  await page.waitForFunction(() => (document.querySelectorAll(".msg.assistant")[1]?.textContent || "").length > 20,
    null, { timeout: 60000 });
  if (await page.isDisabled("#stop")) fail("the stop button is disabled while streaming");
  await page.click("#stop");
  await page.waitForFunction(() => document.querySelectorAll(".msg.assistant")[1]?.dataset.state === "stopped",
    null, { timeout: 5000 });
  const stopped = (await second.textContent()).length;
  await page.waitForTimeout(500);
  if ((await second.textContent()).length !== stopped) fail("text kept arriving after stop");
  if (await page.isDisabled("#send")) fail("send stays disabled after stop");
  if (foreign.length) fail("the page loaded something from elsewhere: " + foreign.join(", "));
  console.log(`chat page OK: ${partial} then ${reply.length} characters; ${stats}; stopped at ${stopped}`);
} finally {
  await browser.close();
}
