// Drives `rogue serve` in Debian's headless Chromium as an analyst would:
// log in, read the findings, open a host, reject it, accept a suggestion,
// acknowledge a finding, add and remove a whitelist entry, read the
// history. Prints what each page showed as one JSON object, with every
// error (console, page, failed request, or any request off the server).
// Writes screenshots into the directory given.
// Usage: node console.mjs http://127.0.0.1:PORT USER PASSWORD SCREENSHOT_DIR
import { open } from './chromium.mjs';

const [base, user, password, shots] = process.argv.slice(2);
const { browser, page, errors } = await open(base + '/');

// Submits the form `form` (a locator) by its button and waits for the page it leads to.
async function submit(form) {
  await Promise.all([page.waitForNavigation(), form.locator('button').click()]);
  return { path: new URL(page.url()).pathname, notice: await text('.notice') };
}
async function text(selector) {
  const found = page.locator(selector);
  return (await found.count()) ? (await found.first().innerText()).trim() : null;
}
async function rows(selector) {
  return page.$$eval(`${selector} tr`, (trs) => trs.map((tr) => [...tr.cells].map((c) => c.innerText.trim())));
}

const result = {};
await page.goto(`${base}/`);
result.login_path = new URL(page.url()).pathname;
await page.fill('input[name=name]', user);
await page.fill('input[name=password]', password);
result.after_login = await submit(page.locator('form[action="/login"]'));
result.findings = { title: await page.title(), rows: await rows('#findings tbody') };
await page.screenshot({ path: `${shots}/findings.png`, fullPage: true });

await Promise.all([page.waitForNavigation(), page.locator('#findings a[href^="/host/192.0.2.60?"]').first().click()]);
result.host = {
  path: new URL(page.url()).pathname,
  h1: await text('h1'),
  advice: await text('#advice'),
  headings: await page.$$eval('h2', (hs) => hs.map((h) => h.textContent)),
  inline_svgs: await page.locator('figure svg').count(),
  images: await page.locator('img').count(),
};
await page.screenshot({ path: `${shots}/host.png`, fullPage: true });
await page.emulateMedia({ media: 'print' });
result.host.printed_forms = await page.$$eval('form', (fs) => fs.filter((f) => f.getClientRects().length > 0).length);
await page.pdf({ path: `${shots}/host.pdf` });
await page.emulateMedia({ media: 'screen' });

const reject = page.locator('form[action="/act/reject"]');
await reject.locator('input[name=reason]').fill('sends spam, ticket 42');
result.rejected = await submit(reject);
result.rejected.history = await rows('#whitelist table');

await page.goto(`${base}/suggestions`);
result.suggested = (await rows('table')).slice(1).map((r) => r[0]);
const accept = page.locator('tr', { hasText: '192.0.2.77' }).locator('form[action="/act/accept"]');
await accept.locator('input[name=reason]').fill('the lab relay, ticket 7');
result.accepted = await submit(accept);

await page.goto(`${base}/`);
const first = page.locator('#findings tbody input[type=checkbox]').first();
result.acknowledged_id = await first.getAttribute('value');
await first.check();
await page.fill('#ack input[name=reason]', 'seen, ticket 9');
result.acknowledged = await submit(page.locator('#ack'));
result.open_after = (await rows('#findings tbody')).length;

await page.goto(`${base}/whitelist`);
const add = page.locator('form[action="/act/whitelist-add"]');
await add.locator('input[name=address]').fill('192.0.2.99');
await add.locator('input[name=name]').fill('relay-test');
await add.locator('input[name=reason]').fill('test relay, ticket 11');
result.added = await submit(add);
result.added.entries = (await rows('table')).slice(1).map((r) => r.slice(0, 6));
const remove = page.locator('tr', { hasText: '192.0.2.99' }).locator('form[action="/act/whitelist-remove"]');
await remove.locator('input[name=reason]').fill('test over');
result.removed = await submit(remove);

await page.goto(`${base}/history`);
result.history = (await rows('table')).slice(1);
await page.screenshot({ path: `${shots}/history.png`, fullPage: true });

await browser.close();
console.log(JSON.stringify({ errors, ...result }));
