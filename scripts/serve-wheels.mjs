#!/usr/bin/env node
// A minimal PEP 503 "simple" package index serving the test wheels in
// fixtures/wheels/packages/. Plain JavaScript (no build step) so CI and tests
// can use it directly.
//
//   node scripts/serve-wheels.mjs [--port N] [--host 127.0.0.1] [--dir PATH] [--verbose]
//
// Routes (all generated on the fly from the directory listing):
//   /simple/               list of projects
//   /simple/<name>/        anchors to /packages/<file>#sha256=<hex>
//   /simple/<name>         301 -> /simple/<normalized-name>/
//   /packages/<file>       the file itself
//
// Once listening it prints exactly one line on stdout:
//   WHEELS_URL=http://127.0.0.1:<port>/simple
// and runs until SIGTERM/SIGINT. --port 0 (the default) picks a free port.
//
// Library use: import { startWheelIndex } from "./serve-wheels.mjs";
//   const idx = await startWheelIndex({ host: "127.0.0.1", port: 0 });
//   idx.url  // "http://127.0.0.1:12345/simple"
//   await idx.close();

import { createHash } from "node:crypto";
import { createReadStream, realpathSync } from "node:fs";
import { readdir, readFile, stat } from "node:fs/promises";
import { createServer } from "node:http";
import path from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";

const HERE = path.dirname(fileURLToPath(import.meta.url));
/** Default directory holding the distribution files. */
export const DEFAULT_PACKAGES_DIR = path.resolve(HERE, "..", "fixtures", "wheels", "packages");

const DIST_SUFFIXES = [".whl", ".tar.gz", ".zip", ".tar.bz2"];

/**
 * PEP 503 name normalization.
 * @param {string} name
 * @returns {string}
 */
export function normalizeName(name) {
  return name.replace(/[-_.]+/g, "-").toLowerCase();
}

/**
 * Project name from a distribution filename, or null if it is not one.
 * Wheels: {name}-{version}(-{build})?-{py}-{abi}-{plat}.whl, name uses "_".
 * Sdists: {name}-{version}.tar.gz (the version is after the last "-").
 * @param {string} filename
 * @returns {string | null}
 */
export function projectOfFile(filename) {
  const suffix = DIST_SUFFIXES.find((s) => filename.endsWith(s));
  if (!suffix) return null;
  const stem = filename.slice(0, -suffix.length);
  if (suffix === ".whl") {
    const parts = stem.split("-");
    if (parts.length < 5 || !parts[0]) return null;
    return parts[0];
  }
  const dash = stem.lastIndexOf("-");
  if (dash <= 0) return null;
  return stem.slice(0, dash);
}

/** @param {string} s */
function escapeHtml(s) {
  return s.replace(/&/g, "&amp;").replace(/</g, "&lt;").replace(/>/g, "&gt;").replace(/"/g, "&quot;");
}

/**
 * @param {string} title
 * @param {string[]} anchors pre-rendered <a> elements
 */
function page(title, anchors) {
  return (
    "<!DOCTYPE html>\n<html>\n<head>\n" +
    '<meta name="pypi:repository-version" content="1.0">\n' +
    `<title>${escapeHtml(title)}</title>\n</head>\n<body>\n` +
    `<h1>${escapeHtml(title)}</h1>\n` +
    anchors.map((a) => a + "<br>\n").join("") +
    "</body>\n</html>\n"
  );
}

/**
 * @typedef {{ file: string, project: string, normalized: string, sha256: string, size: number }} DistFile
 */

/**
 * Lists distribution files in `dir`, hashing each (cached by size+mtime).
 * @param {string} dir
 * @param {Map<string, { key: string, sha256: string }>} cache
 * @returns {Promise<DistFile[]>}
 */
async function listDists(dir, cache) {
  const names = (await readdir(dir)).sort();
  /** @type {DistFile[]} */
  const out = [];
  for (const file of names) {
    const project = projectOfFile(file);
    if (project === null) continue;
    const full = path.join(dir, file);
    let st;
    try {
      st = await stat(full);
    } catch {
      continue; // removed between readdir and stat
    }
    if (!st.isFile()) continue;
    const key = `${st.size}:${st.mtimeMs}`;
    let hit = cache.get(file);
    if (!hit || hit.key !== key) {
      const sha256 = createHash("sha256")
        .update(await readFile(full))
        .digest("hex");
      hit = { key, sha256 };
      cache.set(file, hit);
    }
    out.push({ file, project, normalized: normalizeName(project), sha256: hit.sha256, size: st.size });
  }
  return out;
}

/**
 * @param {import("node:http").ServerResponse} res
 * @param {number} status
 * @param {string} body
 * @param {Record<string, string>} [headers]
 * @param {boolean} [headOnly]
 */
function send(res, status, body, headers = {}, headOnly = false) {
  const buf = Buffer.from(body, "utf8");
  res.writeHead(status, {
    "Content-Type": "text/plain; charset=utf-8",
    "Content-Length": String(buf.length),
    "Cache-Control": "no-store",
    ...headers,
  });
  res.end(headOnly ? undefined : buf);
}

/**
 * @param {string} dir
 * @param {boolean} verbose
 * @returns {import("node:http").RequestListener}
 */
function makeHandler(dir, verbose) {
  /** @type {Map<string, { key: string, sha256: string }>} */
  const cache = new Map();
  const html = { "Content-Type": "text/html; charset=utf-8" };

  return (req, res) => {
    const method = req.method ?? "GET";
    const headOnly = method === "HEAD";
    if (verbose) process.stderr.write(`serve-wheels: ${method} ${req.url ?? ""}\n`);
    if (method !== "GET" && method !== "HEAD") {
      send(res, 405, "method not allowed\n", { Allow: "GET, HEAD" });
      return;
    }
    let pathname;
    try {
      pathname = decodeURIComponent(new URL(req.url ?? "/", "http://localhost").pathname);
    } catch {
      send(res, 400, "bad request\n", {}, headOnly);
      return;
    }

    void (async () => {
      if (pathname === "/" || pathname === "/simple") {
        send(res, 301, "", { Location: "/simple/" }, headOnly);
        return;
      }
      if (pathname === "/simple/") {
        const dists = await listDists(dir, cache);
        const projects = [...new Set(dists.map((d) => d.normalized))].sort();
        const anchors = projects.map((p) => `<a href="/simple/${escapeHtml(p)}/">${escapeHtml(p)}</a>`);
        send(res, 200, page("Simple index", anchors), html, headOnly);
        return;
      }
      const simple = /^\/simple\/([^/]+)(\/?)$/.exec(pathname);
      if (simple) {
        const requested = simple[1] ?? "";
        const normalized = normalizeName(requested);
        if (simple[2] !== "/" || requested !== normalized) {
          send(res, 301, "", { Location: `/simple/${encodeURIComponent(normalized)}/` }, headOnly);
          return;
        }
        const dists = (await listDists(dir, cache)).filter((d) => d.normalized === normalized);
        if (dists.length === 0) {
          send(res, 404, `project not found: ${requested}\n`, {}, headOnly);
          return;
        }
        const anchors = dists.map(
          (d) =>
            `<a href="/packages/${escapeHtml(encodeURIComponent(d.file))}#sha256=${d.sha256}">${escapeHtml(d.file)}</a>`,
        );
        send(res, 200, page(`Links for ${normalized}`, anchors), html, headOnly);
        return;
      }
      const pkg = /^\/packages\/([^/]+)$/.exec(pathname);
      if (pkg) {
        const file = pkg[1] ?? "";
        // Only serve names that appear in the listing: no path traversal.
        const dist = (await listDists(dir, cache)).find((d) => d.file === file);
        if (!dist) {
          send(res, 404, `file not found: ${file}\n`, {}, headOnly);
          return;
        }
        res.writeHead(200, {
          "Content-Type":
            file.endsWith(".whl") || file.endsWith(".zip") ? "application/zip" : "application/octet-stream",
          "Content-Length": String(dist.size),
          "Cache-Control": "no-store",
        });
        if (headOnly) {
          res.end();
          return;
        }
        const stream = createReadStream(path.join(dir, file));
        stream.on("error", () => res.destroy());
        stream.pipe(res);
        return;
      }
      send(res, 404, "not found\n", {}, headOnly);
    })().catch((err) => {
      process.stderr.write(`serve-wheels: error handling ${pathname}: ${String(err)}\n`);
      if (!res.headersSent) send(res, 500, "internal error\n", {}, headOnly);
      else res.destroy();
    });
  };
}

/**
 * Starts the index. Resolves once listening.
 * @param {{ host?: string, port?: number, dir?: string, verbose?: boolean }} [options]
 * @returns {Promise<{ url: string, host: string, port: number, close(): Promise<void> }>}
 */
export async function startWheelIndex(options = {}) {
  const host = options.host ?? "127.0.0.1";
  const port = options.port ?? 0;
  const dir = options.dir ?? DEFAULT_PACKAGES_DIR;
  const server = createServer(makeHandler(dir, options.verbose ?? false));
  await new Promise((resolve, reject) => {
    server.once("error", reject);
    server.listen(port, host, () => {
      server.off("error", reject);
      resolve(undefined);
    });
  });
  const addr = server.address();
  if (addr === null || typeof addr === "string") throw new Error("serve-wheels: unexpected server address");
  const urlHost = addr.family === "IPv6" || addr.address.includes(":") ? `[${addr.address}]` : addr.address;
  let closing;
  return {
    url: `http://${urlHost}:${addr.port}/simple`,
    host: addr.address,
    port: addr.port,
    close() {
      closing ??= new Promise((resolve, reject) => {
        server.close((err) => (err ? reject(err) : resolve(undefined)));
        server.closeAllConnections();
      });
      return closing;
    },
  };
}

/** @param {string[]} argv */
function parseArgs(argv) {
  const opts = { host: "127.0.0.1", port: 0, dir: DEFAULT_PACKAGES_DIR, verbose: false };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i] ?? "";
    const [flag, inline] =
      arg.startsWith("--") && arg.includes("=")
        ? [arg.slice(0, arg.indexOf("=")), arg.slice(arg.indexOf("=") + 1)]
        : [arg, undefined];
    const value = () => {
      const v = inline ?? argv[++i];
      if (v === undefined) throw new Error(`${flag} needs a value`);
      return v;
    };
    switch (flag) {
      case "--port": {
        const v = value();
        const n = Number(v);
        if (!/^\d+$/.test(v) || n > 65535) throw new Error(`invalid --port: ${v}`);
        opts.port = n;
        break;
      }
      case "--host":
        opts.host = value();
        break;
      case "--dir":
        opts.dir = path.resolve(value());
        break;
      case "--verbose":
      case "-v":
        opts.verbose = true;
        break;
      case "--help":
      case "-h":
        process.stderr.write(
          "usage: node scripts/serve-wheels.mjs [--port N] [--host 127.0.0.1] [--dir PATH] [--verbose]\n",
        );
        process.exit(0);
        break;
      default:
        throw new Error(`unknown argument: ${arg}`);
    }
  }
  return opts;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (err) {
    process.stderr.write(`serve-wheels: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exit(2);
  }
  const index = await startWheelIndex(opts);
  process.stdout.write(`WHEELS_URL=${index.url}\n`);
  const shutdown = () => {
    index.close().then(
      () => process.exit(0),
      () => process.exit(0),
    );
  };
  process.once("SIGTERM", shutdown);
  process.once("SIGINT", shutdown);
}

function isMain() {
  const entry = process.argv[1];
  if (!entry) return false;
  try {
    return pathToFileURL(realpathSync(entry)).href === pathToFileURL(realpathSync(fileURLToPath(import.meta.url))).href;
  } catch {
    return false;
  }
}

if (isMain()) {
  main().catch((err) => {
    process.stderr.write(`serve-wheels: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
