// Bundles src/upload.js and src/sha256-worker.js (with tus-js-client and hash-wasm) into
// ../static/dist/, minified, with linked sourcemaps, plus THIRD_PARTY_LICENSES.txt with the
// licence of every npm package inside. Run by scripts/build-assets (after npm ci).
import { readFile, readdir, rm, writeFile } from "node:fs/promises";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import * as esbuild from "esbuild";

const here = dirname(fileURLToPath(import.meta.url));
const outdir = join(here, "..", "static", "dist");

const common = {
  absWorkingDir: here,
  bundle: true,
  minify: true,
  sourcemap: "linked",
  target: ["es2020"],
  platform: "browser",
  outdir,
  metafile: true,
  logLevel: "warning",
  legalComments: "none", // the licences go to THIRD_PARTY_LICENSES.txt instead
};

await rm(outdir, { recursive: true, force: true });
const results = await Promise.all([
  // The page's script is an ES module (<script type="module">); it finds the worker beside
  // itself through import.meta.url.
  esbuild.build({ ...common, entryPoints: ["src/upload.js"], format: "esm" }),
  // The worker is a classic script, which every browser with workers can start.
  esbuild.build({ ...common, entryPoints: ["src/sha256-worker.js"], format: "iife" }),
]);

const packages = new Set();
for (const { metafile } of results) {
  for (const input of Object.keys(metafile.inputs)) {
    const match = input.match(/node_modules\/((?:@[^/]+\/)?[^/]+)\//);
    if (match) packages.add(match[1]);
  }
}
const notices = [];
for (const name of [...packages].sort()) {
  const dir = join(here, "node_modules", name);
  const { version, license } = JSON.parse(await readFile(join(dir, "package.json"), "utf8"));
  const file = (await readdir(dir)).find((f) => /^(licen[cs]e|copying)/i.test(f));
  const text = file ? await readFile(join(dir, file), "utf8") : `License: ${license}\n`;
  notices.push(`${name} ${version} (${license})\n\n${text.trim()}\n`);
}
await writeFile(
  join(outdir, "THIRD_PARTY_LICENSES.txt"),
  `The scripts in this folder bundle these npm packages.\n\n${notices.join(`\n${"-".repeat(72)}\n\n`)}`,
);
