/**
 * Loads an image definition file (TypeScript or JavaScript). TypeScript is bundled with esbuild into one ES module
 * whose `strata` import points at this package, cached under STRATA_HOME/defs by the content of every input file,
 * so a cached build never loads esbuild at all.
 */
import { createHash } from "node:crypto";
import { promises as fsp } from "node:fs";
import path from "node:path";
import { pathToFileURL, fileURLToPath } from "node:url";
import { DefinitionLoadError, StrataError } from "../errors.js";
import type { Image } from "../sdk/image.js";
import { writeFileAtomic } from "../util/fs.js";

interface CacheManifest {
  inputs: { path: string; sha256: string }[];
  output: string;
}

const sha = (data: string | Buffer) => createHash("sha256").update(data).digest("hex");

async function hashFile(p: string): Promise<string | undefined> {
  try {
    return sha(await fsp.readFile(p));
  } catch {
    return undefined;
  }
}

function sdkEntry(): string {
  // dist/src/load/definition.js → dist/src/index.js
  return fileURLToPath(new URL("../index.js", import.meta.url));
}

/** Transpiles (or reuses) the definition and returns the path of a loadable ES module. */
export async function compileDefinition(file: string, cacheDir: string): Promise<string> {
  const abs = path.resolve(file);
  const source = await fsp.readFile(abs).catch((e: NodeJS.ErrnoException) => {
    throw new DefinitionLoadError(file, e.code === "ENOENT" ? "file does not exist" : e.message, { cause: e });
  });
  if (/\.(mjs|js)$/.test(abs) && !source.includes('from "strata"') && !source.includes("from 'strata'")) return abs;
  const entryHash = sha(Buffer.concat([Buffer.from(abs + "\0" + sdkEntry() + "\0"), source]));
  const manifestFile = path.join(cacheDir, `${entryHash}.json`);
  const manifest = await fsp.readFile(manifestFile, "utf8").then(
    (t) => JSON.parse(t) as CacheManifest,
    () => undefined,
  );
  if (manifest) {
    let fresh = true;
    for (const i of manifest.inputs) {
      if ((await hashFile(i.path)) !== i.sha256) {
        fresh = false;
        break;
      }
    }
    if (
      fresh &&
      (await fsp.access(manifest.output).then(
        () => true,
        () => false,
      ))
    )
      return manifest.output;
  }
  const esbuild = await import("esbuild");
  let result;
  try {
    result = await esbuild.build({
      entryPoints: [abs],
      bundle: true,
      format: "esm",
      platform: "node",
      target: "node20",
      write: false,
      metafile: true,
      packages: "external",
      logLevel: "silent",
      sourcemap: "inline",
      sourcesContent: false,
      plugins: [
        {
          name: "strata-self",
          setup(b) {
            b.onResolve({ filter: /^strata$/ }, () => ({ path: pathToFileURL(sdkEntry()).href, external: true }));
          },
        },
      ],
    });
  } catch (e) {
    const errors =
      (e as { errors?: { text: string; location?: { file: string; line: number; column: number } }[] }).errors ?? [];
    const msg = errors
      .map((er) =>
        er.location ? `${er.location.file}:${er.location.line}:${er.location.column}: ${er.text}` : er.text,
      )
      .join("\n");
    throw new DefinitionLoadError(file, `cannot be compiled:\n${msg || (e as Error).message}`, { cause: e });
  }
  const code = result.outputFiles[0]!.text;
  const outFile = path.join(cacheDir, `${entryHash}.mjs`);
  await writeFileAtomic(outFile, code);
  const inputs: CacheManifest["inputs"] = [];
  for (const p of Object.keys(result.metafile.inputs)) {
    const ip = path.resolve(p);
    inputs.push({ path: ip, sha256: (await hashFile(ip)) ?? "" });
  }
  await writeFileAtomic(manifestFile, JSON.stringify({ inputs, output: outFile } satisfies CacheManifest));
  return outFile;
}

/**
 * Imports a definition file and returns its Image: the default export, or a named export `image`. Relative
 * local paths in the definition resolve against the definition file's directory.
 */
export async function loadDefinition(file: string, cacheDir: string, exportName?: string): Promise<Image> {
  const { Image } = await import("../sdk/image.js");
  const modulePath = await compileDefinition(file, cacheDir);
  const prev = process.cwd();
  let mod: Record<string, unknown>;
  process.chdir(path.dirname(path.resolve(file)));
  try {
    mod = (await import(pathToFileURL(modulePath).href)) as Record<string, unknown>;
  } catch (e) {
    if (e instanceof StrataError) throw e;
    throw new DefinitionLoadError(file, `threw while loading: ${e instanceof Error ? e.message : String(e)}`, {
      cause: e,
    });
  } finally {
    process.chdir(prev);
  }
  if (exportName !== undefined) {
    const named = mod[exportName];
    if (!(named instanceof Image)) {
      const images = Object.keys(mod).filter((k) => mod[k] instanceof Image);
      throw new DefinitionLoadError(
        file,
        `has no exported Image named "${exportName}" (exported images: ${images.join(", ") || "none"})`,
      );
    }
    return named;
  }
  const candidate = mod.default ?? mod.image;
  if (!(candidate instanceof Image)) {
    throw new DefinitionLoadError(
      file,
      "does not export an Image: `export default Image.debianSlim()…` (or `export const image = …`, chosen with --export image)",
    );
  }
  return candidate;
}
