// Debian's headless Chromium with a page that records every error: the
// console's and the page's, failed requests, and any request whose URL
// does not start with `allowed` (nothing may come from the network).
import { chromium } from 'playwright-core';

export async function open(allowed) {
  const browser = await chromium.launch({
    executablePath: '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
           '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage({ viewport: { width: 1300, height: 900 } });
  const errors = [];
  page.on('console', (m) => { if (m.type() === 'error') errors.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => errors.push(`page: ${e.message}`));
  page.on('requestfailed', (r) => errors.push(`request failed: ${r.url()} ${r.failure()?.errorText}`));
  page.on('request', (r) => { if (!r.url().startsWith(allowed)) errors.push(`request elsewhere: ${r.url()}`); });
  return { browser, page, errors };
}
