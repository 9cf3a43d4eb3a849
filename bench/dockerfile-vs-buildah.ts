// Strata vs `buildah bud --layers` on a 26-instruction multi-stage Dockerfile: two independent build stages,
// COPY --from both, and a 2,000-file / 12 MiB context copied by the last stage. Scenarios: cold (empty caches),
// fully cached, and after editing one context file used by the last stage. Prints medians and strata/buildah ratios.
//
//   npx tsc -p tsconfig.json && node dist/bench/dockerfile-vs-buildah.js [--runs 3] [--files 2000] [--mb 12]
import { execFile } from "node:child_process";
import { promises as fsp } from "node:fs";
import os from "node:os";
import path from "node:path";
import { fileURLToPath } from "node:url";
import { prng } from "./content.js";

const HERE = path.dirname(fileURLToPath(import.meta.url));
const REPO = path.basename(path.dirname(HERE)) === "dist" ? path.resolve(HERE, "../..") : path.resolve(HERE, "..");
const STRATA = path.join(REPO, "bin", "strata.js");

const args = process.argv.slice(2);
const opt = (name: string, def: number) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? Number(args[i + 1]) : def;
};
const RUNS = opt("runs", 3);
const FILES = opt("files", 2000);
const MB = opt("mb", 12);

const DOCKERFILE = `FROM scratch AS base
COPY rootfs/ /
ENV LANG=C.UTF-8

FROM base AS gen1
WORKDIR /gen
RUN i=0; while [ $i -lt 20000 ]; do echo line$i; i=$((i+1)); done > /gen/a.txt
RUN wc -l /gen/a.txt > /gen/a.count
RUN sleep 1 && echo done1 > /gen/done1

FROM base AS gen2
WORKDIR /gen
RUN i=0; while [ $i -lt 20000 ]; do echo item$i; i=$((i+1)); done > /gen/b.txt
RUN wc -l /gen/b.txt > /gen/b.count
RUN sleep 1 && echo done2 > /gen/done2

FROM base AS final
ARG VERSION=1
LABEL version=$VERSION
WORKDIR /app
COPY --from=gen1 /gen/a.count /app/
COPY --from=gen2 /gen/b.count /app/
RUN echo built > /app/built
COPY ctx /app/ctx
RUN find /app/ctx -type f | wc -l > /app/count
ENV APP=1
EXPOSE 8080
CMD ["cat", "/app/count"]
`;

function run(
  cmd: string,
  argv: string[],
  env: NodeJS.ProcessEnv = process.env,
): Promise<{ seconds: number; stdout: string; stderr: string }> {
  const t = performance.now();
  return new Promise((resolve, reject) => {
    execFile(cmd, argv, { env, maxBuffer: 256 * 1024 * 1024 }, (err, stdout, stderr) => {
      if (err) reject(new Error(`${cmd} ${argv.join(" ")} failed: ${err.message}\n${stderr.slice(-2000)}`));
      else resolve({ seconds: (performance.now() - t) / 1000, stdout, stderr });
    });
  });
}

async function makeContext(dir: string): Promise<string[]> {
  const rnd = prng(0x5eed);
  const files: string[] = [];
  const avg = Math.floor((MB * 1024 * 1024) / FILES);
  for (let i = 0; i < FILES; i++) {
    const depth = Math.floor(rnd() * 4);
    const parts = Array.from({ length: depth }, () => `d${Math.floor(rnd() * 6)}`);
    const rel = path.join("ctx", ...parts, `f${i}.txt`);
    await fsp.mkdir(path.join(dir, path.dirname(rel)), { recursive: true });
    const size = Math.max(16, Math.floor(avg * (0.5 + rnd())));
    const buf = Buffer.alloc(size);
    for (let j = 0; j < size; j++) buf[j] = 97 + Math.floor(rnd() * 26);
    await fsp.writeFile(path.join(dir, rel), buf);
    files.push(rel);
  }
  const bin = path.join(dir, "rootfs", "bin");
  await fsp.mkdir(bin, { recursive: true });
  await fsp.copyFile("/bin/busybox", path.join(bin, "busybox"));
  await fsp.chmod(path.join(bin, "busybox"), 0o755);
  for (const a of ["sh", "echo", "cat", "wc", "find", "sleep", "ls", "mkdir"])
    await fsp.symlink("busybox", path.join(bin, a));
  await fsp.writeFile(path.join(dir, "Dockerfile"), DOCKERFILE);
  return files;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

async function main(): Promise<void> {
  const root = await fsp.mkdtemp(path.join(os.tmpdir(), "strata-dfbench-"));
  const ctx = path.join(root, "context");
  await fsp.mkdir(ctx);
  const files = await makeContext(ctx);
  const conf = path.join(root, "containers.conf");
  await fsp.writeFile(conf, "[containers]\ndefault_ulimits = []\n");
  const buildahEnv = { ...process.env, CONTAINERS_CONF: conf };
  const results: Record<string, { strata: number[]; buildah: number[] }> = {
    cold: { strata: [], buildah: [] },
    cached: { strata: [], buildah: [] },
    edit: { strata: [], buildah: [] },
  };
  try {
    for (let r = 0; r < RUNS; r++) {
      const home = path.join(root, `strata-${r}`);
      const bRoot = path.join(root, `buildah-${r}`);
      const strataEnv = { ...process.env, STRATA_HOME: home };
      const strata = () =>
        run(process.execPath, [STRATA, "build", "-f", path.join(ctx, "Dockerfile"), ctx, "--json"], strataEnv);
      const buildah = () =>
        run(
          "buildah",
          [
            "--root",
            path.join(bRoot, "root"),
            "--runroot",
            path.join(bRoot, "runroot"),
            "--storage-driver",
            "overlay",
            "bud",
            "--layers",
            "--runtime",
            "/usr/sbin/runc",
            "--network",
            "host",
            "-f",
            path.join(ctx, "Dockerfile"),
            "-t",
            "bench:latest",
            ctx,
          ],
          buildahEnv,
        );
      for (const [scenario, before] of [
        ["cold", async () => undefined],
        ["cached", async () => undefined],
        [
          "edit",
          async () => {
            const f = path.join(ctx, files[files.length - 1 - r]!);
            const data = await fsp.readFile(f);
            data[0] = data[0] === 122 ? 97 : data[0]! + 1;
            await fsp.writeFile(f, data);
          },
        ],
      ] as const) {
        await before();
        const s = await strata();
        const b = await buildah();
        results[scenario]!.strata.push(s.seconds);
        results[scenario]!.buildah.push(b.seconds);
        process.stderr.write(
          `[bench] run ${r + 1} ${scenario}: strata ${s.seconds.toFixed(2)} s, buildah ${b.seconds.toFixed(2)} s\n`,
        );
      }
      await run(
        "buildah",
        [
          "--root",
          path.join(bRoot, "root"),
          "--runroot",
          path.join(bRoot, "runroot"),
          "--storage-driver",
          "overlay",
          "rmi",
          "-a",
          "-f",
        ],
        buildahEnv,
      ).catch(() => undefined);
    }
  } finally {
    const mounts = (await fsp.readFile("/proc/self/mounts", "utf8"))
      .split("\n")
      .map((l) => l.split(" ")[1] ?? "")
      .filter((m) => m.startsWith(root));
    for (const m of mounts.sort().reverse()) await run("umount", ["-l", m]).catch(() => undefined);
    await fsp.rm(root, { recursive: true, force: true }).catch(() => undefined);
  }
  const targets: Record<string, number> = { cold: 0.8, cached: 0.3, edit: 0.5 };
  console.log(
    `# Strata vs buildah bud --layers — 26-instruction multi-stage Dockerfile, ${FILES} files / ${MB} MiB context, ${RUNS} runs, median`,
  );
  console.log("scenario  strata s  buildah s  strata/buildah  target  result");
  for (const [k, v] of Object.entries(results)) {
    const s = median(v.strata);
    const b = median(v.buildah);
    const ratio = s / b;
    console.log(
      `${k.padEnd(8)}  ${s.toFixed(3).padStart(8)}  ${b.toFixed(3).padStart(9)}  ${ratio.toFixed(2).padStart(13)}x  <=${targets[k]}x  ${ratio <= targets[k]! ? "PASS" : "MISS"}`,
    );
  }
}

main().catch((e: unknown) => {
  console.error(e);
  process.exit(1);
});
