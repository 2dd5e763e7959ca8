// Opens a report page in Debian's headless Chromium, as an analyst's browser
// would from disk, and prints what loaded as one JSON object: errors
// (console, page, failed or network requests), the images with their
// natural sizes, headings, tables, links and text. Writes a screenshot.
// Usage: node check.mjs file:///path/index.html screenshot.png
import { open } from './chromium.mjs';

const [url, screenshot] = process.argv.slice(2);
const { browser, page, errors } = await open('file:');
await page.goto(url, { waitUntil: 'load' });
const result = await page.evaluate(() => ({
  title: document.title,
  h1: document.querySelector('h1')?.textContent ?? '',
  images: [...document.images].map((i) => ({ src: i.getAttribute('src'), alt: i.alt, width: i.naturalWidth, height: i.naturalHeight })),
  headings: [...document.querySelectorAll('h2')].map((h) => h.textContent),
  tables: document.querySelectorAll('table').length,
  links: [...document.querySelectorAll('a')].map((a) => a.getAttribute('href')),
  text: document.body.innerText,
}));
await page.screenshot({ path: screenshot, fullPage: true });
await browser.close();
console.log(JSON.stringify({ errors, ...result }));
