import { test, describe, before, after, mock } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import * as fs from "node:fs";
import fsModule from "node:fs";
import { execFileSync } from "node:child_process";
import { syncBuiltinESMExports } from "node:module";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { walkContext, statContextFile, StatCache, hashedFileCount, type ContextEntry } from "../../src/context/walk.js";
import { PatternMatcher } from "../../src/ignore/pattern-matcher.js";
import { LocalPathError } from "../../src/errors.js";

const sha = (data: string | Uint8Array): string => "sha256:" + createHash("sha256").update(data).digest("hex");
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));
/** Longer than the stat cache's race window for fine-grained timestamps (50 ms). */
const SETTLE_MS = 120;

let scratch: string;
let counter = 0;

before(() => {
  scratch = fs.mkdtempSync(join(tmpdir(), "strata-walk-test-"));
});
after(() => {
  fs.rmSync(scratch, { recursive: true, force: true });
});

/** Creates a fresh directory with the given files ("dir/" entries are directories). */
function tree(spec: Record<string, string | null>): string {
  const root = join(scratch, `t${++counter}`);
  fs.mkdirSync(root);
  for (const [rel, content] of Object.entries(spec)) {
    const abs = join(root, rel);
    if (rel.endsWith("/")) {
      fs.mkdirSync(abs, { recursive: true });
    } else {
      fs.mkdirSync(join(abs, ".."), { recursive: true });
      fs.writeFileSync(abs, content ?? "");
    }
  }
  return root;
}

const paths = (entries: ContextEntry[]): string[] => entries.map((e) => e.relPath);
const byPath = (entries: ContextEntry[], rel: string): ContextEntry => {
  const e = entries.find((x) => x.relPath === rel);
  assert.ok(e, `no entry ${rel} in ${JSON.stringify(paths(entries))}`);
  return e;
};

describe("walkContext: listing", () => {
  test("lists files and directories (not the root), sorted bytewise", async () => {
    const root = tree({
      "b.txt": "b",
      "a-b": "dash",
      "a/z.txt": "z",
      "a/b/": null,
      "B": "upper",
      "é.txt": "accent",
      "z/": null,
      "\u{1F600}": "emoji",
      "\uFFFD": "replacement char sorts before the emoji in UTF-8, after it in UTF-16",
    });
    const entries = await walkContext(root);
    assert.deepEqual(paths(entries), ["B", "a", "a-b", "a/b", "a/z.txt", "b.txt", "z", "é.txt", "\uFFFD", "\u{1F600}"]);
    const bytewise = [...paths(entries)].sort((x, y) => Buffer.compare(Buffer.from(x), Buffer.from(y)));
    assert.deepEqual(paths(entries), bytewise);
  });

  test("entry fields for files and directories", async () => {
    const root = tree({ "dir/file.txt": "hello", "empty/": null });
    const entries = await walkContext(root);
    const file = byPath(entries, "dir/file.txt");
    assert.equal(file.type, "file");
    assert.equal(file.size, 5);
    assert.equal(file.sha256, sha("hello"));
    assert.equal(file.absPath, join(root, "dir", "file.txt"));
    assert.equal(file.linkTarget, undefined);
    assert.equal(file.uid, process.getuid!());
    assert.equal(file.gid, process.getgid!());
    for (const d of ["dir", "empty"]) {
      const e = byPath(entries, d);
      assert.equal(e.type, "dir");
      assert.equal(e.size, 0);
      assert.equal(e.sha256, "");
    }
    // The one timestamp an entry has is its mtime, which a copy keeps (never keyed: see src/keys).
    assert.deepEqual(
      Object.keys(file).filter((k) => /time/i.test(k)),
      ["mtimeMs"],
    );
    assert.equal(file.mtimeMs, fs.lstatSync(join(root, "dir", "file.txt")).mtimeMs);
    assert.equal(byPath(entries, "dir").mtimeMs, fs.lstatSync(join(root, "dir")).mtimeMs);
  });

  test("modes keep permission, setuid, setgid and sticky bits", async () => {
    const root = tree({ "x": "x", "suid": "s", "d/": null, "sticky/": null });
    fs.chmodSync(join(root, "x"), 0o640);
    fs.chmodSync(join(root, "suid"), 0o4755);
    fs.chmodSync(join(root, "d"), 0o2750);
    fs.chmodSync(join(root, "sticky"), 0o1777);
    const entries = await walkContext(root);
    assert.equal(byPath(entries, "x").mode, 0o640);
    assert.equal(byPath(entries, "suid").mode, 0o4755);
    assert.equal(byPath(entries, "d").mode, 0o2750);
    assert.equal(byPath(entries, "sticky").mode, 0o1777);
  });

  test("symlinks are listed, never followed", async () => {
    const outside = tree({ "secret/inner.txt": "outside the context" });
    const root = tree({ "real.txt": "real" });
    fs.symlinkSync("real.txt", join(root, "to-file"));
    fs.symlinkSync(join(outside, "secret"), join(root, "to-dir"));
    fs.symlinkSync("does/not/exist", join(root, "dangling"));
    fs.symlinkSync(".", join(root, "loop"));
    const entries = await walkContext(root);
    assert.deepEqual(paths(entries), ["dangling", "loop", "real.txt", "to-dir", "to-file"]);
    for (const [rel, target] of [
      ["to-file", "real.txt"],
      ["to-dir", join(outside, "secret")],
      ["dangling", "does/not/exist"],
      ["loop", "."],
    ] as const) {
      const e = byPath(entries, rel);
      assert.equal(e.type, "symlink");
      assert.equal(e.linkTarget, target);
      assert.equal(e.sha256, sha(target));
      assert.equal(e.size, 0);
    }
  });

  test("a big file (async chunked path) hashes like a small one", async () => {
    const big = Buffer.alloc(3 * 1024 * 1024 + 17);
    for (let i = 0; i < big.length; i++) big[i] = (i * 31) & 0xff;
    const root = tree({});
    fs.writeFileSync(join(root, "big.bin"), big);
    fs.writeFileSync(join(root, "edge.bin"), big.subarray(0, 64 * 1024));
    fs.writeFileSync(join(root, "edge1.bin"), big.subarray(0, 64 * 1024 + 1));
    const entries = await walkContext(root);
    assert.equal(byPath(entries, "big.bin").sha256, sha(big));
    assert.equal(byPath(entries, "big.bin").size, big.length);
    assert.equal(byPath(entries, "edge.bin").sha256, sha(big.subarray(0, 64 * 1024)));
    assert.equal(byPath(entries, "edge1.bin").sha256, sha(big.subarray(0, 64 * 1024 + 1)));
  });

  test("FIFOs are skipped (and do not hang the walk)", async (t) => {
    const root = tree({ "f.txt": "f" });
    try {
      execFileSync("mkfifo", [join(root, "pipe")]);
    } catch {
      t.skip("mkfifo not available");
      return;
    }
    assert.deepEqual(paths(await walkContext(root)), ["f.txt"]);
  });

  test("an empty root gives an empty list; a trailing slash on the root is fine", async () => {
    const root = tree({});
    assert.deepEqual(await walkContext(root), []);
    const root2 = tree({ a: "a" });
    assert.deepEqual(paths(await walkContext(root2 + "/")), ["a"]);
  });

  test("a relative root is resolved against the current directory", async () => {
    const root = tree({ "rel.txt": "r" });
    const entries = await walkContext(relative(process.cwd(), root));
    assert.equal(byPath(entries, "rel.txt").absPath, join(root, "rel.txt"));
  });
});

describe("walkContext: ignore patterns", () => {
  const spec = {
    "src/main.ts": "main",
    "src/debug.log": "log",
    "node_modules/pkg/index.js": "js",
    "node_modules/pkg/deep/x.js": "x",
    "build/out.o": "o",
    "build/keep.txt": "keep",
    "build/sub/other.o": "o",
    "README.md": "readme",
    "app.log": "log",
  };

  function spyReaddir(): { listed: string[]; restore: () => void } {
    const listed: string[] = [];
    const original = fs.promises.readdir;
    const m = mock.method(fs.promises, "readdir", (...args: Parameters<typeof original>) => {
      listed.push(String(args[0]));
      return original.apply(fs.promises, args);
    });
    return { listed, restore: () => m.mock.restore() };
  }

  test("ignored paths are skipped and ignored directories pruned", async () => {
    const root = tree(spec);
    const spy = spyReaddir();
    let entries: ContextEntry[];
    try {
      entries = await walkContext(root, { ignore: PatternMatcher.parse(["node_modules", "**/*.log", "build/"]) });
    } finally {
      spy.restore();
    }
    assert.deepEqual(paths(entries), ["README.md", "src", "src/main.ts"]);
    assert.ok(!spy.listed.some((d) => d.includes("node_modules") || d.includes("build")), spy.listed.join(","));
  });

  test("an exclusion re-includes a file under an ignored directory, which is then listed too", async () => {
    const root = tree(spec);
    const spy = spyReaddir();
    let entries: ContextEntry[];
    try {
      entries = await walkContext(root, {
        ignore: PatternMatcher.parse(["node_modules", "build", "!build/keep.txt"]),
      });
    } finally {
      spy.restore();
    }
    assert.deepEqual(paths(entries), [
      "README.md",
      "app.log",
      "build",
      "build/keep.txt",
      "src",
      "src/debug.log",
      "src/main.ts",
    ]);
    assert.equal(byPath(entries, "build").type, "dir");
    // build had to be looked into; node_modules could not hold anything re-included
    assert.ok(spy.listed.includes(join(root, "build")));
    assert.ok(!spy.listed.some((d) => d.includes("node_modules")), spy.listed.join(","));
  });

  test("an ignored directory with nothing re-included is not listed", async () => {
    const root = tree(spec);
    const entries = await walkContext(root, { ignore: PatternMatcher.parse(["build", "!build/absent.txt"]) });
    assert.ok(!paths(entries).some((p) => p.startsWith("build")));
  });

  test("ignore everything except src (a common allow-list)", async () => {
    const root = tree(spec);
    const entries = await walkContext(root, { ignore: PatternMatcher.parse(["*", "!src", "src/*.log"]) });
    assert.deepEqual(paths(entries), ["src", "src/main.ts"]);
  });

  test("re-include with ** descends wherever needed", async () => {
    const root = tree(spec);
    const entries = await walkContext(root, { ignore: PatternMatcher.parse(["**", "!**/*.js"]) });
    assert.deepEqual(paths(entries), [
      "node_modules",
      "node_modules/pkg",
      "node_modules/pkg/deep",
      "node_modules/pkg/deep/x.js",
      "node_modules/pkg/index.js",
    ]);
  });

  test("tonistiigi/fsutil TestWalkerExclude vector", async () => {
    const root = tree({ bar: "", "foo/bar2": "", foo2: "" });
    const entries = await walkContext(root, { ignore: PatternMatcher.parse(["foo*", "!foo/bar2"]) });
    assert.deepEqual(
      entries.map((e) => `${e.type} ${e.relPath}`),
      ["file bar", "dir foo", "file foo/bar2"],
    );
  });

  test("ignored unreadable paths are never touched", async () => {
    const root = tree({ "ok.txt": "ok" });
    execFileSync("mkfifo", [join(root, "pipe.log")]);
    const entries = await walkContext(root, { ignore: PatternMatcher.parse(["*.log"]) });
    assert.deepEqual(paths(entries), ["ok.txt"]);
  });
});

describe("walkContext: identity and the stat cache", () => {
  test("touching mtimes alone changes nothing in the entries but their mtimes", async () => {
    const root = tree({ "a.txt": "a", "d/b.txt": "b", "d/e/": null });
    fs.symlinkSync("a.txt", join(root, "link"));
    const cache = StatCache.inMemory();
    await sleep(SETTLE_MS);
    const before1 = await walkContext(root);
    const before2 = await walkContext(root, { statCache: cache });
    const later = new Date(Date.now() + 3_600_000);
    for (const rel of ["a.txt", "d/b.txt", "d", "d/e"]) fs.utimesSync(join(root, rel), later, later);
    fs.lutimesSync(join(root, "link"), later, later);
    const after1 = await walkContext(root);
    const after2 = await walkContext(root, { statCache: cache });
    const untimed = (es: ContextEntry[]) => es.map(({ mtimeMs: _, ...rest }) => rest);
    assert.deepEqual(untimed(after1), untimed(before1));
    assert.deepEqual(untimed(after2), untimed(before2));
    assert.deepEqual(before2, before1);
    assert.deepEqual(after2, after1);
    for (const e of after1) assert.ok(Math.abs(e.mtimeMs - later.getTime()) < 1, e.relPath);
  });

  test("unchanged files are not rehashed: hits come from the cache, also after save + load", async () => {
    const root = tree({ "a.txt": "aaa", "b/c.txt": "ccc", "b/d.txt": "ddd" });
    const cacheFile = join(scratch, `cache-${++counter}`, "stat-cache.json");
    await sleep(SETTLE_MS);

    const cache = await StatCache.load(cacheFile);
    let h = hashedFileCount();
    const first = await walkContext(root, { statCache: cache });
    assert.equal(hashedFileCount() - h, 3);
    assert.equal(cache.misses, 3);

    h = hashedFileCount();
    const second = await walkContext(root, { statCache: cache });
    assert.equal(hashedFileCount() - h, 0, "second walk hashes nothing");
    assert.equal(cache.hits, 3);
    assert.deepEqual(second, first);

    await cache.save();
    const reloaded = await StatCache.load(cacheFile);
    assert.equal(reloaded.size, 3);
    h = hashedFileCount();
    const third = await walkContext(root, { statCache: reloaded });
    assert.equal(hashedFileCount() - h, 0, "a reloaded cache hashes nothing");
    assert.equal(reloaded.hits, 3);
    assert.deepEqual(third, first);
  });

  test("same size, new content, different mtime: detected and rehashed", async () => {
    const root = tree({ "f.txt": "version-1", "g.txt": "same" });
    const cache = StatCache.inMemory();
    await sleep(SETTLE_MS);
    await walkContext(root, { statCache: cache });
    const f = join(root, "f.txt");
    const old = fs.statSync(f);
    fs.writeFileSync(f, "version-2");
    fs.utimesSync(f, old.atime, new Date(old.mtimeMs + 5000));
    await sleep(SETTLE_MS);
    const h = hashedFileCount();
    const entries = await walkContext(root, { statCache: cache });
    assert.equal(hashedFileCount() - h, 1, "only the changed file is rehashed");
    assert.equal(byPath(entries, "f.txt").sha256, sha("version-2"));
    assert.equal(byPath(entries, "g.txt").sha256, sha("same"));
  });

  test("same size, new content, mtime put back: ctime gives it away", async () => {
    const root = tree({ "f.txt": "version-1" });
    const f = join(root, "f.txt");
    const mtimeSec = 1_700_000_000; // whole seconds, so that putting it back is exact
    fs.utimesSync(f, mtimeSec, mtimeSec);
    const cache = StatCache.inMemory();
    await sleep(SETTLE_MS);
    await walkContext(root, { statCache: cache });
    assert.equal(cache.size, 1);
    const old = fs.statSync(f);
    await sleep(20);
    fs.writeFileSync(f, "version-2");
    fs.utimesSync(f, mtimeSec, mtimeSec);
    const now = fs.statSync(f);
    assert.equal(now.mtimeMs, old.mtimeMs);
    assert.equal(now.size, old.size);
    assert.notEqual(now.ctimeMs, old.ctimeMs);
    const entries = await walkContext(root, { statCache: cache });
    assert.equal(byPath(entries, "f.txt").sha256, sha("version-2"));
  });

  test("a file changed just before the walk is not cached (racily clean)", async () => {
    const root = tree({ "fresh.txt": "fresh" });
    // An mtime ahead of the walk's start stands in for "changed a moment ago" without timing luck.
    const soon = Date.now() / 1000 + 30;
    fs.utimesSync(join(root, "fresh.txt"), soon, soon);
    const cache = StatCache.inMemory();
    await walkContext(root, { statCache: cache });
    assert.equal(cache.size, 0, "too recent to trust its stat");
    const h = hashedFileCount();
    await walkContext(root, { statCache: cache });
    assert.equal(hashedFileCount() - h, 1);
  });

  test("StatCache.set/get: the race window and stat validation", () => {
    const cache = StatCache.inMemory();
    const st = { size: 3, mtimeMs: 1_700_000_000_123.456, ino: 42, ctimeMs: 1_700_000_000_123.456 };
    const digest = sha("abc");
    cache.set("/x", st, digest, st.mtimeMs + 10);
    assert.equal(cache.get("/x", st), undefined, "within 50 ms of the change: not kept");
    cache.set("/x", st, digest, st.mtimeMs + 60);
    assert.equal(cache.get("/x", st), digest);
    for (const k of ["size", "mtimeMs", "ino", "ctimeMs"] as const) {
      assert.equal(cache.get("/x", { ...st, [k]: st[k] + 1 }), undefined, `${k} change invalidates`);
    }
    assert.equal(cache.get("/y", st), undefined);
    // whole-second timestamps suggest a coarse filesystem: a 2 s window
    const coarse = { size: 3, mtimeMs: 1_700_000_000_000, ino: 7, ctimeMs: 1_700_000_000_000 };
    cache.set("/c", coarse, digest, coarse.mtimeMs + 1500);
    assert.equal(cache.get("/c", coarse), undefined);
    cache.set("/c", coarse, digest, coarse.mtimeMs + 2500);
    assert.equal(cache.get("/c", coarse), digest);
  });

  test("StatCache.load: missing or corrupt files give an empty cache; save is atomic", async () => {
    const dir = join(scratch, `cache-${++counter}`);
    const missing = await StatCache.load(join(dir, "nope.json"));
    assert.equal(missing.size, 0);
    await missing.save(); // nothing changed: nothing written
    assert.equal(fs.existsSync(join(dir, "nope.json")), false);

    fs.mkdirSync(dir, { recursive: true });
    const file = join(dir, "cache.json");
    for (const junk of [
      "{not json",
      "[]",
      '{"version":999,"entries":{}}',
      '{"version":1,"entries":{"/a":[1,2]}}',
      "",
    ]) {
      fs.writeFileSync(file, junk);
      assert.equal((await StatCache.load(file)).size, 0, junk);
    }

    const cache = await StatCache.load(file);
    const st = { size: 1, mtimeMs: 1000.5, ino: 1, ctimeMs: 1000.5 };
    cache.set("/p", st, sha("p"), 1_000_000);
    await cache.save();
    assert.deepEqual(fs.readdirSync(dir), ["cache.json"], "no temp files left behind");
    const loaded = await StatCache.load(file);
    assert.equal(loaded.get("/p", st), sha("p"));
    assert.equal(loaded.file, file);
  });

  test("a directory where the cache file should be does not break loading", async () => {
    const dir = join(scratch, `cache-${++counter}`);
    fs.mkdirSync(join(dir, "cache.json"), { recursive: true });
    assert.equal((await StatCache.load(join(dir, "cache.json"))).size, 0);
  });
});

describe("errors", () => {
  test("a missing root names the path and, when relative, what it was resolved against", async () => {
    await assert.rejects(walkContext("definitely/not/here-" + process.pid), (e: unknown) => {
      assert.ok(e instanceof LocalPathError);
      assert.equal(e.code, "LOCAL_PATH");
      assert.equal(e.path, "definitely/not/here-" + process.pid);
      assert.match(e.message, /does not exist/);
      assert.ok(e.message.includes(process.cwd()), e.message);
      return true;
    });
    const abs = join(scratch, "missing-abs");
    await assert.rejects(walkContext(abs), (e: unknown) => {
      assert.ok(e instanceof LocalPathError);
      assert.match(e.message, /does not exist/);
      assert.ok(!e.message.includes("resolved against"), e.message);
      return true;
    });
  });

  test("a root that is a file is an error", async () => {
    const root = tree({ "f.txt": "f" });
    await assert.rejects(walkContext(join(root, "f.txt")), (e: unknown) => {
      assert.ok(e instanceof LocalPathError);
      assert.match(e.message, /not a directory/);
      return true;
    });
  });

  test("an unreadable file is a LocalPathError naming it", async () => {
    const root = tree({ "ok.txt": "ok", "secret.txt": "s" });
    const secret = join(root, "secret.txt");
    const original = fs.readFileSync;
    // Running as root, chmod cannot make a file unreadable: fake the EACCES instead.
    const m = mock.method(fsModule, "readFileSync", (...args: Parameters<typeof original>) => {
      if (args[0] === secret) {
        throw Object.assign(new Error(`EACCES: permission denied, open '${secret}'`), { code: "EACCES" });
      }
      return original(...args);
    });
    syncBuiltinESMExports();
    try {
      await assert.rejects(walkContext(root), (e: unknown) => {
        assert.ok(e instanceof LocalPathError, String(e));
        assert.equal(e.path, secret);
        assert.match(e.message, /permission denied/);
        assert.match(e.message, /secret\.txt/);
        return true;
      });
      // ...unless it is ignored
      const entries = await walkContext(root, { ignore: PatternMatcher.parse(["secret.txt"]) });
      assert.deepEqual(paths(entries), ["ok.txt"]);
    } finally {
      m.mock.restore();
      syncBuiltinESMExports();
    }
  });

  test("an unreadable directory is a LocalPathError", async () => {
    const root = tree({ "locked/x": "x" });
    const locked = join(root, "locked");
    const original = fs.promises.readdir;
    const m = mock.method(fs.promises, "readdir", (...args: Parameters<typeof original>) => {
      if (args[0] === locked) {
        return Promise.reject(Object.assign(new Error("EACCES: permission denied"), { code: "EACCES" }));
      }
      return original.apply(fs.promises, args);
    });
    try {
      await assert.rejects(walkContext(root), (e: unknown) => {
        assert.ok(e instanceof LocalPathError);
        assert.equal(e.path, locked);
        assert.match(e.message, /permission denied/);
        return true;
      });
    } finally {
      m.mock.restore();
    }
  });
});

describe("statContextFile", () => {
  test("an entry named after the file", async () => {
    const root = tree({ "dir/tool.sh": "#!/bin/sh\necho hi\n" });
    const file = join(root, "dir", "tool.sh");
    fs.chmodSync(file, 0o755);
    const e = await statContextFile(file);
    assert.equal(e.relPath, "tool.sh");
    assert.equal(e.type, "file");
    assert.equal(e.mode, 0o755);
    assert.equal(e.size, 18);
    assert.equal(e.sha256, sha("#!/bin/sh\necho hi\n"));
    assert.equal(e.absPath, file);
  });

  test("uses the stat cache", async () => {
    const root = tree({ "f.txt": "cached" });
    const cache = StatCache.inMemory();
    await sleep(SETTLE_MS);
    const a = await statContextFile(join(root, "f.txt"), { statCache: cache });
    const h = hashedFileCount();
    const b = await statContextFile(join(root, "f.txt"), { statCache: cache });
    assert.equal(hashedFileCount() - h, 0);
    assert.deepEqual(b, a);
  });

  test("a symlink is followed", async () => {
    const root = tree({ "target.txt": "pointed-at" });
    fs.symlinkSync("target.txt", join(root, "link.txt"));
    const e = await statContextFile(join(root, "link.txt"));
    assert.equal(e.relPath, "link.txt");
    assert.equal(e.type, "file");
    assert.equal(e.sha256, sha("pointed-at"));
  });

  test("missing files and directories are LocalPathErrors", async () => {
    const root = tree({ "d/": null });
    await assert.rejects(statContextFile("no/such/file.txt"), (e: unknown) => {
      assert.ok(e instanceof LocalPathError);
      assert.match(e.message, /does not exist/);
      assert.ok(e.message.includes(process.cwd()), e.message);
      return true;
    });
    await assert.rejects(statContextFile(join(root, "d")), (e: unknown) => {
      assert.ok(e instanceof LocalPathError);
      assert.match(e.message, /is a directory/);
      return true;
    });
  });
});
