// Test helpers: a real Debian `docker-registry` (distribution 2.8.2) on a free loopback port, and small test
// images built with umoci and pushed with skopeo. Everything lives in mkdtemp dirs removed by stop()/cleanup.

import { spawn, execFile, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { promisify } from "node:util";

const execFileP = promisify(execFile);

export interface TestRegistry {
  /** `127.0.0.1:<port>`, usable as the registry part of an image reference. */
  host: string;
  /** `http://127.0.0.1:<port>` */
  url: string;
  /** The registry's filesystem storage root (`docker/registry/v2/...` lives under it). */
  storageDir: string;
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

/** Starts a plain-HTTP registry on 127.0.0.1:<random port>; resolves once `GET /v2/` answers 200. */
export async function startRegistry(): Promise<TestRegistry> {
  const dir = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-registry-"));
  const storageDir = path.join(dir, "storage");
  await fsp.mkdir(storageDir);
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
    const url = `http://${host}`;
    const deadline = Date.now() + 15_000;
    let up = false;
    while (Date.now() < deadline && child.exitCode === null && child.signalCode === null) {
      const err = await Promise.race([spawnError, new Promise<undefined>((r) => setTimeout(() => r(undefined), 50))]);
      if (err) throw new Error(`could not start ${REGISTRY_BIN}: ${err.message}`);
      try {
        const res = await fetch(`${url}/v2/`);
        await res.arrayBuffer();
        if (res.status === 200) {
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
        await fsp.rm(dir, { recursive: true, force: true });
      };
      return { host, url, storageDir, stop };
    }
    child.kill("SIGKILL");
    await waitExit(child, 5000);
    lastError = stderr;
  }
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
  push(tag: string, dest: string, opts?: { format?: "oci" | "v2s2" }): Promise<void>;
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
      await run("umoci", ["config", "--image", image, "--os", "linux", "--architecture", spec.architecture ?? "amd64", "--config.cmd", "/bin/sh"]);
    },
    async push(tag, dest, opts = {}) {
      const args = ["--insecure-policy", "copy", "--quiet", "--dest-tls-verify=false"];
      if (opts.format === "v2s2") args.push("--format", "v2s2");
      args.push(`oci:${dir}:${tag}`, `docker://${dest}`);
      await run("skopeo", args);
    },
    async cleanup() {
      await fsp.rm(root, { recursive: true, force: true });
    },
  };
}
