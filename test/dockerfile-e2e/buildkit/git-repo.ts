// Git repositories for the ports of BuildKit's git tests: BuildKit makes a repository in a temp dir and serves its
// `.git` over HTTP; here a working repository pushes to a bare one that git's smart HTTP serves on loopback
// (test/support/git-server.ts), in the object format the test asks for (sha1 or sha256).
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { git, startGitHttp } from "../../support/git-server.js";

export interface BkGitRepo {
  /** The working repository (`git` runs here). */
  work: string;
  /** Its URL over HTTP (`http://127.0.0.1:<port>/<name>.git`). */
  url: string;
  /** Writes files (relative path → content, mode 0644). */
  write(files: Record<string, string>): Promise<void>;
  /** Runs git in the working repository; returns stdout, trimmed. */
  git(...args: string[]): Promise<string>;
  /** Pushes every branch and tag to the served repository. */
  push(): Promise<void>;
}

/** A git server on loopback serving repositories made with `repo()`; `stop()` removes them. */
export async function gitServer() {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-bk-git-"));
  const http = await startGitHttp(root);
  let n = 0;
  return {
    async repo(format: "sha1" | "sha256" = "sha1"): Promise<BkGitRepo> {
      const name = `r${n++}`;
      const work = path.join(root, `${name}-work`);
      const bare = path.join(root, "repos", `${name}.git`);
      await fsp.mkdir(work, { recursive: true });
      await fsp.mkdir(bare, { recursive: true });
      await git(work, "init", "-q", "-b", "master", `--object-format=${format}`);
      await git(bare, "init", "-q", "--bare", `--object-format=${format}`);
      await git(work, "remote", "add", "origin", bare);
      return {
        work,
        url: http.url(name),
        async write(files) {
          for (const [p, c] of Object.entries(files)) {
            await fsp.mkdir(path.dirname(path.join(work, p)), { recursive: true });
            await fsp.writeFile(path.join(work, p), c);
          }
        },
        git: (...args) => git(work, ...args),
        async push() {
          await git(work, "push", "-q", "--all", "--force", "origin");
          await git(work, "push", "-q", "--tags", "--force", "origin");
        },
      };
    },
    async stop(): Promise<void> {
      await http.stop();
      await fsp.rm(root, { recursive: true, force: true });
    },
  };
}
