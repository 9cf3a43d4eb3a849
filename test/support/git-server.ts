// Git servers on loopback for the git source tests: a `git daemon` (git://) and git's smart HTTP (`git http-backend`
// as a CGI behind a node HTTP server), both serving the bare repositories under one directory; plus a helper that makes
// a repository with commits, a tag and a branch.
import { execFile, spawn, type ChildProcess } from "node:child_process";
import { promises as fsp } from "node:fs";
import http from "node:http";
import net, { type AddressInfo } from "node:net";
import path from "node:path";
import { promisify } from "node:util";

const run = promisify(execFile);
const GIT_ENV = {
  ...process.env,
  GIT_CONFIG_NOSYSTEM: "1",
  GIT_CONFIG_GLOBAL: "/dev/null",
  GIT_AUTHOR_NAME: "t",
  GIT_AUTHOR_EMAIL: "t@example.invalid",
  GIT_COMMITTER_NAME: "t",
  GIT_COMMITTER_EMAIL: "t@example.invalid",
};

/** Runs git in `cwd` (no user or system config); returns stdout, trimmed. */
export async function git(cwd: string, ...args: string[]): Promise<string> {
  const r = await run("git", args, { cwd, env: GIT_ENV });
  return r.stdout.trim();
}

/** A working repository whose commits are pushed to a bare one under the servers' root as `<name>.git`. */
export interface TestRepo {
  work: string;
  bare: string;
  /** Writes files (mode 0755 for names ending in .sh), commits them on the current branch, pushes; returns the commit. */
  commit(files: Record<string, string>, message?: string): Promise<string>;
}

export async function makeRepo(root: string, name: string): Promise<TestRepo> {
  const work = path.join(root, `${name}-work`);
  const bare = path.join(root, "repos", `${name}.git`);
  await fsp.mkdir(work, { recursive: true });
  await fsp.mkdir(path.dirname(bare), { recursive: true });
  await git(work, "init", "-q", "-b", "main");
  await git(path.dirname(bare), "init", "-q", "--bare", bare);
  await git(work, "remote", "add", "origin", bare);
  return {
    work,
    bare,
    async commit(files, message = "c") {
      for (const [p, c] of Object.entries(files)) {
        await fsp.mkdir(path.dirname(path.join(work, p)), { recursive: true });
        await fsp.writeFile(path.join(work, p), c, { mode: p.endsWith(".sh") ? 0o755 : 0o644 });
        await fsp.chmod(path.join(work, p), p.endsWith(".sh") ? 0o755 : 0o644);
      }
      await git(work, "add", "-A");
      await git(work, "commit", "-q", "-m", message);
      await git(work, "push", "-q", "--all", "--force", "origin");
      await git(work, "push", "-q", "--tags", "--force", "origin");
      return git(work, "rev-parse", "HEAD");
    },
  };
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, "127.0.0.1", r));
  const port = (s.address() as AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

/** `git daemon` serving `<root>/repos` on 127.0.0.1; `url(name)` is `git://127.0.0.1:<port>/<name>.git`. */
export async function startGitDaemon(root: string): Promise<{ url(name: string): string; stop(): Promise<void> }> {
  const base = path.join(root, "repos");
  let lastError = "";
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const child: ChildProcess = spawn(
      "git",
      ["daemon", "--reuseaddr", "--export-all", `--base-path=${base}`, "--listen=127.0.0.1", `--port=${port}`, base],
      { env: GIT_ENV, stdio: ["ignore", "ignore", "pipe"] },
    );
    let stderr = "";
    child.stderr!.on("data", (d: Buffer) => (stderr += d.toString()));
    const ready = await waitForPort(port, child);
    if (ready) {
      return {
        url: (name) => `git://127.0.0.1:${port}/${name}.git`,
        async stop() {
          child.kill();
          await new Promise((r) => child.once("exit", r));
        },
      };
    }
    child.kill();
    lastError = stderr;
  }
  throw new Error(`git daemon did not start: ${lastError}`);
}

async function waitForPort(port: number, child: ChildProcess): Promise<boolean> {
  for (let i = 0; i < 100; i++) {
    if (child.exitCode !== null) return false;
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, "127.0.0.1", () => {
        s.end();
        resolve(true);
      });
      s.on("error", () => resolve(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

/**
 * Git's smart HTTP on 127.0.0.1:<port>: `git http-backend` run as a CGI per request, serving `<root>/repos`.
 * `url(name)` is `http://127.0.0.1:<port>/<name>.git`; `requests` counts what was asked.
 */
export async function startGitHttp(
  root: string,
): Promise<{ url(name: string): string; requests: string[]; stop(): Promise<void> }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    const u = new URL(req.url ?? "/", "http://x");
    requests.push(`${req.method} ${u.pathname}${u.search}`);
    const cgi = spawn("git", ["http-backend"], {
      env: {
        ...GIT_ENV,
        GIT_PROJECT_ROOT: path.join(root, "repos"),
        GIT_HTTP_EXPORT_ALL: "1",
        PATH_INFO: decodeURIComponent(u.pathname),
        QUERY_STRING: u.search.replace(/^\?/, ""),
        REQUEST_METHOD: req.method ?? "GET",
        CONTENT_TYPE: req.headers["content-type"] ?? "",
        HTTP_CONTENT_ENCODING: String(req.headers["content-encoding"] ?? ""),
        GIT_PROTOCOL: String(req.headers["git-protocol"] ?? ""),
        REMOTE_ADDR: "127.0.0.1",
      },
      stdio: ["pipe", "pipe", "ignore"],
    });
    req.pipe(cgi.stdin);
    let head = Buffer.alloc(0);
    let headersDone = false;
    cgi.stdout.on("data", (chunk: Buffer) => {
      if (headersDone) {
        res.write(chunk);
        return;
      }
      head = Buffer.concat([head, chunk]);
      const end = head.indexOf("\r\n\r\n");
      if (end < 0) return;
      headersDone = true;
      let status = 200;
      for (const line of head.subarray(0, end).toString().split("\r\n")) {
        const i = line.indexOf(":");
        const k = line.slice(0, i).trim();
        const v = line.slice(i + 1).trim();
        if (k.toLowerCase() === "status") status = Number(v.split(" ")[0]);
        else res.setHeader(k, v);
      }
      res.writeHead(status);
      res.write(head.subarray(end + 4));
    });
    cgi.on("close", () => {
      if (!headersDone) res.writeHead(500);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  const port = (server.address() as AddressInfo).port;
  return {
    url: (name) => `http://127.0.0.1:${port}/${name}.git`,
    requests,
    stop: () => new Promise<void>((r) => server.close(() => r())),
  };
}
