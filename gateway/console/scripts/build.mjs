// Bundles the console with esbuild: src/main.ts -> dist/app.js and
// src/app.css -> dist/app.css (minified, with source maps), plus
// dist/index.html. The gateway serves index.html at `/` and the rest at
// `/console/<file>`.
//
// `node scripts/build.mjs --dev` instead watches the sources and serves the
// same layout from .dev/ at http://127.0.0.1:5173, calling the gateway at
// $SAFRA_GATEWAY_URL (default http://127.0.0.1:8080) across origins, which the
// gateway's default CORS origins allow.
import * as esbuild from "esbuild";
import { copyFile, mkdir, rm } from "node:fs/promises";

const dev = process.argv.includes("--dev");
const gateway = process.env.SAFRA_GATEWAY_URL ?? "http://127.0.0.1:8080";
const root = dev ? ".dev" : "dist";
const assets = dev ? `${root}/console` : root;

/** @type {import("esbuild").BuildOptions} */
const options = {
  entryPoints: [
    { in: "src/main.ts", out: "app" },
    { in: "src/app.css", out: "app" },
  ],
  outdir: assets,
  bundle: true,
  format: "esm",
  target: "es2022",
  minify: !dev,
  sourcemap: true,
  logLevel: dev ? "info" : "warning",
  // Empty: the page calls the origin it was loaded from.
  define: {
    SAFRA_API_BASE: JSON.stringify(dev ? gateway : ""),
  },
};

await rm(root, { recursive: true, force: true });
await mkdir(assets, { recursive: true });
await copyFile("src/index.html", `${root}/index.html`);

if (dev) {
  const ctx = await esbuild.context(options);
  await ctx.watch();
  const { hosts, port } = await ctx.serve({ servedir: root, host: "127.0.0.1", port: 5173 });
  console.log(`console: http://${hosts[0]}:${port}/ calling the gateway at ${gateway}`);
} else {
  const started = performance.now();
  await esbuild.build(options);
  console.log(`console: built ${root}/ in ${Math.round(performance.now() - started)} ms`);
}
