/**
 * `strata images [--all] [--json]`, `strata tag <image> NAME[:TAG]` and `strata rmi [-f] NAME[:TAG]|id…`: image names
 * and listing, as Docker users know them. Names live where builds happen: in the local store, or — with STRATA_SERVER
 * set — on the build service, in the caller's tenant (there `--all` lists the step images the names stand on). `rmi` only removes names; an image nothing names any more goes
 * with the next `strata cache prune` like any other.
 */
import { parseArgs } from "node:util";
import { CommandUsageError, NotFoundError, StrataError } from "../errors.js";
import type { ImageRecord, NamedStore, NameRecord } from "../store/store.js";
import type { Digest } from "../util/digest.js";
import { parseImageName } from "../util/image-name.js";
import type { ServiceImages } from "../service/image-client.js";
import { openStore, serviceImagesFromEnv } from "./image-source.js";

/** One row of `strata images`. */
export interface ImageRow {
  /** `repository`, or undefined for an unnamed image (`<none>`). */
  name?: string;
  tag?: string;
  id: string;
  /** When the image was built (its last step), if known. */
  createdAt?: string;
  /** Compressed bytes of its layers. */
  size: number;
  layers?: number;
  step?: string;
}

/** `1.23kB`, `45.6MB`: Docker's decimal sizes with three significant digits (pure). */
export function humanSize(bytes: number): string {
  const units = ["B", "kB", "MB", "GB", "TB", "PB"];
  let v = bytes;
  let i = 0;
  while (v >= 1000 && i < units.length - 1) {
    v /= 1000;
    i++;
  }
  return `${i === 0 ? v : Number(v.toPrecision(3))}${units[i]}`;
}

/** `3 minutes ago`, as Docker words ages (pure). */
export function ago(iso: string | undefined, now = Date.now()): string {
  const t = iso ? Date.parse(iso) : NaN;
  if (!Number.isFinite(t)) return "";
  const s = Math.max(0, (now - t) / 1000);
  const steps: [number, string][] = [
    [60, "second"],
    [60, "minute"],
    [24, "hour"],
    [7, "day"],
    [4.35, "week"],
    [12, "month"],
    [Number.POSITIVE_INFINITY, "year"],
  ];
  if (s < 1) return "Less than a second ago";
  let v = s;
  for (const [n, unit] of steps) {
    if (v < n) {
      const k = Math.floor(v);
      return `${k} ${unit}${k === 1 ? "" : "s"} ago`;
    }
    v /= n;
  }
  return "";
}

/** The table `strata images` prints (pure): NAME, TAG, IMAGE ID, CREATED, SIZE (and STEP with `--all`). */
export function formatImages(rows: readonly ImageRow[], withStep: boolean, now = Date.now()): string {
  const table = [["NAME", "TAG", "IMAGE ID", "CREATED", "SIZE", ...(withStep ? ["STEP"] : [])]];
  for (const r of rows)
    table.push([
      r.name ?? "<none>",
      r.tag ?? "<none>",
      r.id.replace(/^sha256:/, "").slice(0, 12),
      ago(r.createdAt, now),
      humanSize(r.size),
      ...(withStep ? [r.step ?? ""] : []),
    ]);
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
  return table
    .map(
      (row) =>
        row
          .map((cell, c) => (c === row.length - 1 ? cell : cell.padEnd(widths[c]! + 3)))
          .join("")
          .trimEnd() + "\n",
    )
    .join("");
}

function rowOf(image: ImageRecord | undefined, id: string, name?: NameRecord): ImageRow {
  const parsed = name ? parseImageName(name.name) : undefined;
  return {
    ...(parsed ? { name: parsed.repository, tag: parsed.tag } : {}),
    id,
    ...(image?.step?.builtAt ? { createdAt: image.step.builtAt } : {}),
    size: image ? image.layers.reduce((n, l) => n + l.size, 0) : 0,
    ...(image ? { layers: image.layers.length } : {}),
    ...(image?.step?.description ? { step: image.step.description } : {}),
  };
}

/** Newest first; names of one image by name. */
function sortRows(rows: ImageRow[]): ImageRow[] {
  return rows.sort(
    (a, b) =>
      (b.createdAt ?? "").localeCompare(a.createdAt ?? "") ||
      `${a.name ?? "~"}:${a.tag ?? ""}`.localeCompare(`${b.name ?? "~"}:${b.tag ?? ""}`),
  );
}

/** The store's own names (a service's store also holds its tenants', as `scope:<scope>:<name>`). */
async function ownNames(store: NamedStore): Promise<NameRecord[]> {
  return (await store.listNames()).filter((n) => !n.name.startsWith("scope:"));
}

async function localRows(store: NamedStore, all: boolean): Promise<ImageRow[]> {
  const names = await ownNames(store);
  if (!all) {
    const rows: ImageRow[] = [];
    for (const n of names) rows.push(rowOf(await store.getImage(n.imageId), n.imageId, n));
    return rows;
  }
  const byImage = new Map<string, NameRecord[]>();
  for (const n of names) byImage.set(n.imageId, [...(byImage.get(n.imageId) ?? []), n]);
  return (await store.listImages()).flatMap((image) => {
    const own = byImage.get(image.id);
    return own ? own.map((n) => rowOf(image, image.id, n)) : [rowOf(image, image.id)];
  });
}

/**
 * The tenant's names on the service; with `all`, also every step image they stand on (their chains: the service keeps
 * every tenant's images, so "all" is what the caller's names reach), unnamed ones as `<none>`.
 */
async function serviceRows(service: ServiceImages, all: boolean): Promise<ImageRow[]> {
  const names = await service.names();
  const rows: ImageRow[] = [];
  const seen = new Set<string>();
  for (const n of names) {
    const { repository, tag } = parseImageName(n.name);
    const image = all ? await service.getImage(n.imageId as Digest) : undefined;
    rows.push(
      image
        ? rowOf(image, image.id, { name: n.name, imageId: image.id, createdAt: n.taggedAt })
        : { name: repository, tag, id: n.imageId, ...(n.createdAt ? { createdAt: n.createdAt } : {}), size: n.size },
    );
    seen.add(n.imageId);
  }
  if (!all) return rows;
  for (const n of names) {
    let cur = await service.getImage(n.imageId as Digest);
    while (cur?.parent && !seen.has(cur.parent)) {
      seen.add(cur.parent);
      cur = await service.getImage(cur.parent);
      if (cur) rows.push(rowOf(cur, cur.id));
    }
  }
  return rows;
}

export async function cmdImages(argv: string[]): Promise<number> {
  const { values } = parseArgs({
    args: argv,
    options: { json: { type: "boolean" }, all: { type: "boolean", short: "a" } },
  });
  const all = values.all === true;
  const service = await serviceImagesFromEnv();
  let rows: ImageRow[];
  if (service) {
    try {
      rows = await serviceRows(service, all);
    } finally {
      service.close();
    }
  } else rows = await localRows(await openStore(), all);
  sortRows(rows);
  if (values.json) {
    const out = rows.map((r) => ({
      name: r.name ?? null,
      tag: r.tag ?? null,
      id: r.id,
      createdAt: r.createdAt ?? null,
      // `builtAt`: the name the listing had before names existed.
      builtAt: r.createdAt ?? null,
      size: r.size,
      ...(r.layers !== undefined ? { layers: r.layers } : {}),
      ...(r.step !== undefined ? { step: r.step } : {}),
    }));
    process.stdout.write(JSON.stringify(out) + "\n");
  } else process.stdout.write(formatImages(rows, all));
  return 0;
}

export async function cmdTag(argv: string[]): Promise<number> {
  const { positionals } = parseArgs({ args: argv, allowPositionals: true, options: {} });
  if (positionals.length !== 2) throw new CommandUsageError("usage: strata tag <image> NAME[:TAG]");
  const [source, target] = positionals as [string, string];
  const name = parseImageName(target).full;
  const service = await serviceImagesFromEnv();
  if (service) {
    try {
      const { imageId } = await service.resolve(source);
      await service.tag(name, imageId as Digest);
      process.stderr.write(`tagged ${imageId.slice(7, 19)} as ${name} on the build server\n`);
    } finally {
      service.close();
    }
    return 0;
  }
  const store = await openStore();
  const image = await store.resolveImage(source);
  await store.putName({ name, imageId: image.id, createdAt: new Date().toISOString() });
  process.stderr.write(`tagged ${image.id.slice(7, 19)} as ${name}\n`);
  return 0;
}

/** Where `rmi` removes names: the local store or the service, behind one small interface. */
interface NameTable {
  get(name: string): Promise<{ name: string; imageId: string } | undefined>;
  list(): Promise<{ name: string; imageId: string }[]>;
  remove(name: string): Promise<void>;
  resolveId(ref: string): Promise<string>;
}

export async function cmdRmi(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { force: { type: "boolean", short: "f" } },
  });
  if (positionals.length === 0) throw new CommandUsageError("usage: strata rmi [-f] NAME[:TAG]|<image id>…");
  const service = await serviceImagesFromEnv();
  const store = service ? undefined : await openStore();
  const table: NameTable = service
    ? {
        get: async (n) => (await service.names()).find((r) => r.name === n),
        list: () => service.names(),
        remove: async (n) => void (await service.untag(n)),
        resolveId: async (ref) => (await service.resolve(ref)).imageId,
      }
    : {
        get: (n) => store!.getName(n),
        list: () => ownNames(store!),
        remove: async (n) => void (await store!.deleteName(n)),
        resolveId: async (ref) => (await store!.resolveImage(ref)).id,
      };
  let failed = 0;
  try {
    for (const ref of positionals) {
      try {
        for (const name of await namesToRemove(table, ref, values.force === true)) {
          await table.remove(name);
          process.stdout.write(`Untagged: ${name}\n`);
        }
      } catch (e) {
        if (!(e instanceof StrataError)) throw e;
        process.stderr.write(`strata rmi: error: ${e.message}\n`);
        failed++;
      }
    }
  } finally {
    service?.close();
  }
  return failed ? 1 : 0;
}

/** The names `rmi <ref>` removes: the name itself, or every name of the image an id names (more than one needs -f). */
async function namesToRemove(table: NameTable, ref: string, force: boolean): Promise<string[]> {
  let asName: string | undefined;
  try {
    asName = ref.startsWith("sha256:") ? undefined : parseImageName(ref).full;
  } catch {
    asName = undefined;
  }
  if (asName && (await table.get(asName))) return [asName];
  const id = await table.resolveId(ref).catch((e: unknown) => {
    if (e instanceof NotFoundError && asName) throw new NotFoundError(`no image is named ${asName}`);
    throw e;
  });
  const names = (await table.list()).filter((n) => n.imageId === id).map((n) => n.name);
  if (names.length === 0)
    throw new NotFoundError(
      `image ${id.slice(7, 19)} has no names to remove; unnamed images go with \`strata cache prune --older-than <age>\``,
    );
  if (names.length > 1 && !force)
    throw new CommandUsageError(
      `image ${id.slice(7, 19)} has ${names.length} names (${names.sort().join(", ")}): remove them one by one, or all with -f`,
    );
  return names;
}
