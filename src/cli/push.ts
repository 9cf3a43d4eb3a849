/**
 * `strata push <image> <ref> [--format oci|docker] [--estargz]`: uploads a built image to a registry and prints
 * `<registry>/<repository>@<manifest digest>` on stdout; progress goes to stderr.
 *
 * Credentials: `REGISTRY_USERNAME` + `REGISTRY_PASSWORD` from the environment when set, else Docker's config.json
 * (`$DOCKER_CONFIG/config.json` or `~/.docker/config.json`), else anonymous.
 */
import { parseArgs } from "node:util";

const USAGE = "usage: strata push <image> <ref> [--format oci|docker] [--estargz]";

function usage(message: string): number {
  process.stderr.write(`strata push: ${message}\n${USAGE}\n`);
  return 2;
}

export async function cmdPush(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: {
      format: { type: "string" },
      estargz: { type: "boolean" },
      quiet: { type: "boolean", short: "q" },
    },
  });
  if (positionals.length !== 2) return usage("push needs an image id and a target reference (host[:port]/repo[:tag])");
  const format = values.format ?? "oci";
  if (format !== "oci" && format !== "docker") return usage(`--format is oci or docker, not "${format}"`);
  const [imageRef, target] = positionals as [string, string];

  const { LocalStore } = await import("../store/local.js");
  const store = await LocalStore.open();
  const image = await store.resolveImage(imageRef);

  const secret: Record<string, string> = {};
  for (const name of ["REGISTRY_USERNAME", "REGISTRY_PASSWORD"]) {
    const v = process.env[name];
    if (v !== undefined && v !== "") secret[name] = v;
  }

  const { pushImage } = await import("../registry/push.js");
  const started = Date.now();
  const result = await pushImage(store, image, target, {
    format,
    estargz: values.estargz === true,
    ...(Object.keys(secret).length ? { secret } : {}),
    onProgress: values.quiet ? undefined : (line) => process.stderr.write(`${line}\n`),
  });
  if (!values.quiet) {
    const counts = { uploaded: 0, mounted: 0, existing: 0 };
    for (const b of result.blobs) counts[b.how]++;
    process.stderr.write(
      `pushed ${result.reference} (${format === "oci" ? "OCI" : "Docker v2 schema 2"}): ${counts.uploaded} uploaded, ${counts.mounted} mounted, ${counts.existing} already there, in ${((Date.now() - started) / 1000).toFixed(1)} s\n`,
    );
  }
  process.stdout.write(`${result.reference.registry}/${result.reference.repository}@${result.manifestDigest}\n`);
  return 0;
}
