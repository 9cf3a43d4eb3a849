/**
 * `strata inspect <image>` (config, layers and the chain of steps with keys, as JSON) and `strata logs <image>` (the
 * stored build log of every step of the image's chain, secrets redacted as they were when stored). Both read the image
 * where it is: the local store, or the build service with STRATA_SERVER set (image-source.ts).
 */
import { parseArgs } from "node:util";
import { CommandUsageError } from "../errors.js";
import type { ImageRecord } from "../store/store.js";
import { type ImageReader, withImage } from "./image-source.js";

/** The image and its stored ancestors, base first. */
async function chainOf(reader: ImageReader, image: ImageRecord): Promise<ImageRecord[]> {
  const chain: ImageRecord[] = [];
  const seen = new Set<string>();
  for (let cur: ImageRecord | undefined = image; cur && !seen.has(cur.id); ) {
    seen.add(cur.id);
    chain.unshift(cur);
    cur = cur.parent ? await reader.getImage(cur.parent) : undefined;
  }
  return chain;
}

export async function cmdInspect(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length !== 1) throw new CommandUsageError("inspect needs one image (a name or an id)");
  return withImage(positionals[0]!, async (reader, image) => {
    const config = JSON.parse((await reader.readBlob(image.configDigest)).toString()) as unknown;
    const chain = (await chainOf(reader, image)).map((cur) => ({
      imageId: cur.id,
      step: cur.step?.index,
      description: cur.step?.description,
      key: cur.step?.key,
      forced: cur.step?.forced,
      builtAt: cur.step?.builtAt,
    }));
    process.stdout.write(
      JSON.stringify(
        { id: image.id, manifestDigest: image.manifestDigest, config, layers: image.layers, chain },
        null,
        2,
      ) + "\n",
    );
    return 0;
  });
}

/** The text `strata logs` prints for a chain (pure): a header per step, then its log lines, indented. */
export function formatLogs(steps: readonly { image: ImageRecord; log: string | undefined }[]): string {
  let out = "";
  for (const { image, log } of steps) {
    const step = image.step;
    out += step
      ? `=> Step ${step.index}: ${step.description}  (${image.id.slice(7, 19)}, built ${step.builtAt})\n`
      : `=> ${image.id.slice(7, 19)} (no step record)\n`;
    if (log === undefined) out += "    (no log stored)\n";
    else if (log === "") out += "    (no output)\n";
    else for (const line of log.split("\n")) out += `    ${line}\n`;
  }
  return out;
}

export async function cmdLogs(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { json: { type: "boolean" } },
  });
  if (positionals.length !== 1) throw new CommandUsageError("logs needs one image (a name or an id)");
  return withImage(positionals[0]!, async (reader, image) => {
    const steps = [];
    for (const cur of await chainOf(reader, image)) steps.push({ image: cur, log: await reader.getLog(cur.id) });
    if (values.json) {
      const out = steps.map(({ image: i, log }) => ({
        imageId: i.id,
        step: i.step?.index ?? null,
        description: i.step?.description ?? null,
        builtAt: i.step?.builtAt ?? null,
        log: log ?? null,
      }));
      process.stdout.write(JSON.stringify(out) + "\n");
    } else process.stdout.write(formatLogs(steps));
    return 0;
  });
}
