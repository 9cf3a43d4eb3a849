// Test helpers: a real Debian `docker-registry` (distribution 2.8.2) on a free loopback port, and small test
// images built with umoci and pushed with skopeo. Everything lives in mkdtemp dirs removed by stop()/cleanup.

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import https from "node:https";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";
import bcrypt from "bcryptjs";
import { startBlobOrigin, startTokenServer, type BlobOrigin, type TokenServer } from "./registry-auth.js";

const execFileP = promisify(execFile);

export interface StartRegistryOptions {
  /**
   * `htpasswd`: HTTP Basic against a bcrypt htpasswd file generated here. `token`: Bearer tokens from a local token
   * server (RS256 JWTs, self-signed certificate made with openssl). Default: no auth.
   */
  auth?: "htpasswd" | "token";
  /** name → password (default `{ alice: "alice-s3cret" }`). */
  users?: Record<string, string>;
  /** Token auth: users who may only pull. */
  readOnlyUsers?: readonly string[];
  /**
   * Loopback address of a second origin (e.g. "127.0.0.2"): blob GETs are answered with 307 redirects to it (the
   * registry's redirect middleware) and it refuses any request carrying Authorization, like S3.
   */
  redirectTo?: string;
  /** Serve HTTPS with this certificate and key (PEM files); `url` is then `https://…`. */
  tls?: { certFile: string; keyFile: string };
}

export interface TestRegistry {
  /** `127.0.0.1:<port>`, usable as the registry part of an image reference. */
  host: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The registry's filesystem storage root (`docker/registry/v2/...` lives under it). */
  storageDir: string;
  auth: "htpasswd" | "token" | undefined;
  users: Record<string, string>;
  /** The token server (token auth only). */
  tokenServer?: TokenServer;
  /** The second origin blobs are redirected to (`redirectTo` only). */
  blobOrigin?: BlobOrigin;
  /** `user:password` of the first user, for skopeo's --creds / --dest-creds. */
  creds: string | undefined;
  stop(): Promise<void>;
}

export const REGISTRY_BIN = "/usr/bin/docker-registry";

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on("error", reject);
    srv.listen(0, "127.0.0.1", () => {
      const addr = srv.address();
      const port = typeof addr === "object" && addr ? addr.port : 0;
      srv.close(() => resolve(port));
    });
  });
}

async function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return true;
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), ms);
    child.once("exit", () => {
      clearTimeout(t);
      resolve(true);
    });
  });
}

async function fetchStatus(url: string): Promise<number> {
  const res = await fetch(url);
  await res.arrayBuffer();
  return res.status;
}

/** The status of a GET over HTTPS without verifying the test certificate (only to see that the registry is up). */
function httpsStatus(url: string): Promise<number> {
  return new Promise((resolve, reject) => {
    https
      .get(url, { rejectUnauthorized: false }, (res) => {
        res.resume();
        resolve(res.statusCode ?? 0);
      })
      .on("error", reject);
  });
}

/**
 * Starts a plain-HTTP registry on 127.0.0.1:<random port> (with the auth / redirect variant asked for); resolves
 * once `GET /v2/` answers (200, or 401 with auth).
 */
export async function startRegistry(opts: StartRegistryOptions = {}): Promise<TestRegistry> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-registry-"));
  const storageDir = path.join(dir, "storage");
  await fsp.mkdir(storageDir);
  const users = opts.users ?? { alice: "alice-s3cret" };
  const extra: string[] = [];
  let tokenServer: TokenServer | undefined;
  let blobOrigin: BlobOrigin | undefined;
  const closeHelpers = async (): Promise<void> => {
    await tokenServer?.close();
    await blobOrigin?.close();
  };
  if (opts.auth === "htpasswd") {
    const file = path.join(dir, "htpasswd");
    await fsp.writeFile(
      file,
      Object.entries(users)
        .map(([u, p]) => `${u}:${bcrypt.hashSync(p, 6)}\n`)
        .join(""),
    );
    extra.push("auth:", "  htpasswd:", "    realm: strata-basic-realm", `    path: ${file}`);
  } else if (opts.auth === "token") {
    tokenServer = await startTokenServer(dir, { users, readOnlyUsers: opts.readOnlyUsers ?? [] });
    extra.push(
      "auth:",
      "  token:",
      `    realm: ${tokenServer.realm}`,
      `    service: ${tokenServer.service}`,
      `    issuer: ${tokenServer.issuer}`,
      `    rootcertbundle: ${tokenServer.certFile}`,
    );
  }
  if (opts.redirectTo) {
    blobOrigin = await startBlobOrigin(opts.redirectTo, storageDir);
    extra.push(
      "middleware:",
      "  storage:",
      "    - name: redirect",
      "      options:",
      `        baseurl: ${blobOrigin.url}`,
    );
  }
  let lastError = "";
  // The free port can be taken between probing and binding; try a few.
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const host = `127.0.0.1:${port}`;
    const config = [
      "version: 0.1",
      "log:",
      "  level: error",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${storageDir}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: ${host}`,
      "  secret: strata-test-secret",
      ...(opts.tls ? ["  tls:", `    certificate: ${opts.tls.certFile}`, `    key: ${opts.tls.keyFile}`] : []),
      ...extra,
      "",
    ].join("\n");
    const cfg = path.join(dir, "config.yml");
    await fsp.writeFile(cfg, config);
    const child = spawn(REGISTRY_BIN, ["serve", cfg], { stdio: ["ignore", "ignore", "pipe"] });
    let stderr = "";
    child.stderr?.on("data", (c: Buffer) => {
      stderr = (stderr + c.toString()).slice(-8192);
    });
    const spawnError = new Promise<Error>((resolve) => child.once("error", resolve));
    const url = `${opts.tls ? "https" : "http"}://${host}`;
    const deadline = Date.now() + 15_000;
    let up = false;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      const err = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
      if (err) throw new Error(`could not start ${REGISTRY_BIN}: ${err.message}`);
      try {
        const status = opts.tls ? await httpsStatus(`${url}/v2/`) : await fetchStatus(`${url}/v2/`);
        if (status === 200 || (opts.auth !== undefined && status === 401)) {
          up = true;
          break;
        }
      } catch {
        // not listening yet
      }
    }
    if (up) {
      const stop = async (): Promise<void> => {
        if (child.exitCode === null && child.signalCode === null) {
          child.kill("SIGTERM");
          if (!(await waitExit(child, 5000))) {
            child.kill("SIGKILL");
            await waitExit(child, 5000);
          }
        }
        await closeHelpers();
        await fsp.rm(dir, { recursive: true, force: true });
      };
      const first = Object.entries(users)[0];
      const creds = opts.auth && first ? `${first[0]}:${first[1]}` : undefined;
      return {
        host,
        url,
        storageDir,
        auth: opts.auth,
        users,
        ...(tokenServer ? { tokenServer } : {}),
        ...(blobOrigin ? { blobOrigin } : {}),
        creds,
        stop,
      };
    }
    child.kill("SIGKILL");
    await waitExit(child, 5000);
    lastError = stderr;
  }
  await closeHelpers();
  await fsp.rm(dir, { recursive: true, force: true });
  throw new Error(`docker-registry did not come up on a loopback port after 5 tries; last stderr:\n${lastError}`);
}

// ---------------------------------------------------------------------------------------------------------------
// Test images

async function run(cmd: string, args: string[]): Promise<string> {
  try {
    const { stdout } = await execFileP(cmd, args, { maxBuffer: 16 * 1024 * 1024 });
    return stdout;
  } catch (e) {
    const err = e as Error & { stderr?: string };
    throw new Error(`${cmd} ${args.join(" ")} failed: ${err.message}\n${err.stderr ?? ""}`);
  }
}

export interface TestImageSpec {
  /** One entry per layer: relative path → file content. */
  layers: Record<string, string>[];
  /** Image architecture in the config (default amd64). */
  architecture?: string;
}

/** An OCI image layout (made with umoci) holding images under tags. */
export interface TestLayout {
  dir: string;
  /** Builds `spec` under `tag` in the layout. */
  build(tag: string, spec: TestImageSpec): Promise<void>;
  /**
   * Pushes `tag` to `docker://<dest>` with skopeo (plain HTTP). `format: "v2s2"` converts to Docker media types.
   */
  push(tag: string, dest: string, opts?: { format?: "oci" | "v2s2"; creds?: string }): Promise<void>;
  cleanup(): Promise<void>;
}

export async function createTestLayout(): Promise<TestLayout> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-oci-"));
  const dir = path.join(root, "layout");
  await run("umoci", ["init", "--layout", dir]);
  return {
    dir,
    async build(tag, spec) {
      const image = `${dir}:${tag}`;
      await run("umoci", ["new", "--image", image]);
      for (const [i, files] of spec.layers.entries()) {
        const bundle = path.join(root, `bundle-${tag}-${i}`);
        await run("umoci", ["unpack", "--rootless", "--image", image, bundle]);
        for (const [rel, content] of Object.entries(files)) {
          const f = path.join(bundle, "rootfs", rel);
          await fsp.mkdir(path.dirname(f), { recursive: true });
          await fsp.writeFile(f, content);
        }
        await run("umoci", ["repack", "--image", image, bundle]);
        await fsp.rm(bundle, { recursive: true, force: true });
      }
      await run("umoci", [
        "config",
        "--image",
        image,
        "--os",
        "linux",
        "--architecture",
        spec.architecture ?? "amd64",
        "--config.cmd",
        "/bin/sh",
      ]);
    },
    async push(tag, dest, opts = {}) {
      const args = ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"];
      if (opts.format === "v2s2") args.push("--format", "v2s2");
      if (opts.creds) args.push("--dest-creds", opts.creds);
      args.push(`oci:${dir}:${tag}`, `docker://${dest}`);
      await run("skopeo", args);
    },
    async cleanup() {
      await fsp.rm(root, { recursive: true, force: true });
    },
  };
}
